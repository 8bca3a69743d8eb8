"""Fuse ranked lists from several retrievers into one: pure functions on {id: score}.

Two families, both measured on SciFact train and XQuAD (bench/quality.py):
- reciprocal rank fusion: uses ranks only, so it needs no calibration, but its
  scores say nothing about how good a hit is;
- convex combination of scores already on a common [0, 1]-ish scale, either
  normalised per question (min-max) or absolute (cosine and kb.store.lexical's normalised
  BM25), which keeps the fused score comparable across questions.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence, TypeVar

Id = TypeVar("Id", bound=Hashable)

RRF_K = 60  # the constant of Cormack et al. (2009); larger flattens the rank curve


def rrf(rankings: Sequence[Sequence[Id]], k: int = RRF_K) -> dict[Id, float]:
    """Reciprocal rank fusion: sum over lists of 1 / (k + rank), ranks from 1."""
    fused: dict[Id, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


def min_max(scores: Mapping[Id, float]) -> dict[Id, float]:
    """Rescale to [0, 1] within one list; a list of equal scores maps to all 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {i: 1.0 for i in scores}
    return {i: (s - low) / (high - low) for i, s in scores.items()}


def convex(first: Mapping[Id, float], second: Mapping[Id, float], weight: float) -> dict[Id, float]:
    """weight * first + (1 - weight) * second over the union; a missing score counts as 0."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError("weight must be in [0, 1]")
    return {i: weight * first.get(i, 0.0) + (1.0 - weight) * second.get(i, 0.0) for i in {**first, **second}}


def ranked(scores: Mapping[Id, float]) -> list[tuple[Id, float]]:
    """(id, score) best first; ties broken by id so results are reproducible."""
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
