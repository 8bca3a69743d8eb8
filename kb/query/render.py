"""Hits and reports -> text for a person or JSON for a program."""

from __future__ import annotations

import json
import shutil
import textwrap
from itertools import groupby
from typing import TYPE_CHECKING, Sequence

import click

from .hits import Hit

if TYPE_CHECKING:  # a type only: `kb ask --server` renders hits without loading the index code
    from ..ingest.pipeline import IndexReport


def hits_payload(question: str, hits: Sequence[Hit]) -> dict:
    """The answer to one question as a JSON-ready object: the stable contract scripts
    depend on, shared by `kb ask --json`, the HTTP API and the MCP server."""
    return {"question": question, "results": [h.to_dict() for h in hits]}


def hits_json(question: str, hits: Sequence[Hit]) -> str:
    """One line of JSON (`kb ask --json`, and the body of `GET /ask`)."""
    return json.dumps(hits_payload(question, hits), ensure_ascii=False)


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
        out.extend(_passage_lines(h, width, color))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


_MARK_ON, _MARK_OFF = "\ue000", "\ue001"  # private-use characters: never in real text


def _passage_lines(h: Hit, width: int, color: bool) -> list[str]:
    """The passage wrapped; on a terminal, its best-answering sentence in bold yellow."""
    text = h.text
    if color and h.sentence_start is not None and h.sentence_end is not None:
        a, b = h.sentence_start - h.char_start, h.sentence_end - h.char_start
        text = text[:a] + _MARK_ON + text[a:b] + _MARK_OFF + text[b:]
    lines, inside = [], False
    for para in text.split("\n"):
        if not para.strip().strip(_MARK_ON + _MARK_OFF):
            inside = (inside or _MARK_ON in para) and _MARK_OFF not in para
            continue
        for line in textwrap.wrap(para, width=width, initial_indent="   ", subsequent_indent="   "):
            # Style each wrapped line on its own, so a highlight never bleeds past a line.
            pieces, styled = [], inside
            for ch in line:
                if ch in (_MARK_ON, _MARK_OFF):
                    styled = ch == _MARK_ON
                    continue
                pieces.append((ch, styled))
            inside = styled
            runs = groupby(pieces, key=lambda piece: piece[1])
            lines.append("".join(click.style(t, fg="yellow", bold=True) if on else t
                                 for on, t in ((on, "".join(c for c, _ in run)) for on, run in runs)))
    return lines


def eval_text(result: dict) -> str:
    """`kb eval` as a table: one column per mode."""
    modes = list(result["modes"])
    metrics = list(dict.fromkeys(m for row in result["modes"].values() for m in row))
    head = f"{result['dataset']} ({result['split']}, {result['queries']} queries, index {result['index']})"
    vectors = result.get("vector_index") or {}
    if vectors.get("kind") == "ivf":
        head += f"; vectors: IVF, nlist {vectors['nlist']}, nprobe {vectors['nprobe']}"
    elif vectors:
        head += "; vectors: exact"
    width = max(12, *(len(m) + 2 for m in modes))
    rows = [head, f"{'':<20}" + "".join(f"{m:>{width}}" for m in modes)]
    for metric in metrics:
        cells = [result["modes"][m].get(metric) for m in modes]
        rows.append(f"{metric:<20}" + "".join(f"{'' if v is None else v:>{width}}" for v in cells))
    return "\n".join(rows)


