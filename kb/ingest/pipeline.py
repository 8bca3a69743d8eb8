"""One `kb index` run, files -> documents -> passages -> vectors -> the next generation.

    verify   PRAGMA quick_check of the database, and the checksums of the current
             generation's derived files (kb.store.checksums): a damaged database stops
             the run (exit 5, rebuild); a damaged derived file is written again from
             SQLite in this run's publish, nothing re-embedded
    plan     compare the files found with the index: new, changed, gone, unchanged
    prepare  an executor (kb.ingest.prepare: here, or on a Ray cluster) reads and chunks each
             file, looks each passage's vector up by content and embeds only what is new;
             this process commits vectors and staged documents batch by batch (no reader
             looks at either)
    publish  one short transaction: swap the staged documents in, write the next
             generation's lexical folder (all of it when the index was built with
             another analysis, kb.store.lexical.ANALYZER) and (if due) vector base file,
             record the generation; readers see all of it or none of it
    tidy     remove older generations' files, drop vectors nothing uses, reclaim space

Memory stays bounded: a batch of documents is in flight at a time, and the publish step
works inside SQLite. A run killed at any moment keeps every batch it committed: the
next run finds those documents staged (same size and mtime) and those vectors cached,
so it embeds at most the one batch that was lost.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..store import vector_index
from .documents import READING, Document, Skipped, SourceFile
from ..errors import BadInput, CorruptIndex
from ..store import checksums
from ..store.lexical import ANALYZER, UNRECORDED_ANALYZER, LexicalWriter
from ..embed.model import ModelFiles, packaged_model
from .passages import ChunkSettings, Passage
from .prepare import Executor, Item, LocalExecutor, Prepared, Touched, Vectors
from ..store.database import Store, StoredDocument
from ..store.vector_index import VectorLayout

BATCH = 512  # vectors and passages committed together: at most this much work is lost to a kill
# The chunking recorded for a streamed document staged before its last part: no run's
# settings match it, so a run killed half-way through a mailbox reads it again.
_PART_STAGED = {"staged": "in part"}


@dataclass
class IndexReport:
    """What one `index()` run did."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    ignored: int = 0  # files of types kb does not read
    ignored_files: list[str] = field(default_factory=list)  # their names, for `kb info --skipped`
    excluded: int = 0  # files and folders matched by .gitignore/.kbignore rules
    skipped: list[Skipped] = field(default_factory=list)
    documents: int = 0
    passages: int = 0
    passages_embedded: int = 0  # texts the model read in this run
    passages_reused: int = 0  # passages of new or changed files whose vectors were already stored
    seconds: float = 0.0
    rebuilt: bool = False
    repaired: list[str] = field(default_factory=list)  # derived files found damaged, written again from SQLite

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
            "passages_reused": self.passages_reused,
            "seconds": round(self.seconds, 3),
            "rebuilt": self.rebuilt,
            "repaired": self.repaired,
        }


@dataclass
class Progress:
    """How far a run is, for a progress display: updated after every batch."""

    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    passages: int = 0  # passages of the files done
    embedded: int = 0
    started: float = field(default_factory=time.monotonic)
    stage: str = "reading"  # reading | publishing | done

    @property
    def rate(self) -> float:
        """Passages per second so far."""
        return self.passages / max(time.monotonic() - self.started, 1e-9)

    @property
    def eta(self) -> float | None:
        """Seconds left, from the share of bytes done (files vary too much to count them)."""
        if not self.bytes_done or self.bytes_done >= self.bytes_total:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done


OnProgress = Callable[[Progress], None]
GetEmbedder = Callable[[], object]  # -> an kb.embed.embedding.Embedder, loaded only when needed


@dataclass
class _Plan:
    todo: list[SourceFile]  # files to read, chunk and stage
    gone: list[StoredDocument]  # documents to drop: files removed, changed, or now unreadable
    touched: list[tuple[int, SourceFile]]  # same bytes, new mtime or citation path
    staged: set[str]  # abspaths of todo already staged by a killed run
    scope: set[str] | None = None  # a watcher's update: only these paths (and under them) were looked at


