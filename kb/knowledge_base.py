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
import sqlite3
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .ingest.documents import DEFAULT_MAX_FILE_SIZE, discover, discover_changes
from .embed.embedding import Embedder, load_embedder
from .errors import BadInput, CorruptIndex, IndexBusy, IndexMismatch, NoIndex, classified
from .store import checksums
from .query.hits import Hit
from .store.lexical import LexicalIndex
from .embed.model import ModelFiles, packaged_model, recorded_variant
from .ingest.passages import ChunkSettings
from .query.search import DEFAULT_MODE, SearchOptions, search
from .store.database import Store, StoredDocument
from .store.vector_index import SETTINGS as VECTOR_INDEX_SETTINGS
from .store.vector_index import VectorIndex, VectorLayout, concat_rows, empty_rows, open_index, vectors_from_database
from .store.watcher_lock import attached_watcher

if TYPE_CHECKING:  # building an index needs these; asking does not load them
    from .ingest.pipeline import IndexReport, OnProgress
    from .ingest.prepare import Executor

DB_NAME = "kb.sqlite"
SET_ASIDE_SUFFIX = ".damaged"  # where --rebuild moves a database it cannot use
LOCK_NAME = ".kb.lock"
DEFAULT_INDEX_DIR = "index"
GENERATION_RETRIES = 5  # each retry needs another commit inside a microseconds-wide window
# A hand-run `kb index` that finds a watcher's update writing waits this long for it (the
# updates are short); past it, exit 6 naming the watcher (kb.watch).
WATCHER_WAIT = 60.0
MAX_K = 10_000  # hits per question: past this a typo (-k 1000000000) would only exhaust memory

__all__ = ["KnowledgeBase", "clean_question"]


