"""Incremental indexing benchmark: full build of 1,000 real files vs re-index after 1 change.

    .venv/bin/python bench/incremental.py [SCALE_DOCS] [--files 1000] [--max-bytes 4096]

SCALE_DOCS defaults to ../shared/data/scale-docs (relative to the repo root). The
smallest --files documents of its MANIFEST.tsv (for 1,000: 709 .txt, 248 .html and
43 .md files, 15 MB) are copied into a temp folder, each .txt/.md cut at its last
line break before --max-bytes (0: whole files; HTML is copied whole, as a cut page
may keep only its <head>), so the full build takes minutes, not the quarter hour
that 20,000 passages take on 2 busy cores; the PDFs and the biggest HTML pages are
left out for the same reason. Every run is the real `kb index`
command in a subprocess, so each pays the same model load a user pays.
Target: the 1-file re-index costs at most 5% of the full build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", default=str(ROOT / ".." / "shared" / "data" / "scale-docs"))
    parser.add_argument("--files", type=int, default=1000, help="how many of the smallest files to copy")
    parser.add_argument("--max-bytes", type=int, default=4096, help="cut each copy to about this size (0: whole)")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    manifest = source / "MANIFEST.tsv"
    if not manifest.is_file():
        sys.exit(f"bench: no MANIFEST.tsv in {source}")

    with tempfile.TemporaryDirectory(prefix="kb-bench-incremental-") as work:
        corpus, index = Path(work) / "corpus", Path(work) / "index"
        copied = copy_smallest(source, manifest, corpus, args.files, args.max_bytes)
        print(f"corpus: {len(copied)} smallest files of {source}, text cut to {args.max_bytes or 'any'} bytes: "
              f"{sum(p.stat().st_size for p in copied) / 1e6:.1f} MB, copied to {corpus}")

        full_s, full = run_index(corpus, index)
        print(f"full build:        {full_s:7.1f} s  {full['documents']} files, {full['passages']} passages "
              f"({full['passages_embedded']} embedded, {len(full['skipped'])} skipped)")

        same_s, same = run_index(corpus, index)
        print(f"re-index, no change:{same_s:6.1f} s  {same['unchanged']} unchanged, "
              f"{same['passages_embedded']} embedded")

        changed = next(p for p in copied if p.suffix == ".txt" and p.stat().st_size > 1000)
        with open(changed, "a", encoding="utf-8") as f:
            f.write("\nA paragraph added by the incremental benchmark, so this file's hash changes.\n")
        one_s, one = run_index(corpus, index)
        if one["changed"] != [str(changed.relative_to(work))] or one["added"] or one["removed"]:
            sys.exit(f"bench: expected exactly {changed} changed, got {one}")
        print(f"re-index, 1 changed:{one_s:6.1f} s  {len(one['changed'])} changed, "
              f"{one['unchanged']} unchanged, {one['passages_embedded']} passages embedded")

        ratio = one_s / full_s
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"ratio 1-file / full: {ratio:.1%} ({verdict} the {TARGET:.0%} target)")
        print(machine())


def copy_smallest(source: Path, manifest: Path, corpus: Path, count: int, max_bytes: int) -> list[Path]:
    rows = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        size, _, rel = line.partition("\t")
        if size.isdigit():
            rows.append((int(size), rel.removeprefix("./")))
    copied = []
    for _, rel in sorted(rows)[:count]:
        target = corpus / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (source / rel).read_bytes()
        if max_bytes and len(data) > max_bytes and target.suffix in (".txt", ".md"):
            cut = data.rfind(b"\n", 0, max_bytes)
            data = data[: cut if cut > 0 else max_bytes]
        target.write_bytes(data)
        copied.append(target)
    return copied


def run_index(corpus: Path, index: Path) -> tuple[float, dict]:
    """Wall time of one `kb index --json` subprocess (exit 7, skipped files, is fine)."""
    kb = Path(sys.executable).with_name("kb")
    started = time.perf_counter()
    done = subprocess.run([str(kb), "index", "corpus", "--index", str(index), "--json"], cwd=corpus.parent,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 7):
        sys.exit(f"bench: kb index failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, json.loads(done.stdout)


def machine() -> str:
    versions = ", ".join(f"{name} {_version(name)}" for name in
                         ("kb", "onnxruntime", "torch", "sentence-transformers", "faiss-cpu", "selectolax", "pypdf"))
    import sqlite3

    return (f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {versions}")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
