"""kb at 10k, 35k, 175k and 1M passages: build, memory, disk, cold and warm questions, one-file re-index.

    .venv/bin/python bench/scale.py [--docs DIR] [--sizes 10000,35000,175000,1000000] [--work DIR]

Corpora are copies of real documentation (the .txt and .md files under --docs; every copy
after the first has a tag appended to each line, so no passage is a duplicate the vector
cache could share). Indexes are built with a stand-in embedder that hashes each text to a
unit vector: embedding cost is linear and measured by bench/index_throughput.py, and
answer quality on approximate search by bench/ann.py (real vectors) and bench/quality.py.
Everything else is the real thing: chunking, SQLite, tantivy, FAISS (IVF above
kb.store.vector_index.FLAT_MAX), and questions embedded by the real model through ONNX.

Per size it prints:
- build: whole-run seconds and peak RSS of the `kb index` process (stand-in embedder, so
  this is kb's own overhead), index size on disk, the vector index kind and parameters;
- cold: median seconds of a whole `kb ask --json` process, beside `python -c "import
  sentence_transformers"` in the same run (pairs interleaved);
- first pass: p50/p95 milliseconds of the 40 questions asked once, as a new process meets
  them (what the page cache lacks is read from disk);
- warm: p50/p95 milliseconds per question in the same process after that pass, per mode,
  with and without best-sentence highlighting;
- re-index: seconds of a `kb index` process after one file changed.

Work folders (corpora and indexes; about 6 GB at 1M) are kept in --work, so a second run
re-uses them: an unchanged corpus re-indexes in seconds. The default --docs is
../shared/data/scale-docs: 1,240 documentation files (Python, git, Node.js, R and Debian
manuals, each under its own free licence); any folder of .txt/.md files works.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

QUESTIONS = [
    "how do I install a package with pip", "what is the default timeout for a socket connection",
    "how to create a new branch in git", "why does my merge fail with conflicts", "how do I read a file line by line",
    "what does the event loop do in node", "how to configure apt sources", "difference between a list and a tuple",
    "how can I undo the last commit", "how to plot a histogram in R", "how do I set environment variables",
    "what happens when a promise is rejected", "how to write a unit test", "how to format dates and times",
    "what is garbage collection", "how to parse command line arguments", "how do streams handle backpressure",
    "how to rebase onto another branch", "how to compress files with gzip", "what is a virtual environment",
    "how do I find which process uses a port", "what is the difference between fetch and pull",
    "how to read a CSV file into a data frame", "how are exceptions chained", "what does the GIL prevent",
    "how to sign a commit with gpg", "how to spawn a child process and read its output", "what is a closure",
    "how to mount a disk at boot", "how does reference counting free memory", "regular expression named groups",
    "how to stash uncommitted changes", "what does npm install --save-dev do", "how to fit a linear model in R",
    "how to list files in a directory recursively", "how to make an HTTP request", "what is a buffer in node",
    "how to set up a cron job", "how to compare two branches", "what is a generator expression",
]


# -- corpus ------------------------------------------------------------------------------
def source_files(docs: Path) -> list[Path]:
    return sorted(p for p in docs.rglob("*") if p.suffix in (".txt", ".md") and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(docs).parts))


def passage_counts(files: list[Path], cache: Path) -> dict[str, int]:
    """Passages per file, as kb chunks it (cached: chunking 17 MB takes a minute)."""
    path = cache / "passage-counts.json"
    if path.exists():
        return json.loads(path.read_text())
    from kb.ingest.documents import discover, read_document
    from kb.embed.model import TokenCounter, packaged_model
    from kb.ingest.passages import ChunkSettings, make_passages

    counter = TokenCounter(packaged_model().tokenizer_file)
    counts = {}
    for f in discover(files).files:
        try:
            counts[str(Path(f.abspath))] = len(make_passages(read_document(f), counter, ChunkSettings()))
        except (OSError, ValueError):
            counts[str(Path(f.abspath))] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(counts))
    return counts


def build_corpus(docs: Path, size: int, folder: Path, counts: dict[str, int]) -> int:
    """Copies of the files until about `size` passages; returns the expected passages."""
    files = [f for f in source_files(docs) if counts.get(str(f.resolve()), 0)]
    marker = folder / ".built"
    if marker.exists():
        return int(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    total, copy = 0, 0
    while total < size:
        for f in files:
            if total >= size:
                break
            dest = folder / f"copy-{copy:03d}" / f.relative_to(docs)
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = f.read_text(encoding="utf-8", errors="replace")
            if copy:
                text = "\n".join(f"{line} ~{copy}" if line.strip() else line for line in text.split("\n"))
            dest.write_text(text, encoding="utf-8")
            total += counts[str(f.resolve())]
        copy += 1
    marker.write_text(str(total))
    return total


# -- steps (each in its own process) -----------------------------------------------------
# Peak RSS from /proc (VmHWM belongs to this process's memory map, made fresh at exec):
# getrusage's ru_maxrss survives exec on Linux and would report the parent's peak.
BUILD = """
import json, sys, time
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from kb import KnowledgeBase
from kb.embed.embedding import HashEmbedder
from kb.embed.model import packaged_model
started = time.perf_counter()
report = KnowledgeBase(sys.argv[2], embedder=HashEmbedder(packaged_model())).index([sys.argv[1]])
print(json.dumps({"seconds": time.perf_counter() - started, "passages": report.passages,
                  "embedded": report.passages_embedded, "changed": len(report.changed) + len(report.added),
                  "peak_rss_mb": peak_rss_mb()}))
