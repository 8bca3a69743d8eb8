"""Questions when the page cache lacks the index: after a reboot, after other work took the
memory, or on a machine that pages out idle memory (this one drops file pages idle for a
minute), where a long-lived process meets it again after every pause.

    python bench/cold_pages.py INDEX [INDEX ...] [--questions 20] [--runs 5] [--code DIR]

Per index (build them with bench/scale.py, which keeps them in --work):
- paged out: one long-lived process (KnowledgeBase, default hybrid mode with the best
  sentence) asks each question after a pause (kb.store.page_advice.QUIET_SECONDS, a second)
  during which every page of the index's files is dropped, from the process (madvise
  MADV_PAGEOUT on each of its mappings of those files) and from the page cache
  (posix_fadvise DONTNEED); p50 / p95 ms, beside the same questions asked warm;
- cold cache, new process: a whole `kb ask --json` process after the index's files are
  dropped from the page cache, beside the same with the cache warm; medians of --runs,
  pairs interleaved.
--code DIR runs another kb checkout (e.g. a git worktree of an older commit) the same way,
to compare. Needs Linux 5.4+ (MADV_PAGEOUT); dropping pages needs no privileges.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402
from scale import QUESTIONS  # noqa: E402

DROP = r'''
import ctypes, os
from pathlib import Path

MADV_PAGEOUT = 21
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def drop(folder):
    """Every page of the folder's files out of this process and out of the page cache."""
    folder = str(Path(folder).resolve())
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith(folder + "/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if _libc.madvise(start, end - start, MADV_PAGEOUT) != 0:
                raise OSError(ctypes.get_errno(), "madvise(MADV_PAGEOUT) failed: Linux 5.4+ needed")
    for path in Path(folder).rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
'''

PAGED_OUT = DROP + r'''
import json, statistics, sys, time
from kb import KnowledgeBase

try:
    from kb.store.page_advice import QUIET_SECONDS
except ImportError:  # a kb from before the advice
    QUIET_SECONDS = 1.0

index, questions = sys.argv[1], json.loads(sys.argv[2])
kb = KnowledgeBase(index)
for q in questions[:3]:
    kb.ask(q, k=5)  # open the index and ready the model: not what is measured


def p50_p95(times):
    times = sorted(times)
    return [round(statistics.median(times), 1), round(times[int(0.95 * len(times))], 1)]


def timed(q):
    started = time.perf_counter()
    kb.ask(q, k=5)
    return 1000 * (time.perf_counter() - started)


for q in questions:
    timed(q)
warm = [timed(q) for q in questions]
paged_out = []
for q in questions:
    # A pause, as between an agent's questions, during which the machine drops the pages
    # (kb asks the kernel for them again after a pause: kb.store.page_advice.AdviceGate).
    time.sleep(QUIET_SECONDS)
    drop(index)
    paged_out.append(timed(q))
print(json.dumps({"paged_out_ms": p50_p95(paged_out), "warm_ms": p50_p95(warm)}))
'''

NEW_PROCESS = DROP + r'''
import subprocess, sys, time

index, drop_first, command = sys.argv[1], sys.argv[2] == "cold", sys.argv[3:]
if drop_first:
    drop(index)
started = time.perf_counter()
done = subprocess.run(command, capture_output=True, text=True)
if done.returncode != 0:
    raise SystemExit(done.stderr[-1000:])
print(time.perf_counter() - started)
'''


def run(code: str, args: list[str], kb_code: Path) -> str:
    # The working directory comes first on sys.path: the kb imported is kb_code's.
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=kb_code,
                          env={**os.environ, "PYTHONPATH": str(kb_code)})
    if done.returncode != 0:
        raise SystemExit(f"bench step failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def new_processes(index: Path, runs: int, kb_code: Path) -> dict:
    ask = [sys.executable, "-c", "from kb.cli import run; run()", "ask", QUESTIONS[0], "--json", "--index",
           str(index)]
    run(NEW_PROCESS, [str(index), "warm", *ask], kb_code)  # the model's files in the page cache
    pairs = [(float(run(NEW_PROCESS, [str(index), "cold", *ask], kb_code)),
              float(run(NEW_PROCESS, [str(index), "warm", *ask], kb_code))) for _ in range(runs)]
    return {"cold_cache_s": round(statistics.median(c for c, _ in pairs), 2),
            "warm_cache_s": round(statistics.median(w for _, w in pairs), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("indexes", nargs="+", type=Path)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="the kb checkout to run (default: this one)")
    args = parser.parse_args()
    print(machine.line())
    kb_code = args.code.resolve()
    print(machine.byte_compile_kb(kb_code / "kb"))
    results = {}
    for index in args.indexes:
        info = json.loads(subprocess.run([sys.executable, "-c", "from kb.cli import run; run()", "info", "--json",
                                          "--index", str(index)], capture_output=True, text=True, cwd=kb_code,
                                         env={**os.environ, "PYTHONPATH": str(kb_code)}).stdout)
        row = {"passages": info["passages"],
               **json.loads(run(PAGED_OUT, [str(index.resolve()), json.dumps(QUESTIONS[:args.questions])], kb_code)),
               **new_processes(index.resolve(), args.runs, kb_code)}
        results[str(index)] = row
        print(json.dumps({str(index): row}), flush=True)
    print()
    print("| | " + " | ".join(f"{r['passages']:,} passages" for r in results.values()) + " |")
    print("|---|" + "---|" * len(results))
    for name, cell in [("question, index paged out, ms p50 / p95", lambda r: "{} / {}".format(*r["paged_out_ms"])),
                       ("the same questions warm, ms p50 / p95", lambda r: "{} / {}".format(*r["warm_ms"])),
                       ("new `kb ask` process, cold page cache, s", lambda r: f"{r['cold_cache_s']:.2f}"),
                       ("new `kb ask` process, warm page cache, s", lambda r: f"{r['warm_cache_s']:.2f}")]:
        print(f"| {name} | " + " | ".join(cell(r) for r in results.values()) + " |")


if __name__ == "__main__":
    main()
