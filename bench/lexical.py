"""BM25 engines at scale: SQLite FTS5 (kb 0.1) against tantivy (kb now), same passages.

    .venv/bin/python bench/lexical.py [--docs DIR] [--passages 1000000] [--cache DIR]

Builds both indexes over copies of kb's passages of a folder of real documents (about 75k
passages per copy of scale-docs), then times, single-threaded in one process:
- top 50 for a question (what kb asks each engine for), p50 and p95 over 140 questions:
  40 written as a user would ask, 100 of 3-6 words drawn from random passages;
- BM25 of 100 given passages for a question (kb's lexical score of the candidates only
  the dense search found).
FTS5 is set up exactly as kb 0.1 had it (external content table, porter stemmer,
`ORDER BY rank`; scoring given rows by filtering all matches, which kb 0.1 measured as
15x faster than `rowid IN (...)`). Quality is not measured here: `kb eval` and
bench/quality.py give SciFact lexical nDCG@10 for the engine kb uses.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402
from scale import QUESTIONS  # noqa: E402

from corpus import passages  # noqa: E402
from kb.store.lexical import STOPWORDS, LexicalIndex, LexicalWriter, query_terms  # noqa: E402


def fts5_build(path: Path, rows: list[dict], copies: int) -> float:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript("""
        CREATE TABLE passages(id INTEGER PRIMARY KEY, context TEXT, text TEXT);
        CREATE VIRTUAL TABLE passages_fts USING fts5(context, text, content='passages', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2');
        CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
            INSERT INTO passages_fts(rowid, context, text) VALUES (new.id, new.context, new.text);
        END;""")
    started = time.perf_counter()
    conn.execute("BEGIN")
    for copy in range(copies):
        conn.executemany("INSERT INTO passages(id, context, text) VALUES (?, ?, ?)",
                         ((copy * len(rows) + n + 1, r["ctx"], r["text"]) for n, r in enumerate(rows)))
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


def tantivy_build(path: Path, rows: list[dict], copies: int) -> float:
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    writer = LexicalWriter(path, None)
    writer.add((copy * len(rows) + n + 1, copy * len(rows) + n + 1, f"{r['ctx']}\n{r['text']}" if r["ctx"] else r["text"])
               for copy in range(copies) for n, r in enumerate(rows))
    writer.commit()
    return time.perf_counter() - started


def fts5_expression(question: str) -> str:
    words = dict.fromkeys(w for w in re.findall(r"\w+", question.lower()) if w not in STOPWORDS)
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def percentiles(run, questions) -> tuple[float, float]:
    for q in questions[:5]:
        run(q)
    times = []
    for q in questions:
        started = time.perf_counter()
        run(q)
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return round(statistics.median(times), 2), round(times[int(0.95 * len(times))], 2)


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--cache", default=None, help="where passages and both indexes are kept")
    args = parser.parse_args()
    from kb.embed.model import cache_dir

    print(machine.line())
    cache = Path(args.cache) if args.cache else cache_dir() / "bench" / "ann"
    rows = passages(Path(args.docs), cache)
    copies = max(1, round(args.passages / len(rows)))
    total = copies * len(rows)
    work = cache / f"lexical-{total}"
    work.mkdir(parents=True, exist_ok=True)
    built = {"fts5": fts5_build(work / "fts5.sqlite", rows, copies),
             "tantivy": tantivy_build(work / "tantivy", rows, copies)}
    print(f"{total} passages ({copies} copies of {len(rows)}); built in: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in built.items()))

    rng = random.Random(1)
    keyword = []
    while len(keyword) < 100:
        words = [w for w in re.findall(r"[A-Za-z]{4,}", rng.choice(rows)["text"]) if w.lower() not in STOPWORDS]
        if len(words) >= 4:
            keyword.append(" ".join(rng.sample(words, min(len(words), rng.randint(3, 6)))))
    questions = QUESTIONS + keyword
    candidates = rng.sample(range(1, total + 1), 100)

    conn = sqlite3.connect(work / "fts5.sqlite")
    lexical = LexicalIndex(work / "tantivy")

    def fts5_top(q):
        return conn.execute("SELECT rowid, -bm25(passages_fts) FROM passages_fts WHERE passages_fts MATCH ?"
                            " ORDER BY rank LIMIT 50", (fts5_expression(q),)).fetchall()

    def fts5_score(q):
        wanted = set(candidates)
        rows = conn.execute("SELECT rowid, -bm25(passages_fts) FROM passages_fts WHERE passages_fts MATCH ?",
                            (fts5_expression(q),))
        return {r: s for r, s in rows if r in wanted}

    results = {
        "fts5": {"top 50": percentiles(fts5_top, questions), "score 100 given": percentiles(fts5_score, questions),
                 "disk_mb": size_mb(work / "fts5.sqlite")},
        "tantivy": {"top 50": percentiles(lambda q: lexical.search(query_terms(q), 50), questions),
                    "score 100 given": percentiles(lambda q: lexical.score(query_terms(q), candidates), questions),
                    "disk_mb": size_mb(work / "tantivy")},
    }
    print(json.dumps(results))
    print("\n| engine | top 50, ms p50 / p95 | BM25 of 100 given passages, ms p50 / p95 | build, s | on disk, MB |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['top 50'][0]} / {r['top 50'][1]} | {r['score 100 given'][0]} / {r['score 100 given'][1]}"
              f" | {built[name]:.0f} | {r['disk_mb']} |")


if __name__ == "__main__":
    main()
