"""Dense search with FAISS: exact for small indexes, inverted-file (IVF) above FLAT_MAX.

Vectors are unit length, so inner product is cosine similarity. Their truth is SQLite
(kb.store.database); everything here is derived and can be rebuilt without embedding anything.

A generation's vector index has three parts, so that a small change never rewrites a
big file:
- the base: a FAISS file, `vectors.<generation it was written in>.faiss`, opened with
  memory mapping (the first answer reads only the lists it probes, not the whole file).
  An IVF base stores 8-bit codes (SQ8: a question scans a quarter of the bytes, 3.7 vs
  7.0 ms at 1M passages) and keeps the exact float32 vectors beside it (kb.store.exact_vectors),
  from which every candidate is re-scored: scores are exact cosines at any size;
- the delta: passages added since the base was written (ids above its `max_id`), read
  from SQLite when the index is opened and searched exactly;
- the removed: base passages deleted since, which FAISS skips while searching (so k
  results still come back).
A run rewrites the base (compaction) only when the delta or the removed grow past
their limits, or the index crosses FLAT_MAX. Limits and IVF parameters were chosen
with bench/ann.py on real embeddings of real documentation.

Threads: one question is searched on one thread. Fanning a single query vector out to
OpenMP threads costs more than it saves, and on a busy machine much more.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from . import exact_vectors
from .background import alongside
from ..errors import CorruptIndex, first_line, io_failure
from .exact_vectors import ExactVectors
from .page_advice import AdviceGate, ListPrefetch

FLAT_MAX = 20_000  # passages up to which exact search is fastest (bench/ann.py)
DELTA_MAX = 10_000  # passages added since the base before it is rewritten
REMOVED_MAX = 0.10  # share of the base deleted before it is rewritten
TARGET_RECALL = 0.97  # recall@10 against exact search that nprobe is chosen for
EXACT_FILTER_MAX = 5_000  # a path filter matching fewer passages is searched exactly
PARALLEL_QUERIES = 16  # batches at least this big use every core
SMALL_MAX = 2_000  # an exact index up to this size is searched with numpy: no FAISS import
IVF_CODEC = "sq8"  # how an IVF base stores its lists: 8-bit scalar quantisation, one range per dimension
RESCORE_FACTOR = 2  # an IVF search takes this many times k by approximate score, re-scored exactly

Fetch = Callable[[np.ndarray], np.ndarray]  # passage ids -> their vectors, same order
Rows = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # -> (ids, vectors) chunks


@dataclass(frozen=True)
class VectorLayout:
    """What the index's meta table records about its vector index."""

    kind: str  # "flat" (exact) or "ivf"
    file: str | None  # the base file, in the index folder
    max_id: int  # passages with larger ids are the delta
    size: int  # vectors in the base file
    dimension: int
    nlist: int = 0  # IVF: lists (clusters)
    nprobe: int = 0  # IVF: lists searched per question
    codec: str = "flat"  # IVF: "sq8" (with exact vectors beside it), or "flat" (float32 lists, kb before 0.2)

    @property
    def exact_file(self) -> bool:
        """Whether exact vectors are kept beside the base (kb.store.exact_vectors)."""
        return self.kind == "ivf" and self.codec == "sq8" and bool(self.file)

    def files(self) -> list[str]:
        """Every file of the base, in the index folder."""
        if not self.file:
            return []
        return [self.file, *exact_vectors.file_names(self.file)] if self.exact_file else [self.file]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VectorLayout":
        return cls(**data)


SETTINGS = ("auto", "exact", "ivf")  # what `kb index --vector-index` accepts


