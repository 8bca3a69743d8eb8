"""The library API: the whole pipeline, files -> documents -> passages -> vectors -> index -> hits.

    kb = KnowledgeBase("index")
    report = kb.index(["corpus"])
    for hit in kb.ask("Why did junior doctors vote to strike?", k=3):
        print(hit.citation, hit.score)

The CLI is a thin layer over this class; anything a script could want lives here.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import vector_index
from .documents import DEFAULT_MAX_FILE_SIZE, Document, Skipped, SourceFile, discover, read_document
from .embedding import Embedder, load_embedder
from .errors import BadInput, CorruptIndex, IndexBusy, IndexMismatch, NoIndex
from .hits import Hit
from .model import TokenCounter, packaged_model, recorded_variant
from .passages import ChunkSettings, Passage, make_passages
from .search import DEFAULT_MODE, SearchOptions, search
from .store import Store, StoredPassage

DB_NAME = "kb.sqlite"
LOCK_NAME = ".kb.lock"
DEFAULT_INDEX_DIR = "index"


@dataclass
class IndexReport:
    """What one `index()` run did."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    ignored: int = 0  # files of types kb does not read
    excluded: int = 0  # files and folders matched by .gitignore/.kbignore rules
    skipped: list[Skipped] = field(default_factory=list)
    documents: int = 0
    passages: int = 0
    passages_embedded: int = 0
    seconds: float = 0.0
    rebuilt: bool = False

    def to_dict(self) -> dict:
        return {
            "documents": self.documents,
            "passages": self.passages,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "ignored": self.ignored,
            "excluded": self.excluded,
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
            "passages_embedded": self.passages_embedded,
            "seconds": round(self.seconds, 3),
            "rebuilt": self.rebuilt,
        }


ProgressStart = Callable[[int], Callable[[int], None]]  # total -> advance(n)


