"""OCR text by content: what Tesseract read from an image, kept so it is read once.

OCR costs seconds a page, so like vectors (kb.store.database's embeddings, keyed by a
hash of the exact text the model read) OCR text is keyed by a hash of the exact pixels
Tesseract read, with the languages and Tesseract's version: a re-index, a --rebuild, a
moved or edited PDF whose other pages did not change never runs OCR on a page again.

The cache is its own small SQLite file beside the index (ocr-cache.sqlite), not a table
of kb.sqlite: it is written from the thread that reads files while the run's one writer
commits batches to kb.sqlite, and it outlives a rebuild. Each put commits at once, so a
killed run keeps every page it read.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

FILE = "ocr-cache.sqlite"


class OcrCache:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        self.conn.execute("CREATE TABLE IF NOT EXISTS ocr (key BLOB PRIMARY KEY, text TEXT NOT NULL) WITHOUT ROWID")
        self.hits = self.misses = 0

    def get(self, key: bytes) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT text FROM ocr WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0]

    def put(self, key: bytes, text: str) -> None:
        with self.lock:
            self.conn.execute("INSERT OR REPLACE INTO ocr(key, text) VALUES (?, ?)", (key, text))

    def close(self) -> None:
        with self.lock:
            self.conn.close()
