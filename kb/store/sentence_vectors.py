"""Sentence vectors, packed small: what the highlight and the ranking read of each passage.

At index time each passage of two or more sentences gets one vector per sentence, pooled
from the model's own token vectors of the passage (kb.embed.pooling.pool_spans), in the
same run that embeds the passage: no extra model time. They are stored beside the
passage's vector, under the same content key (kb.store.database), so whatever reuses a
vector (an unchanged part of an edited file, a moved file, a resumed run) reuses these.

One blob per passage: a header (sentences, dimension), the sentences' spans as int32
(start, end) pairs into the passage's text, one float32 scale per sentence, and the
vectors as int8 rows (x / scale, scale = max |x| / 127). 8-bit costs a cosine error of
about 0.002, a fifth of float16's bytes, well below anything that changes a pick.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

_HEADER = np.dtype("<u4")


def pack(spans: Sequence[tuple[int, int]], vectors: np.ndarray) -> bytes:
    """One blob of these spans and their (unit) vectors."""
    vectors = np.asarray(vectors, dtype=np.float32)
    count, dimension = vectors.shape
    scales = np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0
    rows = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    return b"".join((np.array([count, dimension], _HEADER).tobytes(),
                     np.asarray(spans, dtype="<i4").reshape(count, 2).tobytes(),
                     scales.astype("<f4").tobytes(), rows.tobytes()))


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(spans: int32 n x 2, vectors: float32 n x d, unit length up to rounding) of a blob."""
    spans, scales, rows = read(blob)
    return spans, rows.astype(np.float32) * scales[:, None]


def read(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spans int32 n x 2, scales float32 n, rows int8 n x d): views of the blob, no copy."""
    count, dimension = struct.unpack_from("<II", blob)
    spans = np.frombuffer(blob, "<i4", 2 * count, 8).reshape(count, 2)
    scales = np.frombuffer(blob, "<f4", count, 8 + 8 * count)
    rows = np.frombuffer(blob, np.int8, count * dimension, 8 + 12 * count).reshape(count, dimension)
    return spans, scales, rows


def cosines(read_blobs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], query: np.ndarray) -> list[np.ndarray]:
    """Each read blob's sentences' cosines with a unit query vector, in one product."""
    if not read_blobs:
        return []
    rows = np.concatenate([r for _, _, r in read_blobs]).astype(np.float32)
    # einsum, not BLAS: a small product must not wake a pool of BLAS threads.
    values = np.einsum("ij,j->i", rows, query) * np.concatenate([s for _, s, _ in read_blobs])
    return np.split(values, np.cumsum([len(s) for s, _, _ in read_blobs])[:-1])
