"""Indexing throughput: `kb index` and kb's embedder against plain SentenceTransformer.encode.

Two corpora, both cut from the .txt/.md files of DATA (taken round-robin across its
folders):
  short  the files themselves, up to --bytes: kb's passages of real documentation,
         many of them short (small files, short sections)
  full   --full-count files of one full-size passage each (>= 180 word pieces, the
         longest passages kb cuts: at most 200), taken from the same documents
For each corpus, times in one run, round-robin over --repeats:
  kb index CORPUS                       whole process: imports, reading, chunking,
                                        embedding, SQLite, FAISS (the ONNX backend)
  KB_EMBEDDER=torch kb index CORPUS     the same CLI on sentence-transformers
  kb's embedder, embed(passages)        the very passages kb embeds, the call alone
                                        (model loaded, one warm-up batch)
  SentenceTransformer.encode(passages)  the same, batch 32, torch threads = cores,
                                        the call alone

    .venv/bin/python bench/index_throughput.py [DATA] [--bytes 300000] [--full-count 256] [--repeats 3]

Target from the issues: kb index >= 1.5x the passages/s of plain encode, on short and
full-size passages alike. Why the ratio moves from machine to machine, and which
settings kb chose, is measured by bench/embed_rate.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from query_latency import BIN, ROOT, machine_report, timed

PASSAGES = """
import os, sys
from kb.ingest.documents import discover, read_document
from kb.embed.model import TokenCounter, packaged_model
from kb.ingest.passages import ChunkSettings, make_passages
counter = TokenCounter(packaged_model().tokenizer_file)
texts = [p.embedding_text for f in discover([sys.argv[1]]).files
         for p in make_passages(read_document(f), counter, ChunkSettings())]