def run(store: Store, index_dir: Path, files: Sequence[SourceFile], report: IndexReport, *,
        model: ModelFiles | None = None, settings: ChunkSettings | None, rebuild: bool, get_embedder: GetEmbedder,
        on_progress: OnProgress | None = None, executor: Executor | None = None,
        vector_index: str | None = None, scope: Sequence[str] | None = None) -> None:
    """Make the index mirror `files` (see the module docstring); fills in `report`.

    scope: absolute paths of files and folders; when given, `files` are what was found at
    or under them, and only stored documents there are compared with them (a watcher's
    update, kb.watch): the rest of the index is left as it is, unwalked.

    executor: where files are read, chunked and embedded (kb.ingest.prepare); default, here.
    vector_index: "auto", "exact" or "ivf" (kb.store.vector_index.SETTINGS); None keeps the
    index's setting, which starts as "auto". model: the packaged model in the variant to
    embed with (default fp32).
    """
    model = model or packaged_model()
    if executor is not None and model.variant != "fp32":
        raise BadInput(f"the index uses the {model.variant} model, which embeds only in this process; "
                       f"index without --ray, or rebuild it with --fp32")
    settings = settings or _stored_settings(store) or ChunkSettings()
    built_with = {"model": model.name, "weights_sha256": model.weights_sha256, "chunking": settings.to_dict(),
                  "reading": READING}
    meta = store.all_meta()
    repair = set() if rebuild else _verify(store, index_dir, meta, report)
    report.rebuilt = rebuild or (meta.get("generation") is not None and
                                 any(meta.get(k) != v for k, v in built_with.items()))
    if scope is not None and report.rebuilt:
        raise BadInput("the index was built with other settings: run `kb index` over all of it first")
    with store.transaction():
        run_number = (meta.get("runs") or 0) + 1
        store.set_meta("runs", run_number)
        if rebuild and meta.get("rebuild_from") is None:
            store.set_meta("rebuild_from", run_number)  # kept until published: a killed rebuild resumes
    trust_from = store.get_meta("rebuild_from") if rebuild else 0

    plan = _plan(store, files, report, settings, scope)
    if scope is not None and not (plan.todo or plan.gone or plan.touched) and meta.get("generation"):
        report.documents, report.passages = store.counts()
        return  # a watcher's events that change nothing indexed: no new generation
    progress = Progress(files_total=len(plan.todo), bytes_total=sum(f.size for f in plan.todo))
    batch = int(os.environ.get("KB_BATCH") or BATCH)
    stored = {} if report.rebuilt else store.documents()
    stager = _Stager(store, settings, run_number, batch, report, progress, on_progress, stored)
    for f in plan.todo:
        if f.abspath in plan.staged:  # read, chunked and embedded by a run that was killed
            (report.changed if f.abspath in stored else report.added).append(f.source)
            stager.staged.append(f)
            stager.done(f, store.staged_passage_count(f.abspath))
    executor = executor or LocalExecutor(get_embedder, model.vector_id, batch)
    fresh = [f for f in plan.todo if f.abspath not in plan.staged]
    stored_sha256 = {path: d.sha256 for path, d in stored.items()}
    with _ocr_cache(index_dir):
        for item in executor.prepare(fresh, settings=settings, stored_sha256=stored_sha256,
                                     known=lambda keys: store.known_keys(keys, since=trust_from or 0)):
            stager.take(item)
    stager.commit()
    plan.touched.extend(stager.touched)
    _crash_point("embedded")
    progress.stage = "publishing"
    if on_progress:
        on_progress(progress)
    _publish(store, index_dir, plan, stager.staged, report, built_with, stager.dimension, meta, run_number,
             vector_index, repair)
    progress.stage = "done"
    if on_progress:
        on_progress(progress)


# -- verify ----------------------------------------------------------------------------
def _verify(store: Store, index_dir: Path, meta: dict, report: IndexReport) -> set[str]:
    """Which parts of the current generation ("lexical", "vectors") must be written again
    from SQLite; raises CorruptIndex when the database itself is damaged."""
    problems = [row[0] for row in store.conn.execute("PRAGMA quick_check").fetchmany(3)]
    if problems != ["ok"]:
        raise CorruptIndex(f"the index database {store.path} is damaged ({problems[0]}); "
                           "run `kb index --rebuild` (it reads and embeds every file again)")
    if not meta.get("generation"):
        return set()
    layout = VectorLayout.from_dict(meta["vectors"]) if meta.get("vectors") else None
    vector_files = layout.files() if layout else []
    lexical = meta.get("lexical")
    found = checksums.damaged(index_dir, meta.get("checksums") or {},
                              checksums.generation_files(index_dir, lexical, vector_files))
    found += [(name, "it is missing") for name in [*vector_files, *([lexical] if lexical else [])]
              if not (index_dir / name).exists()]
    parts = set()
    for name, why in found:
        parts.add("lexical" if name.startswith("lexical.") else "vectors")
        report.repaired.append(f"{name}: {why}")
    return parts


