"""How fast a warm `kb serve` answers: GET /ask latency, 8 concurrent clients, and the client.

    .venv/bin/python bench/serve_latency.py [CORPUS] [--scale-docs DIR] [--passages 10000]
        [--cache DIR] [--requests 100] [--highlight-requests 30] [--clients 8] [--workers 1 2]

For two indexes, the shipped corpus (CORPUS, default corpus/) and a ~10k-passage index
built from copies of the .txt/.md files of --scale-docs (default ../shared/data/scale-docs;
--passages 0 skips it), it starts the real `kb serve` on a free port and measures, from a
client holding a keep-alive connection:
- warm GET /ask latency, p50 and p95 over --requests sequential questions, with best-sentence
  highlighting off and on (--highlight-requests);
- 8 concurrent clients (--clients), each on its own connection: per-request p50/p95,
  requests per second and errors, for each --workers setting (1 = one KnowledgeBase
  behind a lock, 2 = a pool of two);
- whole processes: `kb ask --server URL` against a cold `kb ask` (median of --runs).
The large index takes a while to embed, so it and its corpus are kept in --cache (default
kb's cache folder, bench-serve/) and reused when the source files are the same.
Target from the issue: warm GET /ask p50 <= 25 ms with highlighting, on the shipped corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_latency import machine_report  # noqa: E402  (a sibling script: same machine line)

ROOT = Path(__file__).resolve().parent.parent
KB = Path(sys.executable).parent / "kb"
TARGET_MS = 25.0
BYTES_PER_PASSAGE = 500  # scale-docs .txt/.md average ~506 bytes per 200-token passage

ARTICLE_QUESTIONS = [
    "How big was the vote in favour of striking?", "When is the first strike?", "Who is Jeremy Hunt?",
    "What does the BMA insist on now?", "Why are junior doctors unhappy with the contract?",
    "What role could ACAS play?", "Which specialties would the contract penalise?",
    "Is the author sympathetic to the doctors?", "What did Ed Miliband fail to do?",
    "Who will be harmed by a strike?",
]
SCALE_QUESTIONS = [
    "How do I create a new branch in git?", "What does the asyncio event loop do?",
    "How do I install a package with apt?", "How can I read a file line by line in Node.js?",
    "How do I merge two data frames in R?", "What is a virtual environment in Python?",
    "How do I undo the last commit?", "How does garbage collection work?",
    "How do I configure the network on Debian?", "What is a closure in JavaScript?",
    "How are regular expressions compiled?", "How do I rebase a branch onto main?",
]


# -- indexes --------------------------------------------------------------------------------
def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode not in (0, 7):  # 7: some files skipped, the index is still built
        sys.exit(f"bench: {' '.join(command[:3])} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return done


def large_index(scale_docs: Path, passages: int, cache: Path) -> Path:
    """A ~`passages` index of .txt/.md copies from scale_docs, built once and cached."""
    files = sorted((p for p in scale_docs.rglob("*") if p.suffix in (".txt", ".md") and p.is_file()),
                   key=lambda p: hashlib.sha256(str(p.relative_to(scale_docs)).encode()).hexdigest())
    chosen, total = [], 0
    for path in files:  # a fixed, mixed order (by hash of the path), whole files, to the byte budget
        if total >= passages * BYTES_PER_PASSAGE:
            break
        chosen.append(path)
        total += path.stat().st_size
    key = hashlib.sha256("\n".join(f"{p.relative_to(scale_docs)} {p.stat().st_size}" for p in chosen).encode())
    home = cache / f"scale-{passages}-{key.hexdigest()[:12]}"
    corpus, index = home / "corpus", home / "index"
    if (home / "done").exists():
        return index
    shutil.rmtree(home, ignore_errors=True)
    for path in chosen:
        target = corpus / path.relative_to(scale_docs)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    print(f"building the large index: {len(chosen)} files, {total / 1e6:.1f} MB into {home} "
          "(once; takes minutes)", flush=True)
    started = time.perf_counter()
    run([str(KB), "index", str(corpus), "--index", str(index), "--max-file-size", "0"], cwd=home)
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    (home / "done").write_text("ok\n")
    return index


# -- a server and its clients ----------------------------------------------------------------
class Served:
    def __init__(self, index: Path, workers: int):
        self.process = subprocess.Popen([str(KB), "serve", "--index", str(index), "--port", "0",
                                         "--workers", str(workers)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"at http://([\d.]+):(\d+)/", line)
        if not match:
            sys.exit(f"bench: kb serve did not start: {line!r} {self.process.stderr.read()[-400:]}")
        self.host, self.port = match.group(1), int(match.group(2))
        self.url = f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def ask_path(question: str, highlight: bool) -> str:
    return "/ask?" + urllib.parse.urlencode({"q": question, "k": 5, "highlight": str(highlight).lower()})


def timed_requests(server: Served, paths: list[str]) -> tuple[list[float], int]:
    """Milliseconds per request on one keep-alive connection, and how many failed."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=300)
    times, errors = [], 0
    for path in paths:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 200 or not json.loads(body)["results"]:
            errors += 1
    conn.close()
    return times, errors


def sequential(server: Served, questions: list[str], n: int, highlight: bool) -> dict:
    timed_requests(server, [ask_path(q, highlight) for q in questions])  # warm: every question once
    times, errors = timed_requests(server, [ask_path(questions[i % len(questions)], highlight) for i in range(n)])
    return summary(times, errors)


