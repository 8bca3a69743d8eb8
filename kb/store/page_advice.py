"""Telling the kernel how kb will read its memory-mapped files.

What a question reads is scattered over big files (IVF lists, exact vectors, their ids).
When the page cache holds them, none of this matters. When it lacks them (after a reboot,
after other work took the memory, or on a machine that pages out idle memory), each page
fault reads from disk one after another, with readahead around it: the advice here makes
the disk read what is needed, only that, and in parallel (bench/cold_pages.py).
"""

from __future__ import annotations

import mmap
import time
from typing import Callable

import numpy as np

QUIET_SECONDS = 1.0  # after advice that found every page in memory, this long without advising
RESIDENT_US = 20.0  # microseconds a range of advice takes at most when its pages are all in memory


class AdviceGate:
    """Whether a question should advise the kernel at all.

    Advice costs the helper thread ~5 us a list when the pages are in memory (~0.7 ms a
    question at 1M passages), which a busy machine takes from the question itself: with
    one core kept busy, warm questions took 1-1.3 ms longer. Pages that were all in memory
    a moment ago still are, so after advice that found them there (fast: no reads to
    start), the next QUIET_SECONDS of questions skip it (a stream of questions advises
    about once a second); the first question after a pause (when a machine may have paged
    the index out) advises again. Pages lost within that second are read as before the
    advice existed: fault by fault."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._quiet_until = float("-inf")

    def open(self) -> bool:
        return self._clock() >= self._quiet_until

    def advised(self, ranges: int, seconds: float) -> None:
        """What one round of advice took."""
        if ranges and seconds < ranges * RESIDENT_US * 1e-6:
            self._quiet_until = self._clock() + QUIET_SECONDS


class ListPrefetch:
    """Asks the kernel for a question's IVF lists all at once (madvise WILLNEED).

    A question reads 128 lists at 1M passages (13 MB), scattered over the mapped file.
    When the page cache lacks them, FAISS faulted them in one after another, and the
    scan took 130-190 ms; asked for together, the disk serves them in parallel, and
    asking plus scanning took 20-30 ms (bench/cold_pages.py). When the cache holds them,
    the advice finds every page there: ~5 us a list, on a helper thread, and the gate
    then spares the next few seconds of questions from advising.

    Where a list lies comes from FAISS's own pointers into the mapping, read the first
    time the list is probed (a few microseconds) and kept."""

    def __init__(self, base, gate: AdviceGate):
        import faiss

        self._base = base  # owns the lists and their mapping
        self._lists = faiss.extract_index_ivf(base).invlists
        self._places: dict[int, tuple[tuple[int, int], ...]] = {}  # list -> (address, length) ranges
        self._madvise = _willneed()
        self.gate = gate

    def __call__(self, lists: np.ndarray) -> None:
        if self._madvise is None or not self.gate.open():
            return
        started, advised = time.perf_counter(), 0
        places = self._places
        probed = lists.ravel()
        if len(lists) > 1:  # a batch: each list once, in the order the scan first needs it
            _, first = np.unique(probed, return_index=True)
            probed = probed[np.sort(first)]
        for n in probed.tolist():
            ranges = places.get(n)
            if ranges is None:
                if n < 0:
                    continue
                ranges = places[n] = self._place(n)
            for address, length in ranges:
                self._madvise(address, length)
            advised += len(ranges)
        self.gate.advised(advised, time.perf_counter() - started)

    def _place(self, n: int) -> tuple[tuple[int, int], ...]:
        size = self._lists.list_size(n)
        if not size:
            return ()
        codes, ids = int(self._lists.get_codes(n)), int(self._lists.get_ids(n))
        code_bytes = size * self._lists.code_size
        if ids == codes + code_bytes:  # how FAISS lays out a mapped file: codes, then ids
            return (_pages(codes, code_bytes + 8 * size),)
        return _pages(codes, code_bytes), _pages(ids, 8 * size)


def _pages(address: int, length: int) -> tuple[int, int]:
    """The page-aligned range madvise needs."""
    start = address & ~(mmap.PAGESIZE - 1)
    return start, address + length - start


def _willneed() -> Callable[[int, int], int] | None:
    """madvise(address, length, MADV_WILLNEED) where the platform has it, else None."""
    import ctypes

    advice = getattr(mmap, "MADV_WILLNEED", None)
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    if advice is None:
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return lambda address, length: madvise(address, length, advice)  # advice only: errors are ignored


def read_at_random(mapped: np.memmap) -> None:
    """Tell the kernel this mapping is read a page here and there, never in runs.

    A question reads ~100 rows and binary-searches the ids for them, scattered over the
    files. When the page cache lacks them (a cold machine; one that pages out idle
    memory), each fault would otherwise read ahead up to 128 KB around its page: at 1M
    passages that made the re-scoring of one question read ~30 MB and take 0.5-1 s,
    against ~40 ms reading only the pages touched (bench/cold_pages.py)."""
    _advise(getattr(mapped, "_mmap", None), "MADV_RANDOM")


def ask_for_all(mapped: mmap.mmap | None) -> None:
    """Ask the kernel for every page of this mapping, in the background."""
    _advise(mapped, "MADV_WILLNEED")


def _advise(mapped: mmap.mmap | None, advice: str) -> None:
    """mapped.madvise(advice) where the platform and the mapping have it."""
    if mapped is not None and hasattr(mmap, advice):
        mapped.madvise(getattr(mmap, advice))