class KnowledgeBase:
    """An index folder and the operations on it.

    Nothing heavy happens in the constructor: the store, the FAISS index and the model
    are opened on first use and kept, so one object answers many questions quickly.
    """

    def __init__(self, index_dir: str | os.PathLike = DEFAULT_INDEX_DIR, *, embedder: Embedder | None = None):
        self.index_dir = Path(index_dir)
        self._embedder = embedder
        self._model = None  # the packaged model in the index's variant, once known
        self._reader: _Reader | None = None

    @property
    def db_path(self) -> Path:
        return self.index_dir / DB_NAME

    def exists(self) -> bool:
        return self.db_path.is_file()

    # -- building -------------------------------------------------------------------
    def index(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        settings: ChunkSettings | None = None,
        rebuild: bool = False,
        progress: ProgressStart | None = None,
        max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
        variant: str | None = None,
    ) -> IndexReport:
        """Make the index mirror the given files and folders.

        Only new or changed files are read and embedded (a stat check, then the content
        hash); passages of files no longer present are dropped. The new state becomes
        visible in one SQLite commit, so a failed or killed run leaves the previous
        index as it was. Files over max_file_size bytes (None: no cap) are skipped.
        variant: "fp32" or "int8" (kb.model.VARIANTS); None keeps the index's own, else fp32.
        """
        started = time.perf_counter()
        report = IndexReport()
        found = discover(paths, max_file_size=max_file_size)
        report.skipped.extend(found.skipped)
        report.ignored = len(found.ignored)
        report.excluded = len(found.excluded)
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"cannot use {self.index_dir} as the index folder: {e.strerror}") from None
        with self._write_lock():
            store = self._open_for_writing(rebuild)
            try:
                self._update(store, found.files, settings, rebuild, progress, report, variant)
            except sqlite3.DatabaseError as e:
                raise CorruptIndex(f"index database {self.db_path} is damaged ({e}); run `kb index --rebuild`") from None
            finally:
                store.close()
        self._reader = None
        report.seconds = time.perf_counter() - started
        return report

    def _open_for_writing(self, rebuild: bool) -> Store:
        try:
            store = Store(self.db_path, create=True)
            if not rebuild or store.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return store
            store.close()
        except (CorruptIndex, IndexMismatch, sqlite3.DatabaseError):
            if not rebuild:
                raise
        # --rebuild of an index this kb cannot read: it holds nothing worth keeping.
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
        return Store(self.db_path, create=True)

    def _update(self, store, files, settings, rebuild, progress, report, variant=None) -> None:
        model = self._model = packaged_model(variant or recorded_variant(store.get_meta("model")) or "fp32")
        settings = settings or _stored_settings(store) or ChunkSettings()
        built_with = {"model": model.name, "weights_sha256": model.weights_sha256, "chunking": settings.to_dict()}
        previous = {k: store.get_meta(k) for k in built_with}
        if rebuild or (store.get_meta("generation") and previous != built_with):
            report.rebuilt = True
            stored = {}
        else:
            stored = store.documents()

        current = {f.abspath: f for f in files}
        report.removed = sorted(d.source for p, d in stored.items() if p not in current)
        todo: list[Document] = []
        touched: list[tuple[int, SourceFile]] = []
        for f in files:
            old = stored.get(f.abspath)
            if old and old.size == f.size and old.mtime_ns == f.mtime_ns and old.source == f.source:
                report.unchanged += 1
                continue
            try:
                doc = read_document(f)
            except (OSError, ValueError) as e:
                report.skipped.append(Skipped(f.source, getattr(e, "strerror", None) or str(e)))
                continue
            except Exception as e:  # a parser's bug on one odd file must not cost the run
                report.skipped.append(Skipped(f.source, f"could not be read ({type(e).__name__}: {str(e)[:80]})"))
                continue
            if old and old.sha256 == doc.sha256:
                report.unchanged += 1
                touched.append((old.id, f))
            else:
                todo.append(doc)
                (report.changed if old else report.added).append(f.source)
        # A file that could not be read this time keeps nothing stale in the index.
        unreadable = {s.source for s in report.skipped}
        gone = [d.id for p, d in stored.items() if p not in current or (d.source in unreadable)]

        counter = TokenCounter(model.tokenizer_file)
        chunked = [(doc, make_passages(doc, counter, settings)) for doc in todo]
        texts = [p.embedding_text for _, ps in chunked for p in ps]
        vectors = self._embed(texts, progress)
        report.passages_embedded = len(texts)
        _crash_point("embedded")

        generation = (store.get_meta("generation") or 0) + 1
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with store.transaction():
            if report.rebuilt:
                store.delete_all()
            store.delete_documents(gone + [stored[d.file.abspath].id for d in todo if d.file.abspath in stored])
            for doc_id, f in touched:
                store.touch_document(doc_id, f.source, f.size, f.mtime_ns)
            offset = 0
            for doc, passages in chunked:
                store.add_document(_document_row(doc, now), [_passage_row(p) for p in passages],
                                   vectors[offset : offset + len(passages)])
                offset += len(passages)
            _crash_point("writing")
            for key, value in built_with.items():
                store.set_meta(key, value)
            dimension = store.get_meta("dimension") if not len(vectors) else int(vectors.shape[1])
            if dimension is None:
                dimension = self._get_embedder(for_indexing=True).dimension
            store.set_meta("dimension", dimension)
            store.set_meta("built_at", now)
            store.set_meta("generation", generation)
            # Write the derived FAISS file before committing, so every committed
            # generation has its file; a crash here leaves an orphan, never a gap.
            ids, all_vectors = store.all_vectors(dimension)
            vector_index.write(vector_index.build(ids, all_vectors), self._faiss_path(generation))
            _crash_point("faiss-written")
        _crash_point("committed")
        self._remove_old_faiss(keep=generation)
        report.documents, report.passages = store.counts()
        if gone or todo:
            store.reclaim_space()

    def _embed(self, texts: Sequence[str], progress: ProgressStart | None) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        advance = progress(len(texts)) if progress else None
        return self._get_embedder(for_indexing=True).embed(texts, progress=advance)

    def _get_embedder(self, *, for_indexing: bool = False) -> Embedder:
        if self._embedder is not None:
            return self._embedder
        # The variant the index was (or is being) built with: queries must use the same.
        return load_embedder(self._model or packaged_model(), for_indexing=for_indexing)

    @contextmanager
    def _write_lock(self):
        fd = os.open(self.index_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusy(f"another `kb index` is writing {self.index_dir}; try again when it finishes") from None
            yield
        finally:
            os.close(fd)

    def _faiss_path(self, generation: int) -> Path:
        return self.index_dir / f"vectors.{generation}.faiss"

    def _remove_old_faiss(self, keep: int) -> None:
        # Also half-written temp files of runs that were killed (we hold the lock).
        for path in [*self.index_dir.glob("vectors.*.faiss"), *self.index_dir.glob(".vectors.*.tmp")]:
            if path != self._faiss_path(keep):
                path.unlink(missing_ok=True)

    # -- asking ---------------------------------------------------------------------
    def ask(self, question: str, k: int = 5, **options) -> list[Hit]:
        """The k passages that answer the question best, best first (options as ask_many)."""
        return self.ask_many([question], k, **options)[0]

    def ask_many(
        self,
        questions: Sequence[str],
        k: int = 5,
        *,
        mode: str = DEFAULT_MODE,
        min_score: float | None = None,
        paths: Sequence[str] = (),
        mmr: float | None = None,
        **tuning,
    ) -> list[list[Hit]]:
        """Answer several questions with one batched embedding and one FAISS search.

        mode: "hybrid" (default), "dense" or "lexical" (needs no model); min_score drops
        weaker hits (a question may then get none); paths: globs, any of which a hit's
        file must match, applied before the top k; mmr: a lambda in [0, 1] that trades
        relevance for diversity. See kb.search for what scores mean.
        """
        if k < 1:
            raise BadInput("k must be at least 1")
        questions = [clean_question(q) for q in questions]
        for q in questions:
            if not q:
                raise BadInput("the question is empty")
        options = SearchOptions(mode=mode, min_score=min_score, paths=tuple(paths), mmr=mmr, **tuning)
        reader = self._open_reader()
        embed = None if mode == "lexical" else self._get_embedder().embed
        return search(reader.store, reader.index, questions, k, options, embed=embed,
                      freshness=_Freshness().check)

    def info(self) -> dict:
        """What the index holds and how it was built (no model is loaded)."""
        reader_store = self._open_store()
        try:
            meta = reader_store.all_meta()
            documents, passages = reader_store.counts()
        finally:
            reader_store.close()
        size = sum(p.stat().st_size for p in self.index_dir.iterdir() if p.is_file())
        return {
            "index": str(self.index_dir),
            "documents": documents,
            "passages": passages,
            "model": meta.get("model"),
            "weights_sha256": meta.get("weights_sha256"),
            "dimension": meta.get("dimension"),
            "chunking": meta.get("chunking"),
            "built_at": meta.get("built_at"),
            "generation": meta.get("generation"),
            "size_bytes": size,
        }

    def _open_store(self) -> Store:
        if not self.exists():
            raise NoIndex(f"no index at {self.index_dir}; run `kb index` first")
        return Store(self.db_path)

    def _open_reader(self) -> "_Reader":
        if self._reader is not None and not self._reader.outdated():
            return self._reader
        if self._reader is not None:
            self._reader.store.close()
            self._reader = None
        if self._reader is None:
            store = self._open_store()
            meta = store.all_meta()
            if not meta.get("generation"):
                raise NoIndex(f"the index at {self.index_dir} was never completed; run `kb index`")
            model = packaged_model(recorded_variant(meta.get("model")) or "fp32")
            if (meta.get("model"), meta.get("weights_sha256")) != (model.name, model.weights_sha256):
                raise IndexMismatch(
                    f"index {self.index_dir} was built with {meta.get('model')} "
                    f"(weights {str(meta.get('weights_sha256'))[:12]}), not the installed "
                    f"{model.name} (weights {model.weights_sha256[:12]}); run `kb index --rebuild`"
                )
            self._model = model
            path = self._faiss_path(meta["generation"])
            if path.exists():
                index = vector_index.read(path)
            else:  # a crash between commit and cleanup, or a deleted file: derive it again
                ids, vectors = store.all_vectors(meta["dimension"])
                index = vector_index.build(ids, vectors)
            if index.d != meta["dimension"]:
                raise CorruptIndex(f"vector index {path} does not match its database; run `kb index --rebuild`")
            self._reader = _Reader(store, index, meta["generation"], store.data_version())
        return self._reader


@dataclass
class _Reader:
    """An open generation of the index. A long-lived KnowledgeBase (a server, a script)
    checks it per call: PRAGMA data_version changes when another connection commits,
    which costs microseconds, and only then is the generation re-read."""

    store: Store
    index: object
    generation: int
    data_version: int

    def outdated(self) -> bool:
        version = self.store.data_version()
        if version == self.data_version:
            return False
        self.data_version = version
        return self.store.get_meta("generation") != self.generation


class _Freshness:
    """Cheap stat checks of hit sources, once per file per query batch."""

    def __init__(self):
        self._seen: dict[str, str] = {}

    def check(self, p: StoredPassage) -> str:
        if p.abspath not in self._seen:
            try:
                st = os.stat(p.abspath)
                fresh = st.st_size == p.size and st.st_mtime_ns == p.mtime_ns
                self._seen[p.abspath] = "fresh" if fresh else "stale"
            except OSError:
                self._seen[p.abspath] = "gone"
        return self._seen[p.abspath]


def clean_question(question: str) -> str:
    """Strip it, and replace what is not text (control characters; lone surrogates, which
    Python makes of undecodable bytes in argv or stdin) so no tokenizer chokes on it."""
    try:
        question = question.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:  # surrogates that do not stand for bytes
        question = question.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in question).strip()


def _crash_point(name: str) -> None:
    """Fault injection for the crash-safety tests: KB_CRASH_AT=name kills this process here."""
    if os.environ.get("KB_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _stored_settings(store: Store) -> ChunkSettings | None:
    stored = store.get_meta("chunking")
    return ChunkSettings(**stored) if stored else None


def _document_row(doc: Document, now: str) -> dict:
    f = doc.file
    return {"abspath": f.abspath, "source": f.source, "kind": f.kind, "size": f.size,
            "mtime_ns": f.mtime_ns, "sha256": doc.sha256, "indexed_at": now}


def _passage_row(p: Passage) -> dict:
    return {"text": p.text, "context": p.context, "char_start": p.char_start, "char_end": p.char_end,
            "line_start": p.line_start, "line_end": p.line_end, "page": p.page, "record": p.record}