def concurrent(server: Served, questions: list[str], clients: int, per_client: int, highlight: bool) -> dict:
    results: list[tuple[list[float], int]] = []
    barrier = threading.Barrier(clients + 1)

    def client(offset: int) -> None:
        paths = [ask_path(questions[(offset + i) % len(questions)], highlight) for i in range(per_client)]
        barrier.wait()
        results.append(timed_requests(server, paths))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    times = [t for ts, _ in results for t in ts]
    out = summary(times, sum(e for _, e in results))
    out["per_second"] = len(times) / wall
    return out


def summary(times: list[float], errors: int) -> dict:
    ordered = sorted(times)
    return {"n": len(times), "p50": statistics.median(ordered), "p95": ordered[max(0, round(0.95 * len(ordered)) - 1)],
            "errors": errors}


def whole_process(command: list[str], runs: int) -> float:
    seconds = []
    for _ in range(runs + 1):  # the first is a warm-up
        started = time.perf_counter()
        run(command)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:])


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(ROOT / "corpus"), help="small corpus (default: corpus/)")
    parser.add_argument("--scale-docs", default=str(ROOT / ".." / "shared" / "data" / "scale-docs"))
    parser.add_argument("--passages", type=int, default=10000, help="size of the large index (0: skip it)")
    parser.add_argument("--cache", default=None, help="where the large index is kept (default: kb's cache)")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests without highlighting")
    parser.add_argument("--highlight-requests", type=int, default=30, help="sequential requests with highlighting")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=25, help="requests per concurrent client")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server --workers settings to compare")
    parser.add_argument("--runs", type=int, default=5, help="whole-process runs (median)")
    args = parser.parse_args()

    from kb.embed.model import cache_dir

    cache = Path(args.cache) if args.cache else cache_dir() / "bench-serve"
    print(machine_report())
    print("starlette " + metadata.version("starlette") + ", uvicorn " + metadata.version("uvicorn"))
    work = Path(tempfile.mkdtemp(prefix="kb-bench-serve-"))
    try:
        small = work / "index"
        run([str(KB), "index", args.corpus, "--index", str(small)])
        indexes = [("shipped corpus", small, ARTICLE_QUESTIONS)]
        if args.passages:
            scale = Path(args.scale_docs)
            if not scale.is_dir():
                sys.exit(f"bench: no scale-docs folder at {scale} (give --scale-docs DIR, or --passages 0)")
            indexes.append(("scale-docs", large_index(scale, args.passages, cache), SCALE_QUESTIONS))
        rows = []
        for name, index, questions in indexes:
            info = json.loads(run([str(KB), "info", "--json", "--index", str(index)]).stdout)
            label = f"{name} ({info['documents']} files, {info['passages']} passages)"
            print(f"\n{label}", flush=True)
            for workers in args.workers:
                server = Served(index, workers)
                try:
                    if workers == max(args.workers):  # sequential latency does not depend on the pool
                        for highlight, n in ((False, args.requests), (True, args.highlight_requests)):
                            s = sequential(server, questions, n, highlight)
                            rows.append((label, f"sequential, highlight {'on' if highlight else 'off'}", workers, s))
                            report(rows[-1])
                    for highlight in (False, True):
                        per_client = args.per_client if not highlight else max(2, args.per_client // 5)
                        c = concurrent(server, questions, args.clients, per_client, highlight)
                        rows.append((label, f"{args.clients} clients, highlight {'on' if highlight else 'off'}",
                                     workers, c))
                        report(rows[-1])
                    if name == "shipped corpus" and workers == max(args.workers):
                        q = questions[0]
                        remote = whole_process([str(KB), "ask", q, "--server", server.url, "--json"], args.runs)
                        local = whole_process([str(KB), "ask", q, "--index", str(index), "--json"], args.runs)
                        remote_nh = whole_process([str(KB), "ask", q, "--server", server.url, "--json",
                                                   "--no-highlight"], args.runs)
                        local_nh = whole_process([str(KB), "ask", q, "--index", str(index), "--json",
                                                  "--no-highlight"], args.runs)
                        print(f"  whole process, median of {args.runs}: kb ask --server {remote:.3f} s "
                              f"({remote_nh:.3f} s --no-highlight) vs kb ask {local:.3f} s "
                              f"({local_nh:.3f} s --no-highlight)", flush=True)
                finally:
                    server.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    shipped = [r for r in rows if r[0].startswith("shipped") and r[1] == "sequential, highlight on"]
    if shipped:
        p50 = shipped[0][3]["p50"]
        print(f"\ntarget: warm GET /ask p50 with highlighting on the shipped corpus {p50:.1f} ms "
              f"(<= {TARGET_MS:.0f} ms: {'met' if p50 <= TARGET_MS else 'NOT met'})")
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(row) -> None:
    label, what, workers, s = row
    rate = f", {s['per_second']:6.1f} req/s" if "per_second" in s else ""
    print(f"  {what:<28} workers {workers}: p50 {s['p50']:7.1f} ms, p95 {s['p95']:7.1f} ms "
          f"(n={s['n']}, errors {s['errors']}){rate}", flush=True)


if __name__ == "__main__":
    main()
