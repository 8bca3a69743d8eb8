"""SQLite: the index's source of truth.

Documents (with size, mtime and content hash, so re-indexing can skip what did not
change), passages (text, offsets, lines), the vectors, and the settings that built them.
Everything else in an index folder (the FAISS and tantivy files) is derived from this
file and named in its meta table. WAL mode lets `kb ask` read the last committed state
while `kb index` writes the next one; a killed writer leaves only an uncommitted
transaction, which SQLite discards.

A reader that cannot write the folder (a read-only mount, an image layer, another
user's index) cannot create the -shm file WAL readers share, and SQLite refuses it
("attempt to write a readonly database", "unable to open database file") unless the
owner's writer is running and has made it. It then opens the file immutable: nothing
is written, no lock is taken; it notices a new generation by the file's identity,
size and time instead of PRAGMA data_version.

Vectors are stored by content: `embeddings` maps a hash of the exact text the model
read to its vector. A passage whose text was embedded before (in an unchanged part of
an edited file, in a moved file, in a run that was killed) costs a lookup, not a model
call. A run's work is committed batch by batch into `embeddings` and the staging tables,
which no reader looks at; the index readers see changes only with the run's final commit
(kb.ingest.pipeline).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from urllib.parse import quote

from ..errors import CorruptIndex, IndexMismatch, classify

SCHEMA_VERSION = 3  # 3: sentence vectors (kb.store.sentence_vectors)
READABLE_VERSIONS = (2, SCHEMA_VERSION)  # a format-2 index reads and updates without them
PAGE_SIZE = 8192
READ_MMAP_BYTES = 1 << 40  # readers map as much of the file as SQLite allows (see Store)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- AUTOINCREMENT: ids are never reused, so an id in a derived file means one thing forever.
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    abspath TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    context TEXT NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    page INTEGER,
    record TEXT,
    vector_key BLOB NOT NULL,
    location TEXT,
    indexed TEXT  -- what is embedded and BM25-indexed, when not the text (kb.ingest.passages)
);
CREATE INDEX IF NOT EXISTS passages_by_document ON passages(document_id);
CREATE INDEX IF NOT EXISTS passages_by_vector_key ON passages(vector_key);
-- run: the `kb index` run that embedded it (a resumed --rebuild trusts only its own).
CREATE TABLE IF NOT EXISTS embeddings (
    key BLOB PRIMARY KEY,
    vector BLOB NOT NULL,
    run INTEGER NOT NULL
) WITHOUT ROWID;
-- Sentence vectors of an embedded text (kb.store.sentence_vectors), under its embeddings key:
-- they come and go with its vector. A rowid table: a blob of a few KB stays in its row.
CREATE TABLE IF NOT EXISTS sentences (key BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS embeddings_removed AFTER DELETE ON embeddings BEGIN
    DELETE FROM sentences WHERE key = old.key;
END;
-- Passages deleted since the vector index's base file was written (kb.store.vector_index).
CREATE TABLE IF NOT EXISTS removed_passages (passage_id INTEGER PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS passages_removed AFTER DELETE ON passages BEGIN
    INSERT OR IGNORE INTO removed_passages(passage_id) VALUES (old.id);
END;
-- A run's read, chunked and embedded documents, waiting for its final commit.
CREATE TABLE IF NOT EXISTS staged_documents (
    abspath TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    chunking TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS staged_passages (
    abspath TEXT NOT NULL REFERENCES staged_documents(abspath) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    context TEXT NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    page INTEGER,
    record TEXT,
    vector_key BLOB NOT NULL,
    location TEXT,
    indexed TEXT,
    PRIMARY KEY (abspath, ordinal)
);
-- Files the last published run could not index, with why (`kb info --skipped`).
-- file: the whole file's source (a skipped page of an indexed PDF names its file here).
CREATE TABLE IF NOT EXISTS skipped_files (
    source TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    reason TEXT NOT NULL,
    category TEXT NOT NULL
);
"""

_PASSAGE_COLUMNS = ("ordinal, text, context, char_start, char_end, line_start, line_end, page, record, vector_key,"
                    " location, indexed")
_PASSAGE_MARKS = ", ".join("?" * (1 + _PASSAGE_COLUMNS.count(",") + 1))  # abspath, then each column
# Columns added to a table after format 2 was released: a writer adds them to an older
# file (ALTER TABLE, no rebuild); a reader of an older file reads them as NULL.
_ADDED_COLUMNS = {"passages": {"location": "TEXT", "indexed": "TEXT"},
                  "staged_passages": {"location": "TEXT", "indexed": "TEXT"}}