class KnowledgeBase:
    """An index folder and the operations on it.

    Nothing heavy happens in the constructor: the store, the search indexes and the
    model are opened on first use and kept, so one object answers many questions
    quickly. A long-lived object answers from each new generation a `kb index` run
    commits, without being reopened. Calls may come from several threads.
    """

    def __init__(self, index_dir: str | os.PathLike = DEFAULT_INDEX_DIR, *, embedder: Embedder | None = None,
                 many_questions: bool = False):
        """many_questions: this object will answer many (a server, a stream of questions):
        the model is readied for speed per question from the first one (~50 ms more to
        load), so every answer comes from the same kernels. Otherwise that waits for a
        second question, and a first answer's scores may differ from later ones' in the
        sixth decimal."""
        self.index_dir = Path(index_dir)
        self._embedder = embedder
        self._many_questions = many_questions
        self._model: ModelFiles | None = None  # the packaged model in the index's variant, once known
        self._reader: _Reader | None = None
        self._lock = threading.RLock()

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
        progress: OnProgress | None = None,
        max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
        executor: Executor | None = None,
        vector_index: str | None = None,
        variant: str | None = None,
        follow_symlinks: bool = False,
        changed: Iterable[str] | None = None,
    ) -> IndexReport:
        """Make the index mirror the given files and folders.

        Only new or changed files are read, and only passages whose text was never
        embedded go through the model (a changed file re-embeds its changed passages; a
        moved file, none). Passages of files no longer present are dropped. The new
        state becomes visible in one SQLite commit, so a failed or killed run leaves the
        previous index as it was, and the next run resumes from the last batch it
        committed. Files over max_file_size bytes (None: no cap) are skipped. progress
        is called with a kb.ingest.pipeline.Progress after each batch. executor: where files are
        read, chunked and embedded (kb.ingest.prepare; default: in this process). vector_index:
        "exact" or "ivf" forces that kind of vector index at any size, "auto" chooses by
        size (kb.store.vector_index); None keeps what the index was built with. variant: "fp32"
        or "int8" (kb.embed.model.VARIANTS); None keeps the index's own, else fp32.
        follow_symlinks: follow symlinks that leave the given paths (by default they are
        skipped with a reason; links inside them are always followed).
        changed: absolute paths of files or folders (present or gone) that are all that
        changed since the index last mirrored `paths` (a watcher's events, kb.watch): only
        they are looked at, nothing else is walked, and the rest of the index stays as it is.
        """
        if vector_index is not None and vector_index not in VECTOR_INDEX_SETTINGS:
            raise BadInput(f"unknown vector index {vector_index!r}; choose one of {', '.join(VECTOR_INDEX_SETTINGS)}")
        from .ingest import pipeline

        started = time.perf_counter()
        report = pipeline.IndexReport()
        paths = list(paths)
        scope = None
        if changed is None:
            found = discover(paths, max_file_size=max_file_size, follow_symlinks=follow_symlinks)
        else:
            found, scope = discover_changes(paths, changed, max_file_size=max_file_size,
                                            follow_symlinks=follow_symlinks)
        report.skipped.extend(found.skipped)
        report.ignored = len(found.ignored)
        report.ignored_files = found.ignored
        report.excluded = len(found.excluded)
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"cannot use {self.index_dir} as the index folder: {e.strerror}") from None
        with classified(self.index_dir), self._write_lock():
            store = self._open_for_writing(rebuild)
            try:
                model = packaged_model(variant or recorded_variant(store.get_meta("model")) or "fp32")
                self._model = model
                pipeline.run(store, self.index_dir, found.files, report, model=model, settings=settings,
                             rebuild=rebuild,
                             get_embedder=lambda: self._get_embedder(for_indexing=True), on_progress=progress,
                             executor=executor, vector_index=vector_index, scope=scope)
            finally:
                store.close()
        report.seconds = time.perf_counter() - started
        return report

    def _open_for_writing(self, rebuild: bool) -> Store:
        """The store a run writes. --rebuild replaces a database only once it is proven
        unusable: SQLite called it damaged or not a database, it failed PRAGMA
        quick_check, or another kb wrote it in another format. A full disk, a read-only
        folder or too many open files are IoFailure (kb.errors) and replace nothing."""
        try:
            store = Store(self.db_path, create=True)
        except (CorruptIndex, IndexMismatch):
            if not rebuild:
                raise
            self._set_aside()
            return Store(self.db_path, create=True)
        if not rebuild:
            return store
        try:
            with classified(self.index_dir):
                check = store.conn.execute("PRAGMA quick_check").fetchone()[0]
        except CorruptIndex:
            check = "damaged"
        except BaseException:
            store.close()
            raise
        if check == "ok":
            return store
        store.close()
        self._set_aside()
        return Store(self.db_path, create=True)

    def _set_aside(self) -> None:
        """Move an unusable database out of the way, not delete it: SET_ASIDE_SUFFIX
        (with its -wal and -shm, which belong to it) replaces any earlier one."""
        for suffix in ("-wal", "-shm", "-journal", ""):
            path = Path(f"{self.db_path}{suffix}")
            if path.exists():
                os.replace(path, f"{self.db_path}{SET_ASIDE_SUFFIX}{suffix}")
            else:
                Path(f"{self.db_path}{SET_ASIDE_SUFFIX}{suffix}").unlink(missing_ok=True)

    def _get_embedder(self, *, for_indexing: bool = False) -> Embedder:
        if self._embedder is not None:
            return self._embedder
        # The variant the index was (or is being) built with: questions must use the same.
        return load_embedder(self._model or packaged_model(), for_indexing=for_indexing,
                             many_questions=self._many_questions and not for_indexing)

    @contextmanager
    def _write_lock(self):
        fd = os.open(self.index_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait_for_watcher(fd)
            yield
        finally:
            os.close(fd)

    def _wait_for_watcher(self, fd: int) -> None:
        """The writer lock is held: when another process's watcher holds it for an update,
        wait for that update (WATCHER_WAIT at most); else, or past that, raise IndexBusy."""
        watcher = attached_watcher(self.index_dir)
        if not watcher or watcher.get("pid") == os.getpid():
            raise IndexBusy(f"another `kb index` is writing {self.index_dir}; try again when it finishes")
        deadline = time.monotonic() + WATCHER_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                continue
        raise IndexBusy(f"{self.index_dir} has been locked for writing for {WATCHER_WAIT:.0f} s (`kb watch` pid "
                        f"{watcher.get('pid')} follows it); try again, or stop the watcher (kill {watcher.get('pid')})")

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
        """Answer several questions with one batched embedding and one vector search.

        mode: "hybrid" (default), "dense" or "lexical" (needs no model); min_score drops
        weaker hits (a question may then get none); paths: globs, any of which a hit's
        file must match, applied before the top k; mmr: a lambda in [0, 1] that trades
        relevance for diversity. See kb.query.search for what scores mean.
        """
        if not 1 <= k <= MAX_K:
            raise BadInput(f"k must be between 1 and {MAX_K}")
        questions = [clean_question(q) for q in questions]
        for q in questions:
            if not q:
                raise BadInput("the question is empty")
        options = SearchOptions(mode=mode, min_score=min_score, paths=tuple(paths), mmr=mmr, **tuning)
        options.check()
        with classified(self.index_dir), self._lock:
            for _ in range(GENERATION_RETRIES):
                reader = self._open_reader()
                # After the reader: the index it opened names the model variant to ask with.
                embed = None if mode == "lexical" else self._get_embedder().embed
                with reader.store.snapshot():
                    if reader.store.get_meta("generation") == reader.generation:
                        return search(reader.store, reader.vectors, reader.lexical, questions, k, options,
                                      embed=embed, freshness=_Freshness().check)
                # A `kb index` committed between the check and the snapshot: open its
                # generation (after the snapshot ends: reopening closes this connection).
                reader.data_version = -1
            raise IndexBusy("the index kept changing while it was read; try again")

    def info(self) -> dict:
        """What the index holds and how it was built (no model is loaded)."""
        with classified(self.index_dir):
            return self._info()

    def _info(self) -> dict:
        store = self._open_store()
        try:
            meta = store.all_meta()
            documents, passages = store.counts()
            cached, unused = store.embedding_counts()
            staged = len(store.staged_documents())
            skipped = store.skipped()
            layout = meta.get("vectors") or {}
            delta = store.count_after(layout["max_id"]) if layout else 0
            removed = len(store.removed_ids(layout["max_id"])) if layout else 0
        finally:
            store.close()
        size = sum(p.stat().st_size for p in self.index_dir.rglob("*") if p.is_file())
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
            "vector_index": _describe_layout(layout, delta, removed),
            "lexical_index": {"engine": "tantivy", "folder": meta.get("lexical"),
                              "analyzer": meta.get("lexical_analyzer")},
            "vector_cache": {"vectors": cached, "unused": unused},
            "staged_documents": staged,  # left by a killed run; the next run picks them up
            "watcher": attached_watcher(self.index_dir),  # pid, since, paths, last_update; or None
            # What the last run could not index, counted by category (kb.ingest.documents.SKIP_CATEGORIES).
            "skipped": dict(Counter(category for _, _, category in skipped).most_common()),
            "size_bytes": size,
        }

    def skipped(self) -> list[dict]:
        """What the last run could not index: source (a file, or "file (page N)"), reason, category."""
        store = self._open_store()
        try:
            return [{"source": s, "reason": r, "category": c} for s, r, c in store.skipped()]
        finally:
            store.close()

    def documents(self) -> list[dict]:
        """The indexed files: source (as cited), abspath, size, mtime_ns, sha256."""
        with classified(self.index_dir):
            store = self._open_store()
            try:
                return [{"source": d.source, "abspath": d.abspath, "size": d.size, "mtime_ns": d.mtime_ns,
                         "sha256": d.sha256} for d in sorted(store.documents().values(), key=lambda d: d.source)]
            finally:
                store.close()

    def _open_store(self) -> Store:
        if not self.exists():
            raise NoIndex(f"no index at {self.index_dir}; run `kb index` first")
        return Store(self.db_path)

    def _open_reader(self) -> "_Reader":
        if self._reader is not None:
            try:
                if not self._reader.outdated():
                    return self._reader
            except sqlite3.Error:
                # The connection cannot go on (a read-only reader whose -shm the owner's
                # writer removed on closing): open the index again, as for a new generation.
                pass
        if self._reader is not None:
            self._reader.store.close()
            self._reader = None
        store = self._open_store()
        try:
            for attempt in range(3):
                meta = store.all_meta()
                try:
                    self._reader = self._open_generation(store, meta)
                    return self._reader
                except CorruptIndex:
                    # A writer may have just committed a new generation and removed the
                    # files of the one we read: read the meta table again.
                    if attempt == 2 or store.get_meta("generation") == meta.get("generation"):
                        raise
        except BaseException:
            store.close()
            raise
        raise AssertionError("unreachable")

    def _open_generation(self, store: Store, meta: dict) -> "_Reader":
        with store.snapshot():  # the meta, the delta and the removed ids of one generation
            if store.get_meta("generation") != meta.get("generation"):
                raise CorruptIndex("the index changed while it was opened")  # retried by _open_reader
            return self._open_files(store, meta)

    def _open_files(self, store: Store, meta: dict) -> "_Reader":
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
        lexical_dir = self.index_dir / str(meta.get("lexical"))
        if not meta.get("lexical") or not lexical_dir.is_dir():
            raise CorruptIndex(f"lexical index {lexical_dir} is missing; run `kb index` to write it again")
        layout = VectorLayout.from_dict(meta["vectors"])
        self._verify(meta, layout)
        lexical = LexicalIndex(lexical_dir)
        dimension = layout.dimension
        store.map_file(not layout.exact_file)  # per question, a few rows from here at most

        def fetch(ids):
            return store.vectors(ids, dimension)

        delta = empty_rows(dimension)
        if store.count_after(layout.max_id):
            delta = concat_rows(store.vector_rows(dimension, after=layout.max_id), dimension)
        vectors = open_index(self.index_dir, layout, delta, store.removed_ids(layout.max_id), fetch,
                             everything=lambda: concat_rows(store.vector_rows(dimension), dimension))
        return _Reader(store, vectors, lexical, meta["generation"], store.data_version())


    def _verify(self, meta: dict, layout: VectorLayout) -> None:
        """The generation's derived files have the sizes recorded, and the small ones the
        bytes (kb.store.checksums); a small exact index never opens its FAISS file."""
        vector_files = [] if vectors_from_database(layout) else layout.files()
        recorded = meta.get("checksums") or {}
        names = checksums.generation_files(self.index_dir, meta.get("lexical"), vector_files)
        problems = checksums.damaged(self.index_dir, recorded, names, limit=checksums.VERIFY_ON_OPEN_BYTES)
        if layout.kind == "flat" and vector_files and not problems:  # read whole by FAISS anyway
            problems = checksums.damaged(self.index_dir, recorded, vector_files)
        if problems:
            name, why = problems[0]
            raise CorruptIndex(f"index file {self.index_dir / name} is damaged ({why}); "
                               "run `kb index` to write it again from the database")


