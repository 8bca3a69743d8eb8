"""Sentence vectors from one model run: the token vectors of a passage pooled per sentence.

A leaf of kb.embed: both embedders (ONNX and sentence-transformers) pool with it, so
neither needs the other.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pool_spans(tokens: np.ndarray, offsets: Sequence[tuple[int, int]], special: Sequence[int],
               spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """One unit vector per span (character offsets into the text the model read): the mean
    of the token vectors (the model's last hidden state, one row per token of the run) of
    the word pieces inside it, special tokens left out. A span none of whose pieces the
    model saw (past its window) gets a zero row, which matches nothing."""
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    dimension = tokens.shape[1]
    if not len(spans):
        return np.zeros((0, dimension), dtype=np.float32)
    where = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    keep = (np.asarray(special, dtype=bool) == 0) & (where[:, 1] > where[:, 0])
    vectors = np.asarray(tokens, dtype=np.float32)[: len(where)][keep]
    starts, ends = where[keep, 0], where[keep, 1]
    # Word pieces never straddle a span's edge (spans end at whitespace), and run in order:
    # each span holds one contiguous run of pieces, summed from a running total.
    first = np.searchsorted(starts, spans[:, 0], side="left")
    last = np.maximum(np.searchsorted(ends, spans[:, 1], side="right"), first)
    totals = np.vstack([np.zeros((1, dimension), np.float32), np.cumsum(vectors, axis=0, dtype=np.float32)])
    pooled = totals[last] - totals[first]
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.divide(pooled, norms, out=np.zeros_like(pooled), where=norms > 1e-12)
