"""The exact vectors of an IVF base, beside its compressed lists, memory-mapped.

The IVF lists hold 8-bit codes (a quarter of the bytes a question must scan), so their
scores are approximate. The answers' scores are not: the candidates a question gets are
re-scored from these float32 rows, and the vectors a hybrid question needs for its
lexical-only candidates come from here too. A lookup is a binary search in the sorted
ids and a read of the rows it finds: microseconds, against about a millisecond for the
same rows from SQLite (bench/scale.py's profile), and only the pages touched are read.

Two .npy files per base, derived from SQLite like the FAISS file and written with it:
`<base>.ids.npy` (int64, ascending) and `<base>.rows.npy` (float32, one row per id).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptIndex, io_failure
from .page_advice import ask_for_all, read_at_random


def file_names(base_file: str) -> tuple[str, str]:
    """(ids file, rows file) of the base file `vectors.<generation>.faiss`."""
    stem = base_file.removesuffix(".faiss")
    return f"{stem}.ids.npy", f"{stem}.rows.npy"


class ExactVectors:
    """Sorted passage ids and their float32 rows, both memory-mapped."""

    def __init__(self, ids: np.ndarray, rows: np.ndarray):
        # Plain views of the maps: np.memmap's indexing goes through slow Python.
        self.ids = np.asarray(ids)
        self.rows = np.asarray(rows)
        self._ids_map = getattr(ids, "_mmap", None)

    def prefetch_ids(self) -> None:
        """Ask the kernel for the whole ids file (8 MB at 1M passages), in the background.

        Finding a question's ~100 rows is a binary search per id, ~600 scattered pages of
        the ids at 1M passages: when the page cache lacks them, faulted in one by one, they
        took ~35 ms; asked for at once, the disk reads them in parallel. When the cache
        holds them, the advice costs ~0.1 ms."""
        ask_for_all(self._ids_map)

    @classmethod
    def open(cls, index_dir: Path, base_file: str, size: int, dimension: int, *,
             scattered: bool = True) -> "ExactVectors":
        """scattered: read a row here and there (questions), not front to back (compaction)."""
        ids_name, rows_name = file_names(base_file)
        try:
            ids = np.load(index_dir / ids_name, mmap_mode="r")
            rows = np.load(index_dir / rows_name, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise io_failure(e) or CorruptIndex(f"exact vectors of {base_file} are unreadable ({e}); "
                                                "run `kb index` to write them again from the database") from None
        if ids.shape != (size,) or rows.shape != (size, dimension) or ids.dtype != np.int64 or rows.dtype != np.float32:
            raise CorruptIndex(f"exact vectors of {base_file} do not match it; run `kb index --rebuild`")
        if scattered:
            for mapped in (ids, rows):
                read_at_random(mapped)
        return cls(ids, rows)

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the wanted ids found here, their rows' positions)."""
        wanted = np.asarray(wanted, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(len(wanted), bool), np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        found = self.ids[at] == wanted
        return found, at[found]

    def rescore(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact inner products of one query with these base passages (all must be here)."""
        found, at = self.find(ids)
        if not found.all():
            raise CorruptIndex(f"no exact vector for passage {ids[~found][0]}; run `kb index --rebuild`")
        # einsum, not BLAS: a small product must not wake a pool of BLAS threads.
        return np.einsum("ij,j->i", self.rows[at], query)


def write(index_dir: Path, base_file: str, chunks: Iterator[tuple[np.ndarray, np.ndarray]], size: int,
          dimension: int) -> None:
    """Stream (ids, vectors) chunks, ascending ids, into the two files, atomically each.

    Plain writes, not a writable memory map: a mapping's dirty pages would count in the
    indexing run's memory (1.5 GB at 1M passages)."""
    ids_name, rows_name = file_names(base_file)
    tmp_ids = index_dir / f".{ids_name}.{os.getpid()}.tmp"
    tmp_rows = index_dir / f".{rows_name}.{os.getpid()}.tmp"
    try:
        _write_both(tmp_ids, tmp_rows, chunks, size, dimension)
    except BaseException:
        tmp_ids.unlink(missing_ok=True)  # on a full disk, the space they took is wanted back
        tmp_rows.unlink(missing_ok=True)
        raise
    os.replace(tmp_ids, index_dir / ids_name)
    os.replace(tmp_rows, index_dir / rows_name)


def _write_both(tmp_ids: Path, tmp_rows: Path, chunks, size: int, dimension: int) -> None:
    written = 0
    last = -1
    with open(tmp_ids, "wb") as f_ids, open(tmp_rows, "wb") as f_rows:
        _header(f_ids, "<i8", (size,))
        _header(f_rows, "<f4", (size, dimension))
        for ids, vectors in chunks:
            ids = np.asarray(ids, dtype="<i8")
            if len(ids) and (ids[0] <= last or (np.diff(ids) <= 0).any()):
                raise ValueError("exact vectors must come in ascending id order")
            f_ids.write(ids.tobytes())
            f_rows.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            written += len(ids)
            last = int(ids[-1]) if len(ids) else last
        for f in (f_ids, f_rows):
            f.flush()
            os.fsync(f.fileno())
    if written != size:
        raise CorruptIndex(f"{written} exact vectors for a base of {size}; run `kb index --rebuild`")


def _header(f, descr: str, shape: tuple) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
