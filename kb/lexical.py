"""BM25 over the passages, with SQLite FTS5 (the `passages_fts` table in kb.sqlite).

Why FTS5 and not a separate engine: it lives in the same file and the same write
transaction as the passages (triggers in kb.store), so it is never stale, survives a
killed `kb index` for free, and costs no extra dependency. On SciFact it scored
within noise of bm25s with the same stemmer and stopwords (see bench/quality.py).

Scores. FTS5's bm25() is unbounded and depends on the question. `normalised` divides
it by the most any passage could score for that question (the sum over its terms of
idf * (k1 + 1), the limit of BM25's term-frequency saturation), giving a number in
[0, 1): the share of the question's term evidence a passage carries. That is what
makes lexical scores comparable across questions and fusable with cosine.
"""

from __future__ import annotations

import math
import re
import sqlite3
from typing import Iterable, Sequence

from .errors import CorruptIndex

K1 = 1.2  # FTS5's bm25() constants (fixed in SQLite)
B = 0.75

# A compact English stopword list (function words only): they carry no evidence but,
# OR-ed into an FTS5 query, make it match nearly every passage.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves s t don shall may might must also
""".split())

WORD = re.compile(r"\w+", re.UNICODE)  # what counts as a word, for queries and sentences


def query_terms(question: str) -> list[str]:
    """The question's distinct words, lower-cased, stopwords dropped (order kept)."""
    seen: dict[str, None] = {}
    for word in WORD.findall(question.lower()):
        if word not in STOPWORDS and word not in seen:
            seen[word] = None
    return list(seen)


def match_expression(terms: Sequence[str]) -> str:
    """An FTS5 query: any of the terms, each quoted so no word is read as syntax."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class Lexical:
    """BM25 search over one open index database."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        try:
            self.rows = conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
            conn.execute("SELECT rowid FROM passages_fts LIMIT 0")
        except sqlite3.OperationalError:
            raise CorruptIndex("this index has no lexical (BM25) table; run `kb index --rebuild`") from None
        self._idf: dict[str, float] = {}

    def ceiling(self, terms: Sequence[str]) -> float:
        """The most BM25 a passage could score for these terms (see module docstring).

        A term no passage contains counts as if one did: the question asked for it, so
        matching only its other words is partial evidence, not full marks. This is what
        lets paraphrased questions (whose words the corpus lacks) lean on the dense part.
        """
        return sum(self.idf(t) or self._idf_of(1) for t in terms) * (K1 + 1)

    def search(self, terms: Sequence[str], k: int, *, within: str = "", params: Sequence = ()) -> list[tuple[int, float]]:
        """(passage id, raw BM25 > 0), best first. `within` is an SQL condition on rowid."""
        if not terms or k < 1:
            return []
        sql = "SELECT rowid, -bm25(passages_fts) FROM passages_fts WHERE passages_fts MATCH ?"
        if within:
            sql += f" AND rowid IN ({within})"
        sql += " ORDER BY rank LIMIT ?"
        return [(int(r), float(s)) for r, s in self.conn.execute(sql, (match_expression(terms), *params, k))]

    def score(self, terms: Sequence[str], ids: Iterable[int]) -> dict[int, float]:
        """Raw BM25 of the given passages (those matching no term are absent)."""
        wanted = {int(i) for i in ids}
        if not terms or not wanted:
            return {}
        # Scoring every match and filtering here is ~15x faster than `AND rowid IN (...)`,
        # which FTS5 evaluates as one MATCH per listed id.
        rows = self.conn.execute(
            "SELECT rowid, -bm25(passages_fts) FROM passages_fts WHERE passages_fts MATCH ?", (match_expression(terms),))
        return {r: float(s) for r, s in rows if r in wanted}

    def idf(self, term: str) -> float:
        """FTS5's own idf: log((N - n + 0.5) / (n + 0.5)), floored at 1e-6; 0 for an unseen term."""
        if term not in self._idf:
            n = self.conn.execute(
                "SELECT COUNT(*) FROM passages_fts WHERE passages_fts MATCH ?", (match_expression([term]),)
            ).fetchone()[0]
            self._idf[term] = self._idf_of(n) if n else 0.0
        return self._idf[term]

    def _idf_of(self, n: int) -> float:
        return max(1e-6, math.log((self.rows - n + 0.5) / (n + 0.5)))
