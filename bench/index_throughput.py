"""Indexing throughput: `kb index` (ONNX) against plain SentenceTransformer.encode.

Copies a slice of the .txt/.md files of DATA (taken round-robin across its folders, up
to --bytes) to a temp folder, then times, in one run, round-robin over --repeats:
  kb index SLICE                        whole process: imports, reading, chunking,
                                        embedding, SQLite, FAISS (the ONNX backend)
  KB_EMBEDDER=torch kb index SLICE      the same CLI on sentence-transformers
  SentenceTransformer.encode(passages)  the very passages kb embeds, batch 32, timing
                                        the encode call alone (model already loaded)

    .venv/bin/python bench/index_throughput.py [DATA] [--bytes 300000] [--repeats 3]

Target from the issue: kb index >= 1.3x the passages/s of plain encode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from query_latency import BIN, ROOT, machine_report, timed

ENCODE_SCRIPT = """
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
from kb.documents import discover, read_document
from kb.model import TokenCounter, packaged_model
from kb.passages import ChunkSettings, make_passages
from sentence_transformers import SentenceTransformer
import torch
torch.set_num_threads(os.cpu_count())
model = packaged_model()
counter = TokenCounter(model.tokenizer_file)
texts = [p.embedding_text for f in discover([sys.argv[1]]).files
         for p in make_passages(read_document(f), counter, ChunkSettings())]
st = SentenceTransformer(str(model.path), device="cpu")
st.encode(texts[:32], batch_size=32)  # warm-up
started = time.perf_counter()
st.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
print(json.dumps({"passages": len(texts), "seconds": time.perf_counter() - started}))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--bytes", type=int, default=300_000, help="size of the slice of .txt/.md files")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"bench: no data folder at {data}")

    kb = str(BIN / "kb")
    env = {k: v for k, v in os.environ.items() if k != "KB_EMBEDDER"}
    work = Path(tempfile.mkdtemp(prefix="kb-bench-index-"))
    try:
        corpus = work / "slice"
        files, size = take_slice(data, corpus, args.bytes)
        # Untimed: makes sure the ONNX export exists, as after any first `kb index`.
        tiny = work / "tiny"
        tiny.mkdir()
        (tiny / "a.txt").write_text("warm-up")
        seconds, _ = timed([kb, "index", str(tiny), "--index", str(work / "tiny-index")], env)
        print(f"setup: {files} files, {size / 1e6:.2f} MB from {data}; first kb index (exports ONNX if missing) {seconds:.1f} s")
        print(machine_report())

        runs: dict[str, list[tuple[int, float, float]]] = {"onnx": [], "torch": [], "encode": []}
        for repeat in range(args.repeats):
            for backend in ("onnx", "torch"):
                index_dir = work / f"index-{backend}-{repeat}"
                wall, out = timed([kb, "index", str(corpus), "--index", str(index_dir), "--json"],
                                  {**env, "KB_EMBEDDER": backend})
                report = json.loads(out)
                runs[backend].append((report["passages_embedded"], wall, report["seconds"]))
                shutil.rmtree(index_dir)
            wall, out = timed([sys.executable, "-c", ENCODE_SCRIPT, str(corpus)], env)
            encoded = json.loads(out)
            runs["encode"].append((encoded["passages"], wall, encoded["seconds"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    passages = runs["onnx"][0][0]
    if any(n != passages for rows in runs.values() for n, _, _ in rows):
        sys.exit(f"bench: runs embedded different numbers of passages: {runs}")
    rate = {name: passages / statistics.median(wall for _, wall, _ in rows) for name, rows in runs.items()}
    inner = {name: passages / statistics.median(inside for _, _, inside in rows) for name, rows in runs.items()}
    print(f"\n{passages} passages; median of {args.repeats} runs, passages/s:")
    print(f"  kb index (onnx), whole process:         {rate['onnx']:6.1f}   (inside index(): {inner['onnx']:.1f})")
    print(f"  kb index (KB_EMBEDDER=torch), process:  {rate['torch']:6.1f}   (inside index(): {inner['torch']:.1f})")
    print(f"  SentenceTransformer.encode, call only:  {inner['encode']:6.1f}   (its whole process: {rate['encode']:.1f})")
    print("\nratios:")
    print(f"  kb index (whole process) / plain encode (call only): {rate['onnx'] / inner['encode']:.2f}x (target >= 1.3x)")
    print(f"  kb index / kb index on torch (whole processes):      {rate['onnx'] / rate['torch']:.2f}x")
    print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