def vector_key(text: str) -> bytes:
    """The embeddings key of a text: 16 bytes of BLAKE2b of exactly what the model reads."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@dataclass(frozen=True)
class StoredDocument:
    id: int
    abspath: str
    source: str
    size: int
    mtime_ns: int
    sha256: str


class PassageSpan(NamedTuple):
    """Where a passage sits in its document (a tuple: a question reads ~100 of them)."""

    id: int
    document_id: int
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page: int | None
    record: str | None
    location: str | None = None


@dataclass(frozen=True)
class StagedDocument:
    abspath: str
    source: str
    size: int
    mtime_ns: int
    sha256: str
    chunking: dict


class Store:
    """One connection to an index's SQLite file."""

    def __init__(self, path: Path, *, create: bool = False):
        self.path = path
        self.immutable = False
        try:
            if not create:
                self.conn = self._connect_reader(path)
            else:
                self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 10000")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if not create:
                self.map_file(True)
                self.conn.execute("PRAGMA cache_size = -65536")  # beyond the mapped part
            if create:
                # A new file gets 8 KB pages: a stored vector (1.5 KB at 384 dimensions) then
                # fits in its row of the WITHOUT ROWID embeddings table, where 4 KB pages
                # push every row to an overflow page (4.4 KB on disk per vector, not 1.6).
                # No effect on an existing file. Must come before WAL mode.
                self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA cache_size = -65536")  # 64 MB: big runs touch many pages
                version = self.get_meta("schema_version") if self._has_meta() else None
                if version not in (None, *READABLE_VERSIONS):
                    raise IndexMismatch(f"index {path} has format {version}, this kb writes format "
                                        f"{SCHEMA_VERSION}; run `kb index --rebuild`")
                self.conn.executescript(_SCHEMA)
                self._add_columns()
            version = self.get_meta("schema_version")
        except sqlite3.Error as e:
            error = classify(e, path.parent)
            if isinstance(error, CorruptIndex):
                raise CorruptIndex(f"index database {path} is unreadable ({e}); run `kb index --rebuild`") from None
            raise error from None
        if create and version != SCHEMA_VERSION:
            self.set_meta("schema_version", SCHEMA_VERSION)  # new, or format 2 given its sentences table
            version = SCHEMA_VERSION
        if version not in READABLE_VERSIONS:
            raise IndexMismatch(
                f"index {path} has format {version}, this kb reads format {SCHEMA_VERSION}; run `kb index --rebuild`"
            )
        self.has_sentences = version >= 3

    def _connect_reader(self, path: Path) -> sqlite3.Connection:
        # mode=rw: never create an empty database by accident on a read path.
        uri = f"file:{quote(str(path))}"
        conn = sqlite3.connect(f"{uri}?mode=rw", uri=True, isolation_level=None, check_same_thread=False)
        if os.access(path.parent, os.W_OK):
            return conn
        # A folder this process cannot write. While the owner's writer runs, its -shm and
        # -wal exist, and a plain read-only connection reads them (committed pages still
        # in the WAL included); otherwise only an immutable one can read at all.
        for mode in ("ro", None):
            try:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return conn
            except sqlite3.OperationalError as e:  # no -shm can be made here (module docstring)
                if (getattr(e, "sqlite_errorcode", 14) & 0xFF) not in (8, 14):  # SQLITE_READONLY, SQLITE_CANTOPEN
                    raise
                conn.close()
            if mode:
                conn = sqlite3.connect(f"{uri}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False)
        self.immutable = True
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False)

    def _add_columns(self) -> None:
        """An index written before a column existed gets it (NULL: nothing to say, or the
        text itself for `indexed`)."""
        for table, columns in _ADDED_COLUMNS.items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _column(self, table: str, name: str) -> str:
        """name, or NULL when this (older) file's table lacks that column."""
        if not hasattr(self, "_columns"):
            self._columns = {t: {r[1] for r in self.conn.execute(f"PRAGMA table_info({t})")}
                             for t in _ADDED_COLUMNS}
        return name if name in self._columns.get(table, {name}) else "NULL"

    def map_file(self, mapped: bool) -> None:
        """Whether this reader maps the file (SQLite caps the map at 2 GB unless built otherwise).

        Mapped, a question's few hundred page reads are memory reads, not pread calls into
        a 2 MB cache: 1.3 -> 0.6 ms for the vectors of 50 candidates at 186k passages. An
        index whose vectors sit beside its IVF base reads a few dozen rows per question from
        here, and then a mapping costs more than it saves: when the page cache lacks them
        (a cold machine; one that pages out idle memory), each fault reads ahead up to 128 KB
        around its page, and the rows of one question took 180 ms to read at 186k passages,
        against 9 ms read by pread (bench/cold_pages.py); when it holds them, the two are
        alike (1.0-1.2 ms)."""
        self.conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES if mapped else 0}")

    def _has_meta(self) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None

    def close(self) -> None:
        self.conn.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version; for
        an immutable reader, the identity, size and time of the file and its WAL)."""
        if self.immutable:
            signature = []
            for name in (self.path, Path(f"{self.path}-wal")):
                try:
                    st = os.stat(name)
                    signature += [st.st_ino, st.st_size, st.st_mtime_ns]
                except FileNotFoundError:
                    signature += [0, 0, 0]
            return hash(tuple(signature))
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

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one committed state, whatever writers commit meanwhile
        (a WAL read transaction): what a question reads from SQLite matches the
        generation of the FAISS and tantivy files it searched."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")

    def delete_documents(self, ids: Iterable[int]) -> None:
        self.conn.executemany("DELETE FROM documents WHERE id = ?", [(i,) for i in ids])

    def delete_all(self) -> None:
        """Every document and passage, and the vectors (a rebuild embeds everything again)."""
        for table in ("documents", "passages", "sentences", "embeddings", "removed_passages", "staged_documents",
                      "staged_passages"):
            self.conn.execute(f"DELETE FROM {table}")

    def touch_document(self, doc_id: int, source: str, size: int, mtime_ns: int) -> None:
        self.conn.execute(
            "UPDATE documents SET source = ?, size = ?, mtime_ns = ? WHERE id = ?", (source, size, mtime_ns, doc_id)
        )

    def clear_removed(self) -> None:
        self.conn.execute("DELETE FROM removed_passages")

    # -- the embeddings cache ----------------------------------------------------
    def known_keys(self, keys: Sequence[bytes], *, since: int = 0) -> set[bytes]:
        """Which of these keys have a stored vector (embedded in run `since` or later)."""
        found: set[bytes] = set()
        for at in range(0, len(keys), 500):
            chunk = list(keys[at : at + 500])
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(
                f"SELECT key FROM embeddings WHERE key IN ({marks}) AND run >= ?", [*chunk, since]))
        return found

    def add_embeddings(self, keys: Sequence[bytes], vectors: np.ndarray, *, run: int,
                       sentences: Sequence[bytes | None] | None = None) -> None:
        """Store vectors (and the packed sentence vectors of those that have them)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.conn.executemany(
            "INSERT INTO embeddings(key, vector, run) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET vector = excluded.vector, run = excluded.run",
            [(k, v.tobytes(), run) for k, v in zip(keys, vectors)])
        if sentences is not None:
            self.conn.executemany("INSERT OR REPLACE INTO sentences(key, data) VALUES (?, ?)",
                                  [(k, s) for k, s in zip(keys, sentences) if s is not None])

    def prune_embeddings(self, keys: Iterable[bytes] | None = None, *, since_run: int | None = None) -> int:
        """Drop vectors no passage (live or staged) uses: those of `keys`, those embedded
        in run `since_run` or later, or (neither given) all of them."""
        unused = ("NOT EXISTS (SELECT 1 FROM passages p WHERE p.vector_key = embeddings.key)"
                  " AND NOT EXISTS (SELECT 1 FROM staged_passages s WHERE s.vector_key = embeddings.key)")
        if since_run is not None:
            return self.conn.execute(f"DELETE FROM embeddings WHERE run >= ? AND {unused}", (since_run,)).rowcount
        if keys is None:
            return self.conn.execute(f"DELETE FROM embeddings WHERE {unused}").rowcount
        return sum(self.conn.execute(f"DELETE FROM embeddings WHERE key = ? AND {unused}", (k,)).rowcount
                   for k in set(keys))

    def embedding_counts(self) -> tuple[int, int]:
        """(vectors stored, vectors no live passage uses): what `kb info` shows of the cache."""
        total = self.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        used = self.conn.execute("SELECT COUNT(DISTINCT vector_key) FROM passages").fetchone()[0]
        return total, total - used

    # -- staging -------------------------------------------------------------------
    def staged_documents(self) -> dict[str, StagedDocument]:
        rows = self.conn.execute("SELECT abspath, source, size, mtime_ns, sha256, chunking FROM staged_documents")
        return {r[0]: StagedDocument(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows}

    def stage_document(self, row: dict, chunking: dict, passages: Sequence[dict], first: int = 0) -> None:
        """Stage a document and its passages. A long document may come in parts: the
        first (first=0) stages it, each later one (first: its first passage's ordinal)
        adds passages and sets chunking; a part before the last should carry a chunking
        no run matches, so a killed run's half-staged document is read again."""
        if first == 0:
            self.conn.execute("DELETE FROM staged_documents WHERE abspath = ?", (row["abspath"],))
            self.conn.execute(
                "INSERT INTO staged_documents(abspath, source, kind, size, mtime_ns, sha256, chunking)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["abspath"], row["source"], row["kind"], row["size"], row["mtime_ns"], row["sha256"],
                 json.dumps(chunking)))
        else:
            self.conn.execute("UPDATE staged_documents SET chunking = ? WHERE abspath = ?",
                              (json.dumps(chunking), row["abspath"]))
        self.conn.executemany(
            f"INSERT INTO staged_passages(abspath, {_PASSAGE_COLUMNS}) VALUES ({_PASSAGE_MARKS})",
            [(row["abspath"], n, p["text"], p["context"], p["char_start"], p["char_end"], p["line_start"],
              p["line_end"], p["page"], p["record"], p["vector_key"], p.get("location"), p.get("indexed"))
             for n, p in enumerate(passages, start=first)])

    def unstage(self, abspaths: Iterable[str] | None = None) -> None:
        if abspaths is None:
            self.conn.execute("DELETE FROM staged_passages")
            self.conn.execute("DELETE FROM staged_documents")
            return
        self.conn.executemany("DELETE FROM staged_documents WHERE abspath = ?", [(a,) for a in abspaths])

    def staged_passage_count(self, abspath: str) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM staged_passages WHERE abspath = ?", (abspath,)).fetchone()[0]

    def publish_staged(self, abspaths: Sequence[str], source_of: dict[str, str], indexed_at: str) -> None:
        """Move these staged documents and their passages into the index (new ids)."""
        for abspath in abspaths:
            self.conn.execute("DELETE FROM documents WHERE abspath = ?", (abspath,))
            cur = self.conn.execute(
                "INSERT INTO documents(abspath, source, kind, size, mtime_ns, sha256, indexed_at)"
                " SELECT abspath, COALESCE(?, source), kind, size, mtime_ns, sha256, ? FROM staged_documents WHERE abspath = ?",
                (source_of.get(abspath), indexed_at, abspath))
            self.conn.execute(
                f"INSERT INTO passages(document_id, {_PASSAGE_COLUMNS}) SELECT ?, {_PASSAGE_COLUMNS}"
                " FROM staged_passages WHERE abspath = ? ORDER BY ordinal", (cur.lastrowid, abspath))

    def replace_skipped(self, rows: Sequence[tuple[str, str, str, str]], keep_files: set[str],
                        outside: Callable[[str], bool] | None = None) -> None:
        """What the run could not index: (source, file, reason, category) rows replace the
        table, except rows of files in keep_files (indexed files this run did not read
        again, whose skipped pages still stand) and rows of files the run did not look at
        (outside(file) is true: a watcher's update)."""
        kept = [r for r in self.conn.execute("SELECT source, file, reason, category FROM skipped_files")
                if (r[1] in keep_files and r[0] != r[1]) or (outside is not None and outside(r[1]))]
        self.conn.execute("DELETE FROM skipped_files")
        self.conn.executemany("INSERT OR REPLACE INTO skipped_files(source, file, reason, category) VALUES (?, ?, ?, ?)",
                              [*kept, *rows])

    def skipped(self) -> list[tuple[str, str, str]]:
        """(source, reason, category) of what the last published run could not index."""
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'skipped_files'").fetchone():
            return []  # an index written before kb recorded them
        return self.conn.execute("SELECT source, reason, category FROM skipped_files ORDER BY source").fetchall()

    # -- reads --------------------------------------------------------------------
    def documents(self) -> dict[str, StoredDocument]:
        rows = self.conn.execute("SELECT id, abspath, source, size, mtime_ns, sha256 FROM documents")
        return {r[1]: StoredDocument(*r) for r in rows}

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        passages = self.conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
        return docs, passages

    def max_passage_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(id), -1) FROM passages").fetchone()[0]

    def passages_after(self, passage_id: int) -> Iterator[tuple[int, int, str]]:
        """(id, document id, context + text indexed) of passages with larger ids: what a run added."""
        rows = self.conn.execute("SELECT id, document_id, context, COALESCE(indexed, text) FROM passages"
                                 " WHERE id > ? ORDER BY id", (passage_id,))
        for pid, doc, context, text in rows:
            yield pid, doc, _bm25_text(context, text)

    def vector_keys_of(self, document_ids: Sequence[int]) -> list[bytes]:
        keys: list[bytes] = []
        for at in range(0, len(document_ids), 500):
            chunk = list(document_ids[at : at + 500])
            marks = ",".join("?" * len(chunk))
            keys.extend(r[0] for r in self.conn.execute(
                f"SELECT vector_key FROM passages WHERE document_id IN ({marks})", chunk))
        return keys

    def count_after(self, passage_id: int) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM passages WHERE id > ?", (passage_id,)).fetchone()[0]

    def removed_ids(self, up_to: int) -> np.ndarray:
        rows = self.conn.execute("SELECT passage_id FROM removed_passages WHERE passage_id <= ?", (up_to,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def vector_rows(self, dimension: int, *, after: int = -1, chunk: int = 50_000
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(passage ids, vectors) of every passage with an id above `after`, in id order, by chunks."""
        cur = self.conn.execute("SELECT p.id, e.vector FROM passages p JOIN embeddings e ON e.key = p.vector_key"
                                " WHERE p.id > ? ORDER BY p.id", (after,))
        while rows := cur.fetchmany(chunk):
            yield self._unpack(rows, dimension)

    def vectors(self, ids: Sequence[int], dimension: int) -> np.ndarray:
        """The vectors of these passages, in the order given."""
        wanted = [int(i) for i in ids]
        found: dict[int, bytes] = {}
        for at in range(0, len(wanted), 500):
            chunk = wanted[at : at + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(
                "SELECT p.id, e.vector FROM passages p JOIN embeddings e ON e.key = p.vector_key"
                f" WHERE p.id IN ({marks})", chunk))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise CorruptIndex(f"no stored vector for passage {missing[0]} in {self.path}; run `kb index --rebuild`")
        return self._unpack([(i, found[i]) for i in wanted], dimension)[1]

    def _unpack(self, rows, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blob = b"".join(r[1] for r in rows)
        if len(blob) != len(rows) * dimension * 4:
            raise CorruptIndex(f"stored vectors in {self.path} do not have dimension {dimension}; "
                               "run `kb index --rebuild`")
        return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)

    def sentences(self, ids: Sequence[int]) -> dict[int, bytes]:
        """passage id -> its packed sentence vectors (kb.store.sentence_vectors), for those
        of these passages that have them."""
        if not len(ids) or not self.has_sentences:
            return {}
        marks = ",".join("?" * len(ids))
        return dict(self.conn.execute("SELECT p.id, s.data FROM passages p JOIN sentences s ON s.key = p.vector_key"
                                      f" WHERE p.id IN ({marks})", [int(i) for i in ids]))

    def spans(self, ids: Sequence[int]) -> dict[int, PassageSpan]:
        """Where these passages sit, without their text or their document's row: a question
        ranks and merges ~100 candidates by these, then reads the rest for the few it keeps
        (documents_by_id, texts). One table, no join: about half the time of reading both."""
        if not len(ids):
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT id, document_id, char_start, char_end, line_start, line_end, page, record,"
            f" {self._column('passages', 'location')} FROM passages WHERE id IN ({marks})", [int(i) for i in ids])
        return {r[0]: PassageSpan(*r) for r in rows}

    def documents_by_id(self, ids: Iterable[int]) -> dict[int, StoredDocument]:
        wanted = [int(i) for i in ids]
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self.conn.execute(
            f"SELECT id, abspath, source, size, mtime_ns, sha256 FROM documents WHERE id IN ({marks})", wanted)
        return {r[0]: StoredDocument(*r) for r in rows}

    def texts(self, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """passage id -> (text, context)."""
        if not len(ids):
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT id, text, context FROM passages WHERE id IN ({marks})", [int(i) for i in ids])
        return {r[0]: (r[1], r[2]) for r in rows}


    def lexical_texts(self, ids: Sequence[int]) -> dict[int, str]:
        """passage id -> its headings and text as BM25 reads them (passages_after's text)."""
        if not len(ids):
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT id, context, COALESCE({self._column('passages', 'indexed')}, text)"
                                 f" FROM passages WHERE id IN ({marks})", [int(i) for i in ids])
        return {pid: _bm25_text(context, text) for pid, context, text in rows}


def _bm25_text(context: str, text: str) -> str:
    """What BM25 indexes of a passage (and term proximity reads): headings, then its text
    less its markup."""
    return f"{context}\n{text}" if context else text


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
