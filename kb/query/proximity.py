"""Term proximity: how many of the question's neighbouring words a passage holds near each other.

BM25 counts a passage's question words wherever they are; "exit code" and a passage saying
"exit with code 1" rank alike with one that has "exit" at its top and "code" at its end.
The sequential dependence model of information retrieval (Metzler and Croft, 2005) adds
evidence for each pair of neighbouring question terms found together within a window of 8
terms; kb does the same in its simplest form: the idf-weighted share of the question's
neighbouring term pairs that occur, in either order, within WINDOW terms of each other
in the passage (its headings and its text as BM25 reads them). A number in [0, 1].

It is scored for a question's best candidates only (kb.query.search, PROXIMITY_DEPTH):
it reorders the head of a ranking and needs the candidates' terms, which a tokenizer
pass gives for a few dozen passages in well under a millisecond.
Measured (bench/ranking_probe.py): SciFact train nDCG@10 0.7423 -> 0.7466, XQuAD hit@1
0.963 -> 0.966, documentation entry hit@1 0.456 -> 0.485 (hit@5 0.765 -> 0.750), the
article's hit@1 0.694 -> 0.667 (one question of 36).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Sequence

WINDOW = 8  # two terms are near when at most this many positions apart (SDM's unordered window)


def pairs(question_terms: Sequence[str]) -> list[tuple[str, str]]:
    """The question's neighbouring term pairs, in its order (stopwords already dropped)."""
    return [(a, b) for a, b in zip(question_terms, question_terms[1:]) if a != b]


def proximity(question_terms: Sequence[str], passage_terms: Sequence[str], idf: Callable[[str], float],
              window: int = WINDOW) -> float:
    """The idf-weighted share of the question's neighbouring pairs near each other here."""
    wanted = pairs(question_terms)
    weights = [idf(a) + idf(b) for a, b in wanted]
    total = sum(weights)
    if total <= 0:
        return 0.0
    places: dict[str, list[int]] = {}
    for n, term in enumerate(passage_terms):
        places.setdefault(term, []).append(n)
    found = sum(w for (a, b), w in zip(wanted, weights) if _near(places.get(a), places.get(b), window))
    return found / total


def _near(first: list[int] | None, second: list[int] | None, window: int) -> bool:
    if not first or not second:
        return False
    for x in first:  # positions are sorted: the nearest of the other term is beside x's place
        n = bisect_left(second, x)
        if (n < len(second) and second[n] - x <= window) or (n and x - second[n - 1] <= window):
            return True
    return False