# -- plan ------------------------------------------------------------------------------
def _plan(store: Store, files: Sequence[SourceFile], report: IndexReport, settings: ChunkSettings,
          scope: Sequence[str] | None = None) -> _Plan:
    stored = {} if report.rebuilt else store.documents()
    if scope is not None and not report.rebuilt:
        covered = {os.path.normpath(p) for p in scope}
        stored = {p: d for p, d in stored.items() if _within(p, covered)}
    staged = store.staged_documents()
    current = {f.abspath for f in files}
    report.removed = sorted(d.source for p, d in stored.items() if p not in current)
    todo, touched, gone = [], [], [d for p, d in stored.items() if p not in current]
    reusable = set()
    for f in files:
        old = stored.get(f.abspath)
        if old and (old.size, old.mtime_ns, old.source) == (f.size, f.mtime_ns, f.source):
            report.unchanged += 1
            continue
        todo.append(f)
        s = staged.get(f.abspath)
        if s and (s.size, s.mtime_ns, s.chunking) == (f.size, f.mtime_ns, settings.to_dict()):
            reusable.add(f.abspath)
    # Staged documents this run will not use (a killed run's, for other files or versions).
    with store.transaction():
        store.unstage([a for a in staged if a not in reusable])
    return _Plan(todo, gone, touched, reusable, None if scope is None else {os.path.normpath(p) for p in scope})


# -- prepare and stage -------------------------------------------------------------------
class _Stager:
    """The run's one writer before publishing: commits vectors and staged documents in batches."""

    def __init__(self, store: Store, settings: ChunkSettings, run_number: int, batch: int, report: IndexReport,
                 progress: Progress, on_progress: OnProgress | None, stored: dict[str, StoredDocument]):
        self.store, self.settings, self.run_number, self.batch = store, settings, run_number, batch
        self.report, self.progress, self.on_progress, self.stored = report, progress, on_progress, stored
        self.vectors: list[Vectors] = []
        self.documents: list[Prepared] = []
        self.size = 0  # vectors and passages waiting for the next commit
        self.staged: list[SourceFile] = []  # files staged in this run or a killed one
        self.touched: list[tuple[int, SourceFile]] = []
        self.dimension: int | None = None
        self.batches = 0
        self.partial: set[str] = set()  # streamed files some of whose parts were taken, not the last

    def take(self, item: Item) -> None:
        if isinstance(item, Vectors):
            self.vectors.append(item)
            self.size += len(item.keys)
            self.dimension = int(item.vectors.shape[1])
            self.report.passages_embedded += len(item.keys)
            self.progress.embedded += len(item.keys)
        elif isinstance(item, Prepared):
            self.documents.append(item)
            self.size += len(item.passages)
            self.report.passages_reused += item.reused
            if item.last:
                self.report.skipped.extend(item.document.skipped_parts)
            if item.first == 0:
                listed = self.report.changed if item.file.abspath in self.stored else self.report.added
                listed.append(item.file.source)
            if not item.last:
                self.partial.add(item.file.abspath)
        elif isinstance(item, Touched):
            self.touched.append((self.stored[item.file.abspath].id, item.file))
            self.report.unchanged += 1
            self.done(item.file, 0)
        else:
            if item.file.abspath in self.partial:  # a streamed file failed part of the way: drop its parts
                self._drop(item.file)
            self.report.skipped.append(item.skipped)
            self.done(item.file, 0)
        if self.size >= self.batch:
            self.commit()

    def commit(self) -> None:
        if not self.vectors and not self.documents:
            return
        with self.store.transaction():
            for v in self.vectors:
                self.store.add_embeddings(v.keys, v.vectors, run=self.run_number, sentences=v.sentences)
            for item in self.documents:
                self.store.stage_document(_document_row(item.document),
                                          self.settings.to_dict() if item.last else _PART_STAGED,
                                          [_passage_row(p, k) for p, k in zip(item.passages, item.keys)],
                                          first=item.first)
        for item in self.documents:
            self.progress.passages += len(item.passages)
            if item.last:
                self.partial.discard(item.file.abspath)
                self.staged.append(item.file)
                self.done(item.file, 0)
        self.vectors, self.documents, self.size = [], [], 0
        self.batches += 1
        _crash_point("batch-committed", self.batches)

    def _drop(self, f: SourceFile) -> None:
        """Forget a streamed file's parts, staged or waiting: it is reported as skipped."""
        self.partial.discard(f.abspath)
        self.size -= sum(len(d.passages) for d in self.documents if d.file.abspath == f.abspath)
        self.documents = [d for d in self.documents if d.file.abspath != f.abspath]
        for listed in (self.report.added, self.report.changed):
            if f.source in listed:
                listed.remove(f.source)
        with self.store.transaction():
            self.store.unstage([f.abspath])

    def done(self, f: SourceFile, passages: int) -> None:
        self.progress.files_done += 1
        self.progress.bytes_done += f.size
        self.progress.passages += passages
        if self.on_progress:
            self.on_progress(self.progress)