"""

ENCODE_SCRIPT = PASSAGES + """
import json, time
from kb.embed.model import offline_environment
offline_environment()
from sentence_transformers import SentenceTransformer
import torch
torch.set_num_threads(len(os.sched_getaffinity(0)))
st = SentenceTransformer(str(packaged_model().path), device="cpu")
st.encode(texts[:32], batch_size=32)  # warm-up
started, cpu = time.perf_counter(), time.process_time()
st.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
print(json.dumps({"passages": len(texts), "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))
"""

EMBED_SCRIPT = PASSAGES + """
import json, time
from kb.embed.embedding import load_embedder
embedder = load_embedder(packaged_model(), for_indexing=True)
embedder.embed(texts[:32])  # warm-up
started, cpu = time.perf_counter(), time.process_time()
embedder.embed(texts)
print(json.dumps({"passages": len(texts), "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))
"""


def take_slice(data: Path, dest: Path, max_bytes: int) -> tuple[int, int]:
    """Copy .txt/.md files, one folder after another in turn, until max_bytes; (files, bytes)."""
    folders: dict[Path, list[Path]] = {}
    for path in sorted(data.rglob("*")):
        if path.suffix.lower() in (".txt", ".md") and path.is_file() and not path.name.startswith("."):
            folders.setdefault(path.parent, []).append(path)
    queues = [iter(files) for files in folders.values()]
    files = total = 0
    while queues and total < max_bytes:
        for queue in list(queues):
            path = next(queue, None)
            if path is None:
                queues.remove(queue)
                continue
            target = dest / path.relative_to(data)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            files, total = files + 1, total + path.stat().st_size
            if total >= max_bytes:
                break
    return files, total


def timed_cpu(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + sys, all threads) of one whole process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, out = timed(command, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def full_size_corpus(data: Path, dest: Path, count: int, work: Path) -> int:
    """One .txt file per full-size passage of DATA's documents; returns how many."""
    from kb.ingest.documents import discover, read_document
    from kb.embed.model import TokenCounter, packaged_model
    from kb.ingest.passages import ChunkSettings, make_passages

    counter = TokenCounter(packaged_model().tokenizer_file)
    source = work / "full-source"
    take_slice(data, source, 8_000_000)
    texts = []
    for f in discover([source]).files:
        try:
            texts += [p.text for p in make_passages(read_document(f), counter, ChunkSettings())]
        except (OSError, ValueError):
            continue
    full = [t for t, n in zip(texts, counter.count(texts)) if n >= 180][:count]
    dest.mkdir(parents=True)
    for i, text in enumerate(full):
        (dest / f"passage-{i:05d}.txt").write_text(text, encoding="utf-8")
    shutil.rmtree(source)
    return len(full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--bytes", type=int, default=300_000, help="size of the slice of .txt/.md files")
    parser.add_argument("--full-count", type=int, default=256, help="full-size passages in the second corpus")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    parser.add_argument("--corpora", default="short,full")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"bench: no data folder at {data}")
    sys.path.insert(0, str(ROOT))

    kb = str(BIN / "kb")
    env = {k: v for k, v in os.environ.items() if k != "KB_EMBEDDER"}
    work = Path(tempfile.mkdtemp(prefix="kb-bench-index-"))
    runs: dict[tuple[str, str], list[tuple[int, float, float, float]]] = {}  # passages, wall, inside, cpu
    try:
        corpora = {}
        if "short" in args.corpora:
            corpora["short"] = work / "short"
            files, size = take_slice(data, corpora["short"], args.bytes)
            print(f"short: {files} files, {size / 1e6:.2f} MB from {data}")
        if "full" in args.corpora:
            corpora["full"] = work / "full"
            print(f"full: {full_size_corpus(data, corpora['full'], args.full_count, work)} files of one full-size passage")
        # Untimed: makes sure the ONNX export exists, as after any first `kb index`.
        tiny = work / "tiny"
        tiny.mkdir()
        (tiny / "a.txt").write_text("warm-up")
        seconds, _ = timed([kb, "index", str(tiny), "--index", str(work / "tiny-index")], env)
        print(f"first kb index (exports ONNX if missing) {seconds:.1f} s")
        print(machine_report())
        loads = [os.getloadavg()[0]]
        for repeat in range(args.repeats):
            for name, corpus in corpora.items():
                for backend in ("onnx", "torch"):
                    index_dir = work / f"index-{backend}-{repeat}"
                    wall, cpu, out = timed_cpu([kb, "index", str(corpus), "--index", str(index_dir), "--json"],
                                               {**env, "KB_EMBEDDER": backend})
                    report = json.loads(out)
                    runs.setdefault((name, backend), []).append((report["passages"], wall, report["seconds"], cpu))
                    shutil.rmtree(index_dir)
                for what, script in (("embed", EMBED_SCRIPT), ("encode", ENCODE_SCRIPT)):
                    wall, out = timed([sys.executable, "-c", script, str(corpus)], env)
                    result = json.loads(out)
                    runs.setdefault((name, what), []).append((result["passages"], wall, result["seconds"],
                                                              result["cpu"]))
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedian of {args.repeats} runs; load average {min(loads):.1f}-{max(loads):.1f} during the runs."
          "\nwall = passages per second; cpu = passages per CPU-second (all threads): what each costs,"
          "\nwhatever share of the cores the machine's other jobs left it")
    for name in corpora:
        rows = {what: runs[(name, what)] for what in ("onnx", "torch", "embed", "encode")}
        passages = rows["onnx"][0][0]
        if any(row[0] != passages for r in rows.values() for row in r):
            sys.exit(f"bench: runs embedded different numbers of passages: {rows}")
        rate = {what: passages / statistics.median(row[1] for row in r) for what, r in rows.items()}
        inner = {what: passages / statistics.median(row[2] for row in r) for what, r in rows.items()}
        cpu = {what: passages / statistics.median(row[3] for row in r) for what, r in rows.items()}
        paired = statistics.median((passages / a[1]) / (passages / b[2]) for a, b in zip(rows["onnx"], rows["encode"]))
        print(f"\n{name}: {passages} passages{'':22}wall    cpu")
        print(f"  kb index (onnx), whole process:       {rate['onnx']:6.1f} {cpu['onnx']:6.1f}   (inside index(): {inner['onnx']:.1f})")
        print(f"  kb index (KB_EMBEDDER=torch), process:{rate['torch']:6.1f} {cpu['torch']:6.1f}   (inside index(): {inner['torch']:.1f})")
        print(f"  kb's embedder, call only:             {inner['embed']:6.1f} {cpu['embed']:6.1f}   (its whole process: {rate['embed']:.1f})")
        print(f"  SentenceTransformer.encode, call only:{inner['encode']:6.1f} {cpu['encode']:6.1f}   (its whole process: {rate['encode']:.1f})")
        print(f"  kb index (whole process) / plain encode (call only): wall {rate['onnx'] / inner['encode']:.2f}x "
              f"(paired per round {paired:.2f}x), cpu {cpu['onnx'] / cpu['encode']:.2f}x (target >= 1.5x)")
        print(f"  kb's embedder / plain encode (calls only):           wall {inner['embed'] / inner['encode']:.2f}x, "
              f"cpu {cpu['embed'] / cpu['encode']:.2f}x")
        print(f"  kb index / kb index on torch (whole processes):      wall {rate['onnx'] / rate['torch']:.2f}x, "
              f"cpu {cpu['onnx'] / cpu['torch']:.2f}x")
    print(f"\nload average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
