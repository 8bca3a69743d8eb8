"""Right entry on real documentation: kb's reading before (another checkout, e.g. main) and after (this one).

    .venv/bin/python bench/docs_quality.py [--docs DIR] [--before ROOT] [--work DIR] [--mode hybrid ...]

The development questions are bench/docs_questions.jsonl: questions a user of Node.js
and git would ask, each with the file and the entry (the heading line, or the first
term line of a labeled-list entry) that answers it. The Python docs are not used here:
they are the held-out check. The files the questions name, and a few neighbours as
distractors, are copied from --docs (default ../shared/data/scale-docs) into --work,
indexed once by each checkout's `kb` (PYTHONPATH set to it), and asked every question;
an answer counts for an entry when most lines of the hit lie inside the entry (from
its heading to the next heading of the same or a higher level, or to the next entry
of a labeled list). Prints entry hit@1, hit@5 and MRR@5, and file hit@5, per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

QUESTIONS = ROOT / "bench" / "docs_questions.jsonl"
KB = str(Path(sys.executable).with_name("kb"))
# Indexed beside the files the questions name, so that the right entry has company.
DISTRACTORS = ["nodejs-doc/dns.md", "nodejs-doc/net.md", "nodejs-doc/worker_threads.md", "nodejs-doc/querystring.md",
               "nodejs-doc/string_decoder.md", "git-doc/git-log.txt", "git-doc/git-checkout.txt",
               "git-doc/git-fetch.txt", "git-doc/git-show.txt", "git-doc/git-add.txt", "git-doc/git-status.txt",
               "git-doc/git-cherry-pick.txt", "git-doc/git-am.txt", "git-doc/git-rm.txt", "git-doc/git-mv.txt"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--before", default="/work/main", help="checkout whose reading is the baseline")
    parser.add_argument("--work", default=None, help="folder for the copied docs and both indexes (kept)")
    parser.add_argument("--mode", action="append", help="ask modes (default: hybrid, lexical, dense)")
    parser.add_argument("--only", choices=["before", "after"], help="run one side only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    work = Path(args.work or tempfile.mkdtemp(prefix="kb-docs-quality-"))
    docs = work / "docs"
    files = sorted({q["file"] for q in questions} | set(DISTRACTORS))
    for name in files:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(args.docs) / name, docs / name)
    gold = [[(q["file"], *lines) for e in q["entries"] for lines in entry_lines(docs / q["file"], e)]
            for q in questions]
    sides = [("before", args.before), ("after", str(ROOT))]
    if args.only:
        sides = [s for s in sides if s[0] == args.only]
    report = {"machine": machine.describe(), "questions": len(questions), "files": len(files), "results": []}
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in report["machine"].items()))
        print(f"{len(questions)} questions over {len(files)} files (shared, busy machine)")
    for side, code in sides:
        env = dict(os.environ, PYTHONPATH=code)
        index = work / f"index-{side}"
        started = time.monotonic()  # an index already in --work is only brought up to date
        subprocess.run([KB, "index", "docs", "--index", str(index)], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        info = subprocess.run([KB, "info", "--index", str(index), "--json"], cwd=work, env=env, capture_output=True,
                              text=True)
        passages = json.loads(info.stdout).get("passages") if info.returncode == 0 else None
        for mode in args.mode or ["hybrid", "lexical", "dense"]:
            answers = ask(work, env, index, mode, [q["question"] for q in questions])
            row = score(answers, gold)
            row.update(side=side, mode=mode, index_seconds=round(seconds, 1), passages=passages)
            report["results"].append(row)
            if not args.json:
                print(f"{side:6} {mode:7} entry hit@1 {row['hit@1']:.3f}  hit@5 {row['hit@5']:.3f}  "
                      f"MRR@5 {row['mrr@5']:.3f}  file hit@5 {row['file@5']:.3f}  "
                      f"({passages} passages, indexed in {seconds:.0f} s)")
        report.setdefault("misses", {})[side] = [
            questions[i]["question"] for i, r in enumerate(row["ranks"]) if r != 1]
    if args.json:
        print(json.dumps(report, indent=1))


def ask(work: Path, env: dict, index: Path, mode: str, questions: list[str]) -> list[list[dict]]:
    out = subprocess.run([KB, "ask", "-", "--json", "-k", "5", "--index", str(index), "--mode", mode,
                          "--no-highlight"], cwd=work, env=env, input="\n".join(questions) + "\n",
                         capture_output=True, text=True)
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if len(answers) != len(questions):
        raise SystemExit(f"kb ask answered {len(answers)} of {len(questions)} questions: {out.stderr[-500:]}")
    return [a.get("results", []) for a in answers]


def score(answers: list[list[dict]], gold: list[list[tuple]]) -> dict:
    ranks = []
    files_found = 0
    for hits, entries in zip(answers, gold):
        rank = next((r for r, h in enumerate(hits[:5], 1) if any(_inside(h, e) for e in entries)), None)
        ranks.append(rank)
        files_found += any(_source(h).endswith(entries[0][0]) for h in hits[:5])
    n = len(gold)
    return {"hit@1": sum(r == 1 for r in ranks) / n, "hit@5": sum(r is not None for r in ranks) / n,
            "mrr@5": sum(1 / r for r in ranks if r) / n, "file@5": files_found / n, "ranks": ranks}


def _source(hit: dict) -> str:
    return hit.get("source") or hit.get("path") or ""


def _inside(hit: dict, entry: tuple) -> bool:
    name, first, last = entry
    if not _source(hit).endswith(name):
        return False
    a, b = hit["line_start"], hit["line_end"]
    overlap = min(b, last) - max(a, first) + 1
    return overlap * 2 >= (b - a + 1)


def entry_lines(path: Path, anchor: str) -> list[tuple[int, int]]:
    """(first, last) line of each entry that starts at a line `anchor` (module docstring):
    an entry documented twice (git's `ifdef::` variants) counts wherever it is."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found = [_entry_lines(lines, i, anchor) for i, line in enumerate(lines) if line.rstrip() == anchor]
    if not found:
        raise SystemExit(f"{path}: no line {anchor!r}")
    return found


def _entry_lines(lines: list[str], start: int, anchor: str) -> tuple[int, int]:
    end = len(lines)
    if anchor.startswith("#"):
        level = len(anchor) - len(anchor.lstrip("#"))
        fence = False
        for i in range(start + 1, len(lines)):
            if lines[i].startswith("```"):
                fence = not fence
            if not fence and re.match(rf"^#{{1,{level}}} ", lines[i]):
                end = i
                break
    elif anchor.endswith("::"):
        block = None
        for i in range(start + 1, len(lines)):
            line = lines[i].rstrip()
            if block:
                block = None if line == block else block
                continue
            if re.fullmatch(r"-{4,}|\.{4,}", line) and i + 1 < len(lines) and not _is_title(lines, i - 1):
                block = line
                continue
            if _is_title(lines, i) or (re.match(r"^\S.*::$", line) and not re.match(r"^\S.*::$", lines[i - 1])):
                end = i
                break
    else:
        for i in range(start + 2, len(lines)):
            if _is_title(lines, i):
                end = i
                break
    return start + 1, end


def _is_title(lines: list[str], i: int) -> bool:
    if i + 1 >= len(lines) or not re.search(r"\w", lines[i]) or lines[i][0] in " \t":
        return False
    under = lines[i + 1].rstrip()
    return bool(re.fullmatch(r"([=\-~^+])\1+", under)) and abs(len(under) - len(lines[i].rstrip())) <= 2


if __name__ == "__main__":
    main()