# -- publish -------------------------------------------------------------------------
def _publish(store: Store, index_dir: Path, plan: _Plan, staged: list[SourceFile], report: IndexReport,
             built_with: dict, dimension: int | None, meta: dict, run_number: int, vector_setting: str | None,
             repair: set[str] = frozenset()) -> None:
    previous_generation = meta.get("generation") or 0
    generation = previous_generation + 1
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    stored = {} if report.rebuilt else store.documents()
    unreadable = {s.source for s in report.skipped}
    gone = [d.id for d in plan.gone] + [d.id for p, d in stored.items() if d.source in unreadable]
    gone += [stored[f.abspath].id for f in staged if f.abspath in stored]
    # An index whose terms came from another analysis: write its lexical folder afresh.
    # So is a damaged one (kb.store.checksums): from the passages SQLite holds.
    reanalyse = bool(previous_generation and meta.get("lexical") and not report.rebuilt
                     and ((meta.get("lexical_analyzer") or UNRECORDED_ANALYZER) != ANALYZER or "lexical" in repair))
    changes = bool(gone or staged or report.rebuilt or not previous_generation or reanalyse)
    dimension = dimension or meta.get("dimension") or _model_dimension()

    current = {meta.get("lexical"), *(VectorLayout.from_dict(meta["vectors"]).files() if meta.get("vectors") else [])}
    try:
        with store.transaction():
            if report.rebuilt:
                store.conn.execute("DELETE FROM documents")
            old_keys = store.vector_keys_of(gone)
            store.delete_documents(gone)
            for doc_id, f in plan.touched:
                store.touch_document(doc_id, f.source, f.size, f.mtime_ns)
            newest_before = store.max_passage_id()
            store.publish_staged([f.abspath for f in staged], {f.abspath: f.source for f in staged}, now)
            _crash_point("writing")
            lexical = meta.get("lexical")
            if changes:
                previous = None if report.rebuilt or reanalyse or not lexical else index_dir / lexical
                lexical = f"lexical.{generation}"
                writer = LexicalWriter(index_dir / lexical, previous)
                try:
                    writer.delete_documents(gone)
                    writer.add(store.passages_after(0 if reanalyse else newest_before))
                    writer.commit()
                except BaseException:
                    writer.abandon()  # its threads must stop writing before the folder is removed
                    raise
                del writer
            previous_layout = None if report.rebuilt or not meta.get("vectors") else VectorLayout.from_dict(meta["vectors"])
            setting = vector_setting or meta.get("vector_index_setting") or "auto"
            if "vectors" in repair:  # a damaged base: all of it again, from SQLite's vectors
                layout = _update_vectors(store, index_dir, generation, dimension, None, setting)
            elif changes or previous_layout is None or setting != (meta.get("vector_index_setting") or "auto"):
                layout = _update_vectors(store, index_dir, generation, dimension, previous_layout, setting)
            else:
                layout = previous_layout
            _crash_point("derived-written")
            store.unstage([f.abspath for f in staged])
            _record_skipped(store, report, staged, plan.scope)
            report.documents, report.passages = store.counts()
            for key, value in built_with.items():
                store.set_meta(key, value)
            store.set_meta("dimension", dimension)
            store.set_meta("lexical", lexical)
            store.set_meta("lexical_analyzer", ANALYZER)
            store.set_meta("vectors", layout.to_dict())
            store.set_meta("checksums", checksums.record(index_dir, checksums.generation_files(
                index_dir, lexical, layout.files()), previous=meta.get("checksums")))
            store.set_meta("vector_index_setting", setting)
            store.set_meta("generation", generation)
            store.set_meta("rebuild_from", None)
            store.set_meta("published_run", run_number)
            if changes:
                store.set_meta("built_at", now)
            if report.rebuilt:
                store.prune_embeddings()
            else:
                store.prune_embeddings(old_keys)
                if (meta.get("published_run") or 0) < run_number - 1:
                    # Runs since the last publish were killed: drop what they embedded for
                    # files that are gone or changed again since.
                    store.prune_embeddings(since_run=(meta.get("published_run") or 0) + 1)
    except BaseException:
        # Nothing was committed: the new generation's files go (on a full disk, their
        # space is wanted back); the current generation's stay, untouched.
        try:
            _remove_unused_files(index_dir, keep=current)
        except OSError:  # the next run removes them; the error to report is the first one
            pass
        raise
    _crash_point("committed")
    _remove_unused_files(index_dir, keep={lexical, *layout.files()})
    if gone or report.rebuilt:
        store.reclaim_space()