@dataclass
class _Reader:
    """An open generation of the index. A long-lived KnowledgeBase (a server, a script)
    checks it per call: PRAGMA data_version changes when another connection commits,
    which costs microseconds, and only then is the generation re-read."""

    store: Store
    vectors: VectorIndex
    lexical: LexicalIndex
    generation: int
    data_version: int

    def outdated(self) -> bool:
        version = self.store.data_version()
        if version == self.data_version:
            return False
        self.data_version = version
        # An immutable reader (kb.store.database) sees the file as it was: open it again.
        return self.store.immutable or self.store.get_meta("generation") != self.generation


class _Freshness:
    """Cheap stat checks of hit sources, once per file per query batch."""

    def __init__(self):
        self._seen: dict[str, str] = {}

    def check(self, document: StoredDocument) -> str:
        if document.abspath not in self._seen:
            try:
                st = os.stat(document.abspath)
                fresh = st.st_size == document.size and st.st_mtime_ns == document.mtime_ns
                self._seen[document.abspath] = "fresh" if fresh else "stale"
            except (FileNotFoundError, NotADirectoryError):
                self._seen[document.abspath] = "gone"
            except OSError:  # not this user's to see (another user's index, a replica): no evidence it went
                self._seen[document.abspath] = "fresh"
        return self._seen[document.abspath]


def clean_question(question: str) -> str:
    """Strip it, and replace what is not text (control characters; lone surrogates, which
    Python makes of undecodable bytes in argv or stdin) so no tokenizer chokes on it."""
    try:
        question = question.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:  # surrogates that do not stand for bytes
        question = question.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in question).strip()


def _describe_layout(layout: dict, delta: int, removed: int) -> dict:
    """The vector index's kind and parameters (kb.store.vector_index explains the parts)."""
    if not layout:
        return {}
    info = {"kind": layout["kind"], "file": layout["file"], "base_vectors": layout["size"],
            "delta_vectors": delta, "removed_vectors": removed}
    if layout["kind"] == "ivf":
        described = VectorLayout.from_dict(layout)
        info.update(nlist=described.nlist, nprobe=described.nprobe, metric="inner product", codec=described.codec)
        if described.exact_file:
            info["exact_vectors"] = described.files()[1:]
    return info
