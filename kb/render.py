"""Hits and reports -> text for a person or JSON for a program."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Sequence

import click

from .hits import Hit
from .knowledge_base import IndexReport


def hits_json(question: str, hits: Sequence[Hit]) -> str:
    """One line of JSON: the stable contract scripts depend on."""
    return json.dumps({"question": question, "results": [h.to_dict() for h in hits]}, ensure_ascii=False)


def hits_text(question: str, hits: Sequence[Hit], *, color: bool, show_question: bool = False) -> str:
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    out = []
    if show_question:
        out.append(click.style(f"? {question}", bold=True) if color else f"? {question}")
    if not hits:
        out.append("no results")
    for h in hits:
        head = f"{h.rank}. [{h.score:.3f}] {h.citation}"
        if h.stale:
            head += "  (file changed since indexing)"
        out.append(click.style(head, fg="cyan", bold=True) if color else head)
        if h.context:
            out.append(click.style(f"   {h.context}", dim=True) if color else f"   {h.context}")
        for para in h.text.split("\n"):
            if para.strip():
                out.append(textwrap.fill(para, width=width, initial_indent="   ", subsequent_indent="   "))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def report_text(report: IndexReport, index_dir: str) -> str:
    parts = [f"{report.documents} files, {report.passages} passages in {index_dir} ({report.seconds:.1f}s)"]
    changes = [f"{n} {what}" for n, what in (
        (len(report.added), "added"), (len(report.changed), "changed"),
        (len(report.removed), "removed"), (report.unchanged, "unchanged"),
    ) if n]
    if report.rebuilt:
        changes.insert(0, "rebuilt")
    if changes:
        parts.append(": " + ", ".join(changes))
    if report.ignored:
        parts.append(f"; {report.ignored} files of other types ignored")
    if report.skipped:
        parts.append(f"; {len(report.skipped)} skipped")
    return "".join(parts)


def info_text(info: dict) -> str:
    chunking = info.get("chunking") or {}
    rows = [
        ("index", info["index"]),
        ("documents", info["documents"]),
        ("passages", info["passages"]),
        ("model", info.get("model")),
        ("weights sha256", (info.get("weights_sha256") or "")[:16]),
        ("dimension", info.get("dimension")),
        ("chunking", ", ".join(f"{k}={v}" for k, v in chunking.items())),
        ("built", info.get("built_at")),
        ("size on disk", _human_size(info["size_bytes"])),
    ]
    return "\n".join(f"{k:<15} {v}" for k, v in rows)


def _human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
