"""`kb watch`: edit-to-answer latency, idle cost, and a git checkout burst.

    .venv/bin/python bench/watch_latency.py [--docs DIR] [--big-mb 30] [--edits 15] [--idle 60] [--work DIR]

1. Edit-to-answer on the shipped corpus, real model: a watcher thread and an asking
   KnowledgeBase in one process (as `kb serve --watch` runs them). Each trial appends a
   paragraph holding a new word to a file, then asks for the word (hybrid, k=10) every
   20 ms until a hit holds it: p50/p95 seconds from the file's close to that answer.
   The same through a `kb serve --watch` process, asked over HTTP (GET /ask, what `kb ask
   --server` sends, without a process start per poll).
2. The same on a bigger folder of real docs (copies of --docs' .txt/.md files, tagged so no
   passage repeats, until --big-mb MB), built and updated with kb's hashing stand-in
   embedder (kb.embed.embedding.HashEmbedder): that latency is kb's own (events, debounce,
   update, publish, reader reopen); the model's share is (1) minus the same on the shipped
   corpus with the stand-in, printed beside it.
3. Idle: a `kb watch` process over the big folder, once caught up: CPU seconds used over
   --idle seconds of nothing happening, and its RSS (no model loaded: nothing to embed).
4. Burst: the big folder is a git repository with two commits (B: 500 files edited, 20
   deleted, 20 added); with the watcher on B, `git checkout A`: the updates it caused, their
   time, and passages embedded, against one `kb index` run from the same starting index.

Runs on a shared, busy 2-core machine: compare figures within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from kb import KnowledgeBase  # noqa: E402
from kb.embed.embedding import HashEmbedder  # noqa: E402
from kb.embed.model import packaged_model  # noqa: E402
from kb.watch import QUIET, Watcher  # noqa: E402

KB = Path(sys.executable).parent / "kb"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def wait_for(check, timeout: float = 300.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(str(check))
        time.sleep(step)
    return result


class Watching:
    """A Watcher thread over folder, its updates listed, and an asking KnowledgeBase."""

    def __init__(self, folder: Path, index_dir: Path, embedder=None):
        self.updates = []
        self.watcher = Watcher(KnowledgeBase(index_dir, embedder=embedder), [folder],
                               on_update=self.updates.append, on_note=lambda note: None)
        self.asker = KnowledgeBase(index_dir, many_questions=True)

    def __enter__(self):
        self.watcher.start()
        wait_for(lambda: self.watcher.caught_up or self.watcher.error, timeout=3600)
        if self.watcher.error:
            raise self.watcher.error
        return self

    def __exit__(self, *exc):
        self.watcher.stop(timeout=120)

    def answers(self, question: str, word: str) -> bool:
        return any(word in h.text for h in self.asker.ask(question, k=10))


def edit_latency(folder: Path, index_dir: Path, edits: int, embedder=None) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md") and ".git" not in p.parts)
    rng = random.Random(7)
    words = random.Random()  # unseeded: every run's words are new to the index
    latencies, update_seconds, embedded = [], [], []
    with Watching(folder, index_dir, embedder) as w:
        w.answers("warm up the question path", "-")
        for trial in range(edits):
            word = f"zq{trial}x{words.randrange(10**9)}"
            target = rng.choice(files)
            before = len(w.updates)
            with open(target, "a", encoding="utf-8") as f:
                f.write(f"\n\nA note added by the watch benchmark: the {word} valve needs oiling every spring.\n")
            saved = time.perf_counter()
            # The new word alone: earlier trials' notes share the rest of the sentence, and
            # the stand-in's dense scores are noise, so only the word ranks the note first.
            wait_for(lambda: w.answers(word, word), timeout=120)
            latencies.append(time.perf_counter() - saved)
            wait_for(lambda: len(w.updates) > before, timeout=60)
            update_seconds.append(sum(u.report.seconds for u in w.updates[before:]))
            embedded.append(sum(u.report.passages_embedded for u in w.updates[before:]))
            time.sleep(0.3)
        passages = w.asker.info()["passages"]
    return {"passages": passages, "edits": edits, "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 0.95), "max_s": max(latencies),
            "update_p50_s": statistics.median(update_seconds), "passages_embedded_p50": statistics.median(embedded)}


def server_latency(folder: Path, index_dir: Path, edits: int) -> dict:
    """As edit_latency, through a `kb serve --watch` process: GET /ask (what `kb ask
    --server` sends) every 20 ms until an answer holds the new word."""
    import re
    import urllib.parse
    import urllib.request

    process = subprocess.Popen([str(KB), "serve", "--index", str(index_dir), "--port", "0", "--watch", str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = re.search(r"at (http://\S+?/)", process.stdout.readline()).group(1)

        def answers(word: str) -> bool:
            try:
                with urllib.request.urlopen(f"{url}ask?" + urllib.parse.urlencode({"q": word, "k": 10}),
                                            timeout=60) as response:
                    return any(word in hit["text"] for hit in json.loads(response.read())["results"])
            except OSError:  # 503 until the watcher's catch-up has built the index
                return False

        wait_for(lambda: answers("the"), timeout=600)
        files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md"))
        rng, words, latencies = random.Random(7), random.Random(), []
        for trial in range(edits):
            word = f"zs{trial}x{words.randrange(10**9)}"
            with open(rng.choice(files), "a", encoding="utf-8") as f:
                f.write(f"\n\nA note added by the watch benchmark: the {word} valve needs oiling every spring.\n")
            saved = time.perf_counter()
            wait_for(lambda: answers(word), timeout=120)
            latencies.append(time.perf_counter() - saved)
            time.sleep(0.3)
        return {"edits": edits, "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95),
                "max_s": max(latencies)}
    finally:
        process.terminate()
        process.wait(timeout=60)


def build_big(docs: Path, folder: Path, megabytes: float) -> None:
    """Copies of docs' .txt/.md files (each copy's lines tagged) until `megabytes` MB."""
    if (folder / ".built").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    sources = sorted(p for p in docs.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
    total, copy = 0, 0
    while total < megabytes * 1e6:
        for f in sources:
            if total >= megabytes * 1e6:
                break
            dest = folder / f"copy-{copy}" / f.relative_to(docs)
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = f.read_text(encoding="utf-8", errors="replace")
            if copy:
                text = "\n".join(f"{line} ~{copy}" if line.strip() else line for line in text.split("\n"))
            dest.write_text(text, encoding="utf-8")
            total += len(text.encode())
        copy += 1
    (folder / ".built").write_text(str(total))


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
                        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org"})


def make_two_commits(folder: Path) -> None:
    """Commit A (the folder as built), then B: 500 files edited, 20 deleted, 20 added."""
    if (folder / ".git").exists():
        git(folder, "checkout", "-q", "-f", "B")
        return
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "A")
    git(folder, "tag", "A")
    files = sorted(p for p in folder.rglob("*.md") if ".git" not in p.parts)
    files += sorted(p for p in folder.rglob("*.txt") if ".git" not in p.parts)
    rng = random.Random(11)
    rng.shuffle(files)
    for i, f in enumerate(files[:500]):
        text = f.read_text(encoding="utf-8")
        paragraphs = text.split("\n\n")
        paragraphs.insert(len(paragraphs) // 2, f"Version B rewrote this part ({i}): the settings moved to a new file.")
        f.write_text("\n\n".join(paragraphs), encoding="utf-8")
    for f in files[500:520]:
        f.unlink()
    for i in range(20):
        (folder / f"new-in-b-{i}.md").write_text(f"# New page {i}\n\nA page that only version B has, number {i}.\n")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "B")
    git(folder, "tag", "B")


def burst(folder: Path, index_dir: Path, embedder) -> dict:
    """git checkout A with a watcher on B, against one kb index from the same start."""
    git(folder, "checkout", "-q", "-f", "B")  # drops the latency trials' edits
    KnowledgeBase(index_dir, embedder=embedder).index([folder])
    start_copy = index_dir.parent / "index-before-burst"
    shutil.rmtree(start_copy, ignore_errors=True)
    shutil.copytree(index_dir, start_copy)
    with Watching(folder, index_dir, embedder) as w:
        before = len(w.updates)
        started = time.perf_counter()
        git(folder, "checkout", "-q", "-f", "A")
        checkout_done = time.perf_counter()
        # Done when no update has come for 5 s after the last (the checkout was long over).
        wait_for(lambda: len(w.updates) > before)
        while True:
            n = len(w.updates)
            time.sleep(5)
            if len(w.updates) == n:
                break
        caused = w.updates[before:]
        last = max(u.report.seconds for u in caused)
        applied = time.perf_counter() - started - 5
        watched = {"updates": len(caused), "checkout_s": checkout_done - started, "until_applied_s": applied,
                   "update_seconds": [round(u.report.seconds, 2) for u in caused],
                   "passages_embedded": sum(u.report.passages_embedded for u in caused),
                   "files_changed": sum(len(u.report.changed) + len(u.report.added) + len(u.report.removed)
                                        for u in caused), "longest_update_s": last}
    single = KnowledgeBase(start_copy, embedder=embedder).index([folder])
    git(folder, "checkout", "-q", "-f", "B")
    return {"watcher": watched, "single_kb_index": {
        "seconds": single.seconds, "passages_embedded": single.passages_embedded,
        "files_changed": len(single.changed) + len(single.added) + len(single.removed)}}


def idle_cost(folder: Path, index_dir: Path, seconds: float) -> dict:
    """A `kb watch` process, caught up, doing nothing: CPU seconds over `seconds`, and RSS."""
    process = subprocess.Popen([str(KB), "watch", str(folder), "--index", str(index_dir), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        caught_up = json.loads(process.stdout.readline())
        time.sleep(2)

        def cpu() -> float:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(seconds)
        used = cpu() - before
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:")) / 1024
        return {"seconds": seconds, "cpu_s": used, "rss_mb": rss, "catch_up_s": caught_up["seconds"]}
    finally:
        process.terminate()
        process.wait(timeout=60)


def event_gaps(work: Path) -> dict:
    """The longest silence between consecutive file events inside one burst (what the quiet
    window must bridge) for an editor's save, a 500-file git checkout and a 500-file cp -r."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    folder = work / "gaps"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "repo").mkdir(parents=True)
    for i in range(500):
        (folder / "repo" / f"page-{i}.md").write_text(f"# Page {i}\n\n" + "Some text. " * 200)
    git(folder / "repo", "init", "-q")
    git(folder / "repo", "add", "-A")
    git(folder / "repo", "commit", "-qm", "A")
    for i in range(500):
        (folder / "repo" / f"page-{i}.md").write_text(f"# Page {i}, version B\n\n" + "Other text. " * 200)
    git(folder / "repo", "commit", "-qam", "B")
    times: list[float] = []

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if ".git" not in event.src_path and event.event_type not in ("opened", "closed_no_write"):
                times.append(time.perf_counter())

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    results = {}

    def measure(name, action):
        time.sleep(0.5)
        times.clear()
        action()
        time.sleep(1.0)
        gaps = [b - a for a, b in zip(times, times[1:])]
        results[name] = {"events": len(times), "span_s": times[-1] - times[0] if times else 0,
                         "longest_gap_s": max(gaps, default=0)}

    def editor_save():
        temporary = folder / "repo" / ".page-1.md.swp"
        temporary.write_text("# Page 1, saved by an editor\n")
        os.replace(temporary, folder / "repo" / "page-1.md")

    measure("editor save (temp + rename)", editor_save)
    measure("git checkout, 500 files", lambda: git(folder / "repo", "checkout", "-q", "-f", "HEAD~1"))
    measure("cp -r, 500 files", lambda: subprocess.run(["cp", "-r", str(folder / "repo"), str(folder / "copy")],
                                                       check=True))
    observer.stop()
    observer.join()
    shutil.rmtree(folder, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=ROOT.parent / "shared" / "data" / "scale-docs")
    parser.add_argument("--big-mb", type=float, default=30.0)
    parser.add_argument("--edits", type=int, default=15)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kb-bench-watch")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--gaps", action="store_true", help="Only measure the silences inside bursts of events.")
    args = parser.parse_args()
    print(machine.line())
    print(machine.byte_compile_kb())
    print(f"debounce: a burst ends after {QUIET} s without events; shared busy machine")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.gaps:
        for name, figures in event_gaps(args.work).items():
            print(f"{name}: {json.dumps(_round(figures))}")
        return
    hashing = HashEmbedder(packaged_model())

    small = args.work / "shipped"
    shutil.rmtree(small, ignore_errors=True)
    shutil.copytree(ROOT / "corpus", small / "corpus")
    real = edit_latency(small / "corpus", small / "index", args.edits)
    print(f"shipped corpus, real model: {json.dumps(_round(real))}")
    stand_in = edit_latency(small / "corpus", small / "index-hash", args.edits, embedder=hashing)
    print(f"shipped corpus, stand-in embedder: {json.dumps(_round(stand_in))}")
    served = server_latency(small / "corpus", small / "index-served", args.edits)
    print(f"shipped corpus, real model, through `kb serve --watch` (GET /ask): {json.dumps(_round(served))}")
    if args.skip_big:
        return

    big = args.work / "big"
    started = time.perf_counter()
    build_big(args.docs, big / "docs", args.big_mb)
    make_two_commits(big / "docs")
    index_dir = big / "index"
    report = KnowledgeBase(index_dir, embedder=hashing).index([big / "docs"])
    print(f"big folder: {report.documents} files, {report.passages} passages, index built or brought up to date "
          f"in {time.perf_counter() - started:.0f} s (stand-in embedder)")
    print(f"big folder, stand-in embedder: {json.dumps(_round(edit_latency(big / 'docs', index_dir, args.edits, hashing)))}")
    print(f"idle `kb watch` over the big folder: {json.dumps(_round(idle_cost(big / 'docs', index_dir, args.idle)))}")
    print(f"burst, git checkout B -> A: {json.dumps(_round(burst(big / 'docs', index_dir, hashing)))}")


def _round(d):
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_round(v) for v in d]
    return round(d, 3) if isinstance(d, float) else d


if __name__ == "__main__":
    main()
