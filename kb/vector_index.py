"""FAISS: exact inner-product search over the stored vectors, keyed by passage id.

Derived data: it can always be rebuilt from the SQLite store without re-embedding.
Vectors are unit length, so inner product is cosine similarity.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CorruptIndex


def build(ids: np.ndarray, vectors: np.ndarray):
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def write(index, path: Path) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    import faiss

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise CorruptIndex(f"vector index {path} is unreadable; run `kb index --rebuild` ({str(e).splitlines()[0][:80]})") from None


def search(index, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, passage ids) for each query row, best first; ids of -1 pad short rows.

    allowed: passage ids to search among (filtered inside FAISS, before the top k).
    """
    if index.ntotal == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    params = None
    if allowed is not None:
        import faiss

        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
    k = max(1, min(k, index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
