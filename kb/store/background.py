"""kb's helper threads: work that overlaps a question's own, on the machine's other core.

A question spends most of its time where the GIL is let go (onnxruntime, tantivy, FAISS),
so a second thread's work (the lexical top k beside the embedding, the kernel asked for
the pages a scan is about to read) costs the question little or nothing.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

_helper: tuple[int, ThreadPoolExecutor] | None = None  # (the process that started it, it)
_helper_lock = threading.Lock()


def alongside(work: Callable[[], T]) -> Callable[[], T]:
    """Start work on kb's helper threads; returns a function that waits for its result.

    The threads start once per process (again in a forked child, which inherits none of
    them)."""
    global _helper
    helper = _helper
    if helper is None or helper[0] != os.getpid():
        with _helper_lock:
            if _helper is None or _helper[0] != os.getpid():
                # Three: a question's lexical top k and its two page prefetches run at once.
                _helper = (os.getpid(), ThreadPoolExecutor(3, thread_name_prefix="kb-helper"))
            helper = _helper
    return helper[1].submit(work).result