def nlist_for(n: int) -> int:
    """IVF lists for n vectors: about 4 sqrt(n), a power of two (bench/ann.py), and never
    more than k-means can train from n vectors (39 per list, FAISS's minimum)."""
    return max(1, min(1 << max(6, round(math.log2(4 * math.sqrt(max(n, 1))))), n // 39))


def nprobe_for(nlist: int) -> int:
    """Lists searched per question. On 75k real passages (nlist 1024), 96 lists gave
    recall@10 0.977 for question-like queries and 0.995 for passage-like ones (bench/ann.py);
    bigger indexes need a smaller share of their lists for the same recall."""
    return min(nlist, max(96, nlist // 32))


def kind_for(live: int, setting: str, current: str | None = None) -> str:
    """"flat" or "ivf" for an index of `live` passages. In "auto", an IVF index stays IVF
    until it shrinks to half the threshold, so a folder hovering near it does not flip."""
    if setting == "exact":
        return "flat"
    if setting == "ivf":
        return "ivf"
    if current == "ivf":
        return "ivf" if live >= FLAT_MAX // 2 else "flat"
    return "ivf" if live >= FLAT_MAX else "flat"


class VectorIndex:
    """One generation's vectors, open for searching: base + delta - removed."""

    def __init__(self, layout: VectorLayout, base, delta_ids: np.ndarray, delta_vectors: np.ndarray,
                 removed: np.ndarray, fetch: Fetch, exact: ExactVectors | None = None):
        import faiss

        self.layout = layout
        self._base = base
        self._exact = exact
        self._delta = faiss.IndexIDMap2(faiss.IndexFlatIP(layout.dimension))
        if len(delta_ids):
            self._delta.add_with_ids(np.ascontiguousarray(delta_vectors, dtype=np.float32), delta_ids)
        self._removed = removed
        # Built once: a hash set of up to REMOVED_MAX of the base costs milliseconds.
        self._not_removed = faiss.IDSelectorNot(faiss.IDSelectorBatch(removed)) if len(removed) else None
        self._fetch = fetch
        self.size = (base.ntotal if base is not None else 0) - len(removed) + len(delta_ids)
        ivf = layout.kind == "ivf" and base is not None
        self._centroids = _centroids_in_memory(base) if ivf else None
        self._prefetch = ListPrefetch(base, AdviceGate()) if ivf else None

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, passage ids) per query row, best first; ids of -1 pad short rows.

        allowed: passage ids to search among (applied inside the search, before the top k).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, k)
        if allowed is not None and len(allowed) <= max(EXACT_FILTER_MAX, k):
            return _exact(queries, allowed, self.vectors(allowed), k)
        _threads(len(queries))
        parts = [self._search_base(queries, k, allowed)]
        if self._delta.ntotal:
            params = None
            if allowed is not None:
                import faiss

                params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            parts.append(self._delta.search(queries, min(k, self._delta.ntotal), params=params))
        return _merge(parts, k)

    def prefetch(self) -> None:
        """Start asking the kernel for what every question reads, whatever it asks (the
        exact vectors' ids), on a helper thread: it arrives while the question is embedded."""
        # Exact vectors exist only beside an IVF base; its lists' gate pauses both prefetches.
        if self._exact is not None and self._prefetch.gate.open():
            alongside(self._exact.prefetch_ids)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The exact stored vectors of these passages (from beside the base, else SQLite)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._exact is None:
            return self._fetch(ids)
        found, at = self._exact.find(ids)
        if found.all():
            return np.asarray(self._exact.rows[at])
        out = np.empty((len(ids), self.layout.dimension), np.float32)
        out[found] = self._exact.rows[at]
        out[~found] = self._fetch(ids[~found])
        return out

    def _search_base(self, queries, k, allowed):
        import faiss

        empty = (np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.int64))
        if self._base is None or self._base.ntotal == 0:
            return empty
        selector = faiss.IDSelectorBatch(allowed) if allowed is not None else self._not_removed
        if self.layout.kind == "ivf":
            nprobe = self.layout.nprobe
            if allowed is not None:  # a filter keeps a share of each list: probe more of them
                nprobe = min(self.layout.nlist, nprobe * math.ceil(self._base.ntotal / max(len(allowed), 1)))
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
        else:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
        wanted = min(k * (RESCORE_FACTOR if self._exact is not None else 1), self._base.ntotal)
        if self._centroids is not None:
            scores, ids = _search_lists(self._base, self._centroids, self._prefetch, queries, wanted, params)
        else:
            scores, ids = self._base.search(queries, wanted, params=params)
        if allowed is not None and self.layout.kind == "ivf" and (ids[:, : min(k, wanted)] < 0).any():
            # Too few of the allowed passages in the probed lists: search them exactly.
            return _exact(queries, allowed, self.vectors(allowed), k)
        if self._exact is not None:
            scores, ids = self._rescore(queries, ids, min(k, wanted))
        return scores, ids

    def _rescore(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The approximate candidates ranked by their exact cosine, top k."""
        scores = np.full((len(queries), k), -np.inf, np.float32)
        out = np.full((len(queries), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(queries, ids)):
            found = found[found >= 0]
            exact = self._exact.rescore(query, found)
            order = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(order)], out[row, : len(order)] = exact[order], found[order]
        return scores, out

    def describe(self) -> dict:
        """For `kb info`: the kind and its parameters."""
        info = {"kind": self.layout.kind, "vectors": self.size, "base": self.layout.size,
                "delta": int(self._delta.ntotal), "removed": int(len(self._removed))}
        if self.layout.kind == "ivf":
            info.update(nlist=self.layout.nlist, nprobe=self.layout.nprobe, codec=self.layout.codec)
        return info


class SmallIndex:
    """A small exact index held as one numpy matrix, read from SQLite's stored vectors.

    Importing FAISS costs ~0.1 s of a cold `kb ask`, more than searching a few thousand
    vectors takes; for these the FAISS file is not opened at all (same answers: exact
    cosine, filters applied before the top k)."""

    def __init__(self, layout: VectorLayout, ids: np.ndarray, vectors: np.ndarray):
        self.layout = layout
        self._ids = ids  # ascending, as Store.vector_rows gives them
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.size = len(ids)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = slice(None) if allowed is None else np.flatnonzero(np.isin(self._ids, allowed))
        ids, vectors = self._ids[rows], self._vectors[rows]
        k = min(max(1, k), len(ids))
        if not k:
            return np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.int64)
        # einsum, not BLAS: a small product must not wake a pool of BLAS threads.
        scores = np.einsum("ij,kj->ik", queries, vectors)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, axis=1), ids[np.take_along_axis(top, order, axis=1)]

    def prefetch(self) -> None:
        """Nothing to ask for: the vectors are in memory."""

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        wanted = np.asarray(ids, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self._ids, wanted), max(len(self._ids) - 1, 0))  # ids are sorted
        missing = wanted[self._ids[rows] != wanted] if len(self._ids) else wanted
        if len(missing):
            raise CorruptIndex(f"no stored vector for passage {missing[0]}; run `kb index --rebuild`")
        return self._vectors[rows]

    def describe(self) -> dict:
        return {"kind": self.layout.kind, "vectors": self.size, "base": self.layout.size, "delta": 0, "removed": 0}


def vectors_from_database(layout: VectorLayout) -> bool:
    """Whether open_index may search this layout from SQLite's vectors, never reading its
    FAISS file (it does when no base passage was removed since)."""
    return layout.kind == "flat" and layout.size <= SMALL_MAX


def open_index(index_dir: Path, layout: VectorLayout, delta: tuple[np.ndarray, np.ndarray],
               removed: np.ndarray, fetch: Fetch, everything: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
               ) -> VectorIndex | SmallIndex:
    """This generation's vectors, open for searching. everything: (ids, vectors) of every
    passage, for a small exact index to be searched without FAISS."""
    if everything is not None and vectors_from_database(layout) and not len(removed):
        ids, vectors = everything()
        if len(ids) != layout.size + len(delta[0]) or (len(vectors) and vectors.shape[1] != layout.dimension):
            raise CorruptIndex("stored vectors do not match the vector index; run `kb index --rebuild`")
        return SmallIndex(layout, ids, vectors)
    base = exact = None
    if layout.file:
        base = _read(index_dir / layout.file, mmap=layout.kind == "ivf")
        if base.d != layout.dimension:
            raise CorruptIndex(f"vector index {index_dir / layout.file} does not match its database; "
                               "run `kb index --rebuild`")
        if layout.exact_file:
            exact = ExactVectors.open(index_dir, layout.file, layout.size, layout.dimension)
    return VectorIndex(layout, base, delta[0], delta[1], removed, fetch, exact)


def empty_rows(dimension: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros((0, dimension), np.float32)


def concat_rows(chunks: Iterator[tuple[np.ndarray, np.ndarray]], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    parts = list(chunks)
    if not parts:
        return empty_rows(dimension)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# -- writing ------------------------------------------------------------------------
def needs_rewrite(layout: VectorLayout | None, live: int, delta: int, removed: int, setting: str = "auto") -> bool:
    """Whether this generation must write a new base file (see module docstring)."""
    if layout is None or layout.kind == "flat":
        return True  # exact indexes are small: rewriting is cheaper than keeping a delta
    if kind_for(live, setting, layout.kind) != layout.kind or layout.codec != IVF_CODEC:
        return True  # another kind, or lists an older kb wrote
    return delta > DELTA_MAX or removed > REMOVED_MAX * max(layout.size, 1) or nlist_for(live) > 2 * layout.nlist


def write_base(index_dir: Path, generation: int, dimension: int, live: int, max_id: int, rows: Rows,
               previous: VectorLayout | None, removed: np.ndarray, delta: Rows, setting: str = "auto") -> VectorLayout:
    """Write this generation's base file, holding every live passage; returns its layout.

    live and max_id: how many passages the index holds and the largest id. An IVF base
    whose lists still suit the index size is updated (removed taken out, delta added)
    rather than rebuilt: no re-training, no re-assigning the base. An IVF base's exact
    vectors are written beside it (kb.store.exact_vectors), before the caller commits.
    """
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _steady_malloc()
    name = f"vectors.{generation}.faiss"
    if kind_for(live, setting, previous.kind if previous else None) == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        for ids, vectors in rows():
            index.add_with_ids(vectors, ids)
        _check_size(index, live)
        write(index, index_dir / name)
        return VectorLayout("flat", name, max_id, int(index.ntotal), dimension)
    if previous is not None and previous.exact_file and nlist_for(live) <= 2 * previous.nlist:
        index = _read(index_dir / previous.file, mmap=False)
        if len(removed):
            index.remove_ids(faiss.IDSelectorBatch(removed))
        nlist, nprobe = previous.nlist, previous.nprobe
        kept = ExactVectors.open(index_dir, previous.file, previous.size, dimension, scattered=False)
        exact = _kept_then(kept, removed, _adding(index, delta()))
    else:
        nlist, nprobe = nlist_for(live), nprobe_for(nlist_for(live))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dimension), dimension, nlist,
                                              faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False  # codes of the vectors themselves: the scan is one pass over bytes
        index.cp.niter = 10  # k-means iterations: recall was flat beyond 10 (bench/ann.py)
        index.cp.min_points_per_centroid = 1  # nlist_for keeps 39+ per list; small forced indexes: no stderr warning
        index.train(_training_sample(rows, live, 64 * nlist))
        exact = _adding(index, rows())
    # One pass: each chunk goes into the lists and, as it is, into the exact file.
    exact_vectors.write(index_dir, name, exact, live, dimension)
    _check_size(index, live)
    write(index, index_dir / name)
    return VectorLayout("ivf", name, max_id, int(index.ntotal), dimension, nlist, nprobe, IVF_CODEC)


def _check_size(index, live: int) -> None:
    if index.ntotal != live:
        raise CorruptIndex(f"the vector index would hold {index.ntotal} vectors for {live} passages; "
                           "run `kb index --rebuild`")


def _adding(index, chunks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The chunks as they come, each added to the index on the way."""
    for ids, vectors in chunks:
        index.add_with_ids(vectors, ids)
        yield ids, vectors


def _kept_then(kept: ExactVectors, removed: np.ndarray, delta: Iterator[tuple[np.ndarray, np.ndarray]],
               chunk: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The previous base's exact vectors less the removed, then the delta's (larger ids)."""
    for at in range(0, len(kept.ids), chunk):
        ids = np.asarray(kept.ids[at : at + chunk])
        keep = ~np.isin(ids, removed) if len(removed) else slice(None)
        yield ids[keep], np.asarray(kept.rows[at : at + chunk])[keep]
    yield from delta


def _steady_malloc() -> None:
    """Keep glibc from fragmenting the heap while IVF lists grow.

    glibc raises its mmap threshold each time a large block is freed, so once lists have
    grown a few times their buffers come from the heap, whose freed blocks it cannot give
    back: a 1M-passage build peaked at 1.55x the index's own size. A fixed threshold keeps
    every large buffer in a mapping of its own, returned when freed (peak 1.24x; measured
    by sampling RSS through the build). Other C libraries: nothing to do.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, glibc's default value
    except (OSError, AttributeError):
        pass


def _training_sample(rows: Rows, live: int, wanted: int) -> np.ndarray:
    """Every n-th vector, about `wanted` of them: spread over the whole corpus.

    Filled in place, one chunk at a time: the sample is all that stays in memory."""
    step = max(1, live // wanted)
    sample: np.ndarray | None = None
    filled = 0
    for _, vectors in rows():
        picked = vectors[::step][: wanted - filled]
        if sample is None:
            sample = np.empty((min(wanted, -(-live // step)), vectors.shape[1]), dtype=np.float32)
        sample[filled : filled + len(picked)] = picked
        filled += len(picked)
        if filled >= len(sample):
            break
    return sample[:filled] if sample is not None else np.zeros((0, 0), np.float32)


def write(index, path: Path) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    import faiss

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # on a full disk, the space it took is wanted back
        raise


def _read(path: Path, *, mmap: bool):
    import faiss

    try:
        # MMAP_IFC maps the lists in place (zero-copy views of the file). The older
        # IO_FLAG_MMAP turns them into OnDiskInvertedLists, whose per-list locking made a
        # search 2-3x slower (bench: 5.4 vs 2.1 ms per question at 186k passages).
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0)
    except RuntimeError as e:  # FAISS says why in words: too many open files is not damage
        raise io_failure(e, path) or CorruptIndex(
            f"vector index {path} is unreadable; run `kb index` to write it again from the database "
            f"({first_line(e, 80)})") from None


# -- search helpers --------------------------------------------------------------------
def _centroids_in_memory(base):
    """A copy of an IVF base's coarse quantizer (its list centroids) in process memory.

    Every question scans all the centroids (6 MB at 1M passages). Inside the mapped file
    they are pages the kernel may drop while the process waits between questions (a
    machine that pages out idle memory, or one short of it), and reading them back cost
    60-90 ms per question; held here they cost that once, when the index opens."""
    import faiss

    quantizer = faiss.extract_index_ivf(base).quantizer
    copy = faiss.IndexFlat(quantizer.d, quantizer.metric_type)
    copy.add(quantizer.reconstruct_n(0, quantizer.ntotal))
    return copy


def _search_lists(base, centroids, prefetch: Callable[[np.ndarray], None], queries: np.ndarray, k: int, params):
    """IndexIVF.search, with the lists to probe chosen by the in-memory centroids (the same
    two steps, so the same results: FAISS's own search_preassigned), and the kernel asked
    for those lists' pages, on a helper thread, while FAISS scans them."""
    import faiss

    ivf = faiss.extract_index_ivf(base)
    coarse_scores, lists = centroids.search(queries, params.nprobe)
    prefetched = alongside(lambda: prefetch(lists))
    scores = np.empty((len(queries), k), np.float32)
    ids = np.empty((len(queries), k), np.int64)
    ivf.search_preassigned_c(len(queries), faiss.swig_ptr(queries), k, faiss.swig_ptr(lists),
                             faiss.swig_ptr(coarse_scores), faiss.swig_ptr(scores), faiss.swig_ptr(ids), False,
                             params)
    prefetched()  # a question leaves nothing running behind it
    return scores, ids


def _threads(queries: int) -> None:
    import faiss

    faiss.omp_set_num_threads(1 if queries < PARALLEL_QUERIES else (os.cpu_count() or 1))


def _exact(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int):
    """Exact top k over the given vectors (FAISS's own kernels: no BLAS thread pool)."""
    import faiss

    if not len(ids):
        return np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.int64)
    _threads(len(queries))
    scores, rows = faiss.knn(queries, np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(ids)),
                             metric=faiss.METRIC_INNER_PRODUCT)
    return scores, np.where(rows >= 0, np.asarray(ids)[np.maximum(rows, 0)], -1)


def _merge(parts, k: int):
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
    return scores, np.where(np.isinf(scores), -1, ids)