"""

WARM = """
import json, statistics, sys, time
from kb import KnowledgeBase
kb = KnowledgeBase(sys.argv[1])
questions = json.loads(sys.argv[2])


def p50_p95(repeats, **options):
    times = []
    for repeat in range(repeats):
        for q in questions:
            started = time.perf_counter()
            kb.ask(q, k=5, **options)
            times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return [round(statistics.median(times), 2), round(times[int(0.95 * len(times))], 2)]


kb.ask(questions[0], k=5)  # open the index and load the model: not what "warm" measures
# The first pass over the questions reads the lists, rows and pages they touch from disk
# when the page cache does not hold them (a cold machine; one that pages out idle memory):
# reported apart, then "warm" is every question asked again with all of that in memory.
out = {"first pass, hybrid": p50_p95(1)}
for mode in ("hybrid", "dense", "lexical"):
    for highlight in (True, False):
        out[f"{mode}{'' if highlight else ', no highlight'}"] = p50_p95(2, mode=mode, best_sentence=highlight)
print(json.dumps(out))
"""


def run_python(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench step failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{command[:3]} failed: {done.stderr[-500:]}")
    return time.perf_counter() - started


def cold(index: Path, runs: int) -> dict:
    kb = str(Path(sys.executable).parent / "kb")
    ask = [kb, "ask", QUESTIONS[0], "--json", "--index", str(index)]
    st = [sys.executable, "-c", "import sentence_transformers"]
    timed(ask), timed(st)  # warm the page cache, as a user's second question would find it
    pairs = [(timed(ask), timed(st)) for _ in range(runs)]
    ask_s = statistics.median(a for a, _ in pairs)
    st_s = statistics.median(b for _, b in pairs)
    return {"kb ask": round(ask_s, 3), "import sentence_transformers": round(st_s, 3),
            "ratio": round(statistics.median(a / b for a, b in pairs), 3)}


def reindex_one_file(corpus: Path, index: Path) -> dict:
    """Append a paragraph to one file (a fresh inode), then time a whole `kb index` process."""
    victim = sorted((corpus / "copy-000").rglob("*.txt"))[0]
    text = victim.read_text(encoding="utf-8")
    tmp = victim.with_suffix(".tmp~")
    tmp.write_text(text + f"\n\nA paragraph added at {time.time()} to time a one-file re-index.\n", encoding="utf-8")
    os.replace(tmp, victim)
    started = time.perf_counter()
    result = run_python(BUILD, str(corpus), str(index))
    result["process_seconds"] = time.perf_counter() - started
    return result


def disk_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--sizes", default="10000,35000,175000,1000000")
    parser.add_argument("--work", default=None, help="where corpora and indexes are kept (default: kb's cache)")
    parser.add_argument("--cold-runs", type=int, default=7)
    args = parser.parse_args()
    from kb.embed.embedding import load_embedder
    from kb.embed.model import cache_dir, packaged_model

    load_embedder(packaged_model())  # the ONNX export every `kb ask` below uses
    print(machine.line())
    print(machine.byte_compile_kb())
    work = Path(args.work) if args.work else cache_dir() / "bench" / "scale"
    docs = Path(args.docs)
    counts = passage_counts(source_files(docs), work)
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        corpus, index = work / f"corpus-{size}", work / f"index-{size}"
        expected = build_corpus(docs, size, corpus, counts)
        build = run_python(BUILD, str(corpus), str(index))
        info = json.loads(subprocess.run([str(Path(sys.executable).parent / "kb"), "info", "--json", "--index",
                                          str(index)], capture_output=True, text=True).stdout)
        row = {"passages": info["passages"], "expected": expected, "build": build,
               "disk_mb": round(disk_size(index) / 2**20, 1), "vector_index": info["vector_index"],
               "cold": cold(index, args.cold_runs),
               "warm_ms_p50_p95": run_python(WARM, str(index), json.dumps(QUESTIONS)),
               "reindex_one_file": reindex_one_file(corpus, index)}
        results[size] = row
        print(json.dumps({size: row}), flush=True)
    print()
    print(table(results))


def table(results: dict) -> str:
    sizes = list(results)
    lines = ["| | " + " | ".join(f"{results[s]['passages']:,} passages" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]

    def row(name, cell):
        lines.append(f"| {name} | " + " | ".join(cell(results[s]) for s in sizes) + " |")

    row("vector index", lambda r: f"{r['vector_index']['kind']}" + (
        f" (nlist {r['vector_index']['nlist']}, nprobe {r['vector_index']['nprobe']})"
        if r["vector_index"]["kind"] == "ivf" else ""))
    row("build (stand-in embedder), s", lambda r: f"{r['build']['seconds']:.0f}")
    row("peak RSS of the build, MB", lambda r: f"{r['build']['peak_rss_mb']:.0f}")
    row("index on disk, MB", lambda r: f"{r['disk_mb']:.0f}")
    row("cold `kb ask`, s", lambda r: f"{r['cold']['kb ask']:.2f}")
    row("`import sentence_transformers`, s", lambda r: f"{r['cold']['import sentence_transformers']:.2f}")
    for mode in next(iter(results.values()))["warm_ms_p50_p95"]:
        label = mode if mode.startswith("first") else f"warm {mode}"
        row(f"{label}, ms p50 / p95", lambda r, m=mode: "{:.1f} / {:.1f}".format(*r["warm_ms_p50_p95"][m]))
    row("re-index after one changed file, s", lambda r: f"{r['reindex_one_file']['process_seconds']:.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