def report_text(report: IndexReport, index_dir: str) -> str:
    parts = [f"{report.documents} files, {report.passages} passages in {index_dir} ({report.seconds:.1f}s)"]
    changes = [f"{n} {what}" for n, what in (
        (len(report.added), "added"), (len(report.changed), "changed"),
        (len(report.removed), "removed"), (report.unchanged, "unchanged"),
    )]  # all four, zeros too: a script or a person can rely on the wording
    if report.rebuilt:
        changes.insert(0, "rebuilt")
    if changes:
        parts.append(": " + ", ".join(changes))
    if report.ignored:
        parts.append(f"; {report.ignored} files of other types ignored")
    if report.excluded:
        parts.append(f"; {report.excluded} excluded by ignore files")
    if report.skipped:
        parts.append(f"; {len(report.skipped)} skipped")
    if report.passages_embedded or report.passages_reused:
        parts.append(f"; {report.passages_embedded} passages embedded, {report.passages_reused} reused")
    if report.repaired:  # kb.store.checksums: damaged derived files, written again from SQLite
        parts.append(f"; repaired {len(report.repaired)} damaged index files from the database "
                     f"({'; '.join(report.repaired[:3])}{'; ...' if len(report.repaired) > 3 else ''})")
    return "".join(parts)


def install_hints(skipped) -> list[str]:
    """One line per file type and install command among the skip reasons:
    "12 .pptx files skipped: pip install 'kb[office]'"."""
    import os
    import re
    from collections import Counter

    counts: Counter = Counter()
    for s in skipped:
        found = re.search(r"(pip install .+|apt-get install .+)$", s.reason)
        if found:
            file = s.file or s.source
            suffix = os.path.splitext(file)[1].lower() or "other"
            what = "page" if s.source != file else "file"  # a part: a scanned page of a PDF
            counts[(suffix, what, found.group(1).rstrip(")"))] += 1
    return [f"{n} {suffix} {what}{'s' if n != 1 else ''} skipped: {command}"
            for (suffix, what, command), n in sorted(counts.items())]


def info_text(info: dict) -> str:
    chunking = info.get("chunking") or {}
    vectors = info.get("vector_index") or {}
    kind = vectors.get("kind", "")
    if kind == "ivf":
        lists = "8-bit lists, re-scored exactly" if vectors.get("codec") == "sq8" else "float32 lists"
        kind = f"IVF, {lists} (nlist {vectors['nlist']}, nprobe {vectors['nprobe']})"
    elif kind == "flat":
        kind = "exact (flat)"
    if vectors:
        kind += f"; {vectors['base_vectors']:,} in {vectors['file']}"
        if vectors.get("delta_vectors") or vectors.get("removed_vectors"):
            kind += f", {vectors['delta_vectors']:,} added and {vectors['removed_vectors']:,} removed since"
    cache = info.get("vector_cache") or {}
    rows = [
        ("index", info["index"]),
        ("documents", info["documents"]),
        ("passages", info["passages"]),
        ("model", info.get("model")),
        ("weights sha256", (info.get("weights_sha256") or "")[:16]),
        ("dimension", info.get("dimension")),
        ("chunking", ", ".join(f"{k}={v}" for k, v in chunking.items())),
        ("vector index", kind),
        ("lexical index", f"tantivy BM25 in {lexical}" if (lexical := (info.get("lexical_index") or {}).get("folder"))
         else ""),
        ("stored vectors", f"{cache.get('vectors', 0):,} ({cache.get('unused', 0):,} not used by any passage)"),
        ("built", info.get("built_at")),
        ("generation", info.get("generation")),
        ("size on disk", _human_size(info["size_bytes"])),
    ]
    skipped = info.get("skipped") or {}
    rows.append(("skipped", ", ".join(f"{n} {category}" for category, n in skipped.items())
                 + ("  (kb info --skipped lists them)" if skipped else "")))
    if info.get("staged_documents"):
        rows.append(("unfinished run", f"{info['staged_documents']} documents staged; `kb index` picks them up"))
    rows.append(("watcher", _watcher_text(info.get("watcher"))))
    return "\n".join(f"{k:<15} {'-' if v in (None, '') else v}" for k, v in rows)


def _watcher_text(watcher: dict | None) -> str:
    if not watcher:
        return "none (`kb watch` keeps the index following its folders)"
    text = f"pid {watcher.get('pid')}, since {watcher.get('since')}"
    last = watcher.get("last_update")
    if last:
        text += f"; last update {last.get('at')} ({last.get('summary', '')})"
    return text


def _human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
