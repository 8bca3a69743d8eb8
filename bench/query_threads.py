"""Questions on a busy machine: onnxruntime with 1 intra-op thread, 2, or 2 batches at once.

kb's query path embeds a question or a batch of questions with the ONNX embedder. This
times each setting in its own process (settings round-robin, so background load hits
all alike), twice: with the machine as it is ("as is"), and with one extra process,
started here, spinning on a core ("+1 busy core"). Per process:
  cold   session creation + tokenizer + the first question (what `kb ask` pays)
  warm   the median of further calls (--warm, divided by the batch size, at least 5):
         what a long-lived process pays
for a batch of 1, 8 and 64 questions. Settings (OnnxEmbedder arguments):
  t1         threads=1, workers=1: one core does everything
  t2         threads=2, workers=1: every layer split over two cores (onnxruntime intra-op)
  t1-w2      threads=1, workers=2: batches spread over two cores, one core per batch
  t1-nopack  t1 without weight prepacking (cheaper session, slower runs)
  kb         what `kb ask` uses: every core on one run (t2 here), prepacking left
             until a second call (kb.embed.embedding._cores)

    .venv/bin/python bench/query_threads.py [--runs 5] [--warm 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

from query_latency import ROOT, machine_report

SETTINGS = {
    "t1": {"threads": 1, "workers": 1},
    "t2": {"threads": 2, "workers": 1},
    "t1-w2": {"threads": 1, "workers": 2},
    "t1-nopack": {"threads": 1, "workers": 1, "prepack": False},
    "kb": {"threads": os.cpu_count() or 1, "workers": 1, "prepack": None},
}
BATCHES = (1, 8, 64)
QUESTIONS = [
    "Why did junior doctors vote to strike?", "What did the BMA say about the contract?",
    "How will the strike affect patients?", "What is Jeremy Hunt's position?",
    "Are junior doctors militant?", "What happens to weekend working and pay?",
    "Who negotiates on behalf of the NHS employers?", "Will emergency care be provided during the walkout?",
]


def worker(setting: str, batch: int, warm: int) -> None:
    """One process: build the embedder, time the first call and `warm` more; print JSON."""
    started = time.perf_counter()
    from kb.embed.model import packaged_model
    from kb.embed.onnx_embedder import OnnxEmbedder

    model = packaged_model()
    texts = (QUESTIONS * (batch // len(QUESTIONS) + 1))[:batch]
    ready = time.perf_counter()
    embedder = OnnxEmbedder(model, **SETTINGS[setting])
    made = time.perf_counter()
    embedder.embed(texts)
    first = time.perf_counter()
    times = []
    for _ in range(max(5, warm // batch)):
        t = time.perf_counter()
        embedder.embed(texts)
        times.append(time.perf_counter() - t)
    print(json.dumps({"imports": ready - started, "session": made - ready, "first": first - made,
                      "cold": first - ready, "warm": statistics.median(times), "by": embedder.verified_by}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per setting, batch and load (median reported)")
    parser.add_argument("--warm", type=int, default=30, help="warm calls timed in each process")
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.warm)

    env = {k: v for k, v in os.environ.items() if k != "KB_EMBEDDER"}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))  # so the spinner is stopped
    # Untimed: make sure the export exists and its check is recorded, as after any `kb index`.
    subprocess.run([sys.executable, __file__, "--worker", "t1", "1", "--warm", "0"], env=env, check=True,
                   capture_output=True)
    time.sleep(1.2)
    subprocess.run([sys.executable, __file__, "--worker", "t1", "1", "--warm", "0"], env=env, check=True,
                   capture_output=True)
    print(machine_report())
    results: dict[tuple[str, str, int], list[dict]] = {}
    for load in ("as is", "+1 busy core"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "as is" else None
        try:
            time.sleep(0.5 if spinner else 0)
            before = os.getloadavg()[0]
            for _ in range(args.runs):
                for batch in BATCHES:
                    for setting in SETTINGS:
                        done = subprocess.run([sys.executable, __file__, "--worker", setting, str(batch),
                                               "--warm", str(args.warm)], env=env, capture_output=True, text=True)
                        if done.returncode:
                            sys.exit(f"bench: worker {setting} failed: {done.stderr.strip()[-300:]}")
                        results.setdefault((load, setting, batch), []).append(json.loads(done.stdout))
            print(f"{load}: load average {before:.2f} at start, {os.getloadavg()[0]:.2f} at end")
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()

    print(f"\nmedian of {args.runs} processes per cell; cold = session + first call, warm = per call (ms)")
    header = "  ".join(f"{'batch ' + str(b):>17}" for b in BATCHES)
    for load in ("as is", "+1 busy core"):
        print(f"\n{load:<14}{header}")
        print(f"{'':<14}" + "  ".join(f"{'cold':>8} {'warm':>8}" for _ in BATCHES))
        for setting in SETTINGS:
            cells = []
            for batch in BATCHES:
                rows = results[(load, setting, batch)]
                cells.append(f"{statistics.median(r['cold'] for r in rows) * 1e3:8.1f} "
                             f"{statistics.median(r['warm'] for r in rows) * 1e3:8.1f}")
            print(f"{setting:<14}" + "  ".join(cells))
    session = {s: statistics.median(r["session"] for (_, s2, _), rows in results.items() if s2 == s for r in rows)
               for s in SETTINGS}
    print("\nsession creation, median over all processes (ms): "
          + ", ".join(f"{s} {v * 1e3:.1f}" for s, v in session.items()))
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
