"""SQLite: the index's source of truth.

Documents (with size, mtime and content hash, so re-indexing can skip what did not
change), passages (text, offsets, lines), their vectors, and the settings that built
them. Everything else in an index folder can be derived from this file. WAL mode lets
`kb ask` read the last committed state while `kb index` writes the next one; a killed
writer leaves only an uncommitted transaction that SQLite discards.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import CorruptIndex, IndexMismatch

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    abspath TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    context TEXT NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    page INTEGER,
    record TEXT
);
CREATE INDEX IF NOT EXISTS passages_by_document ON passages(document_id);
CREATE TABLE IF NOT EXISTS vectors (
    passage_id INTEGER PRIMARY KEY REFERENCES passages(id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
-- BM25 over the same passages (kb.lexical). Triggers keep it in the transaction that
-- writes the passages, so the lexical index is never stale and needs no rebuild.
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    context, text, content='passages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS passages_fts_insert AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, context, text) VALUES (new.id, new.context, new.text);
END;
CREATE TRIGGER IF NOT EXISTS passages_fts_delete AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, context, text) VALUES ('delete', old.id, old.context, old.text);
END;
"""


@dataclass(frozen=True)
class StoredDocument:
    id: int
    abspath: str
    source: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class StoredPassage:
    id: int
    document_id: int
    source: str
    abspath: str
    size: int
    mtime_ns: int
    text: str
    context: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page: int | None
    record: str | None


class Store:
    """One connection to an index's SQLite file."""

    def __init__(self, path: Path, *, create: bool = False):
        self.path = path
        try:
            if not create:
                # mode=rw: never create an empty database by accident on a read path.
                self.conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None,
                                            check_same_thread=False)
            else:
                self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 10000")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if create:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.executescript(_SCHEMA)
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as e:
            raise CorruptIndex(f"index database {path} is unreadable ({e}); run `kb index --rebuild`") from None
        if version is None and create:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise IndexMismatch(
                f"index {path} has format {version}, this kb reads format {SCHEMA_VERSION}; run `kb index --rebuild`"
            )

    def close(self) -> None:
        self.conn.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # -- settings ---------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def all_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def reclaim_space(self, free_fraction: float = 0.25) -> bool:
        """VACUUM (outside any transaction) when deletes left over free_fraction of the file unused.

        SQLite keeps freed pages for reuse, so without this an index whose files were
        mostly deleted would never shrink on disk. Skipped after small changes, where
        rewriting the whole file would cost more than the space is worth.
        """
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free < 64 or free <= pages * free_fraction:
            return False
        self.conn.execute("VACUUM")
        return True

    # -- writes (call inside `with store.transaction():`) ------------------------
    def transaction(self) -> "_Transaction":
        return _Transaction(self.conn)

    def delete_documents(self, ids: Iterable[int]) -> None:
        self.conn.executemany("DELETE FROM documents WHERE id = ?", [(i,) for i in ids])

    def delete_all(self) -> None:
        self.conn.execute("DELETE FROM documents")

    def touch_document(self, doc_id: int, source: str, size: int, mtime_ns: int) -> None:
        self.conn.execute(
            "UPDATE documents SET source = ?, size = ?, mtime_ns = ? WHERE id = ?", (source, size, mtime_ns, doc_id)
        )

    def add_document(self, row: dict, passages: Sequence[dict], vectors: np.ndarray) -> int:
        """Insert a document with its passages and their vectors (one row per passage)."""
        self.conn.execute("DELETE FROM documents WHERE abspath = ?", (row["abspath"],))
        cur = self.conn.execute(
            "INSERT INTO documents(abspath, source, kind, size, mtime_ns, sha256, indexed_at)"
            " VALUES (:abspath, :source, :kind, :size, :mtime_ns, :sha256, :indexed_at)",
            row,
        )
        doc_id = cur.lastrowid
        ids = []
        for ordinal, p in enumerate(passages):
            cur = self.conn.execute(
                "INSERT INTO passages(document_id, ordinal, text, context, char_start, char_end,"
                " line_start, line_end, page, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, ordinal, p["text"], p["context"], p["char_start"], p["char_end"],
                 p["line_start"], p["line_end"], p["page"], p["record"]),
            )
            ids.append(cur.lastrowid)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.conn.executemany(
            "INSERT INTO vectors(passage_id, vector) VALUES (?, ?)", [(i, v.tobytes()) for i, v in zip(ids, vectors)]
        )
        return doc_id

    # -- reads --------------------------------------------------------------------
    def documents(self) -> dict[str, StoredDocument]:
        rows = self.conn.execute("SELECT id, abspath, source, size, mtime_ns, sha256 FROM documents")
        return {r[1]: StoredDocument(*r) for r in rows}

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        passages = self.conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
        return docs, passages

    def all_vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, vectors) for every stored passage, as numpy arrays."""
        rows = self.conn.execute("SELECT passage_id, vector FROM vectors ORDER BY passage_id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blob = b"".join(r[1] for r in rows)
        if len(blob) != len(rows) * dimension * 4:
            raise CorruptIndex(f"stored vectors in {self.path} do not have dimension {dimension}; run `kb index --rebuild`")
        return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)

    def passages(self, ids: Sequence[int]) -> dict[int, StoredPassage]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT p.id, p.document_id, d.source, d.abspath, d.size, d.mtime_ns, p.text, p.context,"
            " p.char_start, p.char_end, p.line_start, p.line_end, p.page, p.record"
            f" FROM passages p JOIN documents d ON d.id = p.document_id WHERE p.id IN ({marks})",
            [int(i) for i in ids],
        )
        return {r[0]: StoredPassage(*r) for r in rows}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