def _record_skipped(store: Store, report: IndexReport, staged: list[SourceFile],
                    scope: set[str] | None = None) -> None:
    """Keep what this run could not index in the index (`kb info`), by category. A
    watcher's update looked only at its scope: what was skipped elsewhere still stands."""
    from .documents import skip_category

    reread = {f.source for f in staged}
    indexed = {d.source for d in store.documents().values()} - reread
    rows = [(s.source, s.file or s.source, s.reason, s.category) for s in report.skipped]
    rows += [(path, path, "unsupported file type", skip_category("unsupported file type"))
             for path in report.ignored_files]
    outside = None if scope is None else (lambda file: not _within(os.path.abspath(file), scope))
    store.replace_skipped(rows, indexed, outside)


def _update_vectors(store: Store, index_dir: Path, generation: int, dimension: int,
                    previous: VectorLayout | None, setting: str) -> VectorLayout:
    live = store.counts()[1]
    removed = store.removed_ids(previous.max_id) if previous else np.zeros(0, np.int64)
    delta = store.count_after(previous.max_id) if previous else live
    if previous is not None and not vector_index.needs_rewrite(previous, live, delta, len(removed), setting):
        return previous
    layout = vector_index.write_base(
        index_dir, generation, dimension, live, store.max_passage_id(),
        rows=lambda: store.vector_rows(dimension), previous=previous, removed=removed,
        delta=lambda: store.vector_rows(dimension, after=previous.max_id if previous else -1), setting=setting)
    store.clear_removed()
    return layout


def _remove_unused_files(index_dir: Path, keep: set) -> None:
    """Older generations' files, and half-written ones of killed runs (we hold the lock)."""
    import shutil

    for path in index_dir.iterdir():
        name = path.name
        derived = name.startswith(("lexical.", "vectors.", ".vectors."))
        if derived and name not in keep:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# -- helpers ---------------------------------------------------------------------------
def _within(abspath: str, scope: set[str]) -> bool:
    """Whether abspath is one of scope's paths or lies under one (a few set look-ups)."""
    while True:
        if abspath in scope:
            return True
        parent = os.path.dirname(abspath)
        if parent == abspath:
            return False
        abspath = parent


@contextmanager
def _ocr_cache(index_dir: Path):
    """OCR text cached by page content beside the index while files are read (kb.store.ocr_cache)."""
    from ..store.ocr_cache import FILE, OcrCache
    from .readers.ocr import use_cache

    cache = OcrCache(index_dir / FILE)
    try:
        with use_cache(cache):
            yield cache
    finally:
        cache.close()


def _crash_point(name: str, count: int = 1) -> None:
    """Fault injection for the crash-safety tests: KB_CRASH_AT=name (or name:N, the Nth
    time there) kills this process here."""
    wanted = os.environ.get("KB_CRASH_AT")
    if wanted and wanted in (name, f"{name}:{count}") and (wanted != name or count == 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _stored_settings(store: Store) -> ChunkSettings | None:
    stored = store.get_meta("chunking")
    return ChunkSettings(**stored) if stored else None


def _model_dimension() -> int:
    """The packaged model's output size, from its config: no model is loaded."""
    import json

    model = packaged_model()
    config = json.loads((model.path / "config.json").read_text())
    return int(config["hidden_size"])


def _document_row(doc: Document) -> dict:
    f = doc.file
    return {"abspath": f.abspath, "source": f.source, "kind": f.kind, "size": f.size,
            "mtime_ns": f.mtime_ns, "sha256": doc.sha256}


def _passage_row(p: Passage, key: bytes) -> dict:
    return {"text": p.text, "context": p.context, "char_start": p.char_start, "char_end": p.char_end,
            "line_start": p.line_start, "line_end": p.line_end, "page": p.page, "record": p.record,
            "location": p.location, "vector_key": key, "indexed": p.indexed}
