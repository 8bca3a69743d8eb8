"""Files -> passages with vectors: the expensive part of a run, done by an executor.

An executor reads and chunks each file it is given, looks each passage's vector up by
content (`known`), embeds the rest, and yields:
- Vectors: a batch of newly embedded vectors, as soon as the model returns them;
- Prepared: a document with its passages and their vector keys, once every key is
  stored or was yielded in Vectors;
- Touched: the file's bytes are those already indexed (only the mtime or the path moved);
- Failed: the file could not be used, with the reason.
One item per file, in any order. The run's single writer (kb.ingest.pipeline) commits what
executors yield in batches, so a killed run loses at most the batch in flight; executors
never touch the index. LocalExecutor works in this process: a thread reads and chunks
ahead while the model embeds batches of passages gathered across files. kb.ingest.prepare_ray
does the same on a Ray cluster.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from .documents import Document, Skipped, SourceFile, read_document
from ..errors import MACHINE_ERRNOS, io_failure
from ..embed.model import TokenCounter, packaged_model
from .passages import ChunkSettings, Passage, make_passages, section_passages
from .chunking import sentence_spans
from ..store.database import vector_key
from ..store.sentence_vectors import pack

READ_AHEAD = 64  # documents (or parts of a streamed one) read and chunked ahead of the embedder
PART = 256  # passages of a streamed document (a mailbox, a long PDF) handed on together

Known = Callable[[Sequence[bytes]], set]  # vector keys -> those already stored


@dataclass
class Vectors:
    keys: list[bytes]
    vectors: np.ndarray
    sentences: list[bytes | None] | None = None  # packed sentence vectors (kb.store.sentence_vectors)


@dataclass
class Prepared:
    file: SourceFile
    document: Document
    passages: list[Passage]
    keys: list[bytes]
    reused: int = 0  # passages whose vectors were already stored
    # A streamed document (kb.ingest.documents.streamed) comes in parts of up to PART
    # passages, in order: `first` is the ordinal of this part's first passage in the
    # document, `last` is set on its final part (the document's skipped_parts are
    # complete by then). A document read whole is one part.
    first: int = 0
    last: bool = True


@dataclass
class Touched:
    file: SourceFile


@dataclass
class Failed:
    file: SourceFile
    skipped: Skipped


Item = Vectors | Prepared | Touched | Failed


class Executor(Protocol):
    def prepare(self, files: Sequence[SourceFile], *, settings: ChunkSettings, stored_sha256: dict[str, str],
                known: Known) -> Iterator[Item]: ...


# Marks the key of a passage with markup: before this mark, such a passage's sentence
# vectors pooled tokens at offsets into its text rather than into what the model read
# (the text less its markup), so they drifted off their sentences. A key of their own,
# with the reading's version bumped (kb.ingest.documents.READING: every file is read
# again), makes the next run re-embed those passages, and only those.
ALIGNED_SENTENCES = "\0sentences aligned"


def keys_for(passages: Sequence[Passage], model_id: str) -> list[bytes]:
    """Vector keys: the model's identity and exactly the text it reads."""
    prefix = model_id + "\0"
    return [vector_key(prefix + p.embedding_text + (ALIGNED_SENTENCES if p.indexed is not None else ""))
            for p in passages]


def embed_passages(embedder, passages: Sequence[Passage]) -> tuple[np.ndarray, list[bytes | None]]:
    """The passages' vectors, and each one's sentence vectors packed (kb.store.sentence_vectors),
    pooled in the same model run. None for a passage of one sentence (its own vector says
    it all) and for every passage when the embedder cannot pool (it has no
    embed_with_sentences): the highlight then reads those by their words alone."""
    texts = [p.embedding_text for p in passages]
    pool = getattr(embedder, "embed_with_sentences", None)
    if pool is None:
        return embedder.embed(texts), [None] * len(texts)
    spans = [s if len(s := sentence_spans(p.text)) > 1 else [] for p in passages]
    # Spans are stored as offsets into the text (the highlight marks them there); the
    # model read the headings, a newline, then the text without its markup.
    vectors, sentences = pool(texts, [[p.embedded_span(a, b) for a, b in s] for p, s in zip(passages, spans)])
    return vectors, [pack(s, v) if s else None for s, v in zip(spans, sentences)]


def read_and_chunk(f: SourceFile, counter: TokenCounter, settings: ChunkSettings, raw: bytes | None = None):
    """(document, passages), or Skipped with the reason the file cannot be used.

    raw: the file's bytes, if they were already read (see kb.ingest.documents.read_document).
    A streamed document is read whole here (a Ray worker returns it): LocalExecutor reads
    it in parts instead (read_parts)."""
    return _guarded(f, lambda: _whole(read_document(f, raw), counter, settings))


def _whole(document: Document, counter: TokenCounter, settings: ChunkSettings):
    if not isinstance(document.sections, list):
        document = replace(document, sections=list(document.sections))
    return document, make_passages(document, counter, settings)


def _guarded(f: SourceFile, work: Callable[[], object]):
    """work(), or Skipped with the reason the file cannot be used."""
    try:
        return work()
    except (OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno in MACHINE_ERRNOS:
            # Not this file's fault: skipping it would drop it from the index. Stop the run.
            raise io_failure(e) from None
        return Skipped(f.source, getattr(e, "strerror", None) or str(e))
    except Exception as e:  # a parser's bug on one odd file must not cost the run
        return Skipped(f.source, f"could not be read ({type(e).__name__}: {str(e)[:80]})")


def read_parts(f: SourceFile, counter: TokenCounter, settings: ChunkSettings,
               stored_sha256: str | None = None) -> Iterator[object]:
    """(document, passages, first, last) parts of a file, then Skipped if it fails on the
    way: one part for a file read whole; a streamed file's passages PART at a time, so
    only a part's text is held (a file whose sha256 is stored_sha256 is not read on)."""
    document = _guarded(f, lambda: read_document(f))
    if isinstance(document, Skipped):
        yield document
        return
    if document.sha256 == stored_sha256:  # unchanged: the caller touches it, nothing more is read
        yield document, [], 0, True
        return
    if isinstance(document.sections, list):
        passages = _guarded(f, lambda: make_passages(document, counter, settings))
        yield passages if isinstance(passages, Skipped) else (document, passages, 0, True)
        return
    parts = iter(_streamed_parts(document, counter, settings))
    first = 0
    while True:
        part = _guarded(f, lambda: next(parts, None))
        if isinstance(part, Skipped):
            yield part
            return
        if part is None:
            yield document, [], first, True
            return
        yield document, part, first, False
        first += len(part)


def _streamed_parts(document: Document, counter: TokenCounter, settings: ChunkSettings) -> Iterator[list[Passage]]:
    part: list[Passage] = []
    for section in document.sections:
        part.extend(section_passages(section, counter, settings))
        if len(part) >= PART:
            yield part
            part = []
    if part:
        yield part


class LocalExecutor:
    """This process: read and chunk in a thread, embed in batches gathered across files."""

    def __init__(self, get_embedder: Callable[[], object], model_id: str, batch: int):
        self.get_embedder, self.model_id, self.batch = get_embedder, model_id, max(1, batch)

    def prepare(self, files: Sequence[SourceFile], *, settings: ChunkSettings, stored_sha256: dict[str, str],
                known: Known) -> Iterator[Item]:
        waiting: deque[tuple[Prepared | Failed, int]] = deque()  # documents, and texts queued when they came
        missing: dict[bytes, Passage] = {}  # key -> passage, for the model, in order
        queued = embedded = 0

        def embed_batch():
            nonlocal embedded
            keys = list(missing)[: self.batch]
            if keys:
                yield Vectors(keys, *embed_passages(self.get_embedder(), [missing[k] for k in keys]))
            for k in keys:
                del missing[k]
            embedded += len(keys)
            while waiting and waiting[0][1] <= embedded:
                yield waiting.popleft()[0]

        waiting_passages = 0
        for f, result in read_ahead(files, settings, stored_sha256):
            if isinstance(result, Skipped):
                if waiting and waiting[-1][0].file is f:  # a streamed file failed part of the way:
                    waiting.append((Failed(f, result), queued))  # after its parts, which the writer drops
                else:
                    yield Failed(f, result)
                continue
            document, passages, first, last = result
            if first == 0 and last and stored_sha256.get(f.abspath) == document.sha256:
                yield Touched(f)
                continue
            keys = keys_for(passages, self.model_id)
            cached = known(keys)
            for key, p in zip(keys, passages):
                if key not in cached and key not in missing:
                    missing[key] = p
                    queued += 1
            reused = sum(1 for k in keys if k in cached)
            waiting.append((Prepared(f, document, passages, keys, reused=reused, first=first, last=last), queued))
            waiting_passages += len(passages)
            # Embed a full batch; also release documents that need nothing embedded, so
            # a resumed run whose vectors are all stored still streams.
            while len(missing) >= self.batch or waiting_passages >= 2 * self.batch:
                for item in embed_batch():
                    if isinstance(item, Prepared):
                        waiting_passages -= len(item.passages)
                    yield item
        while waiting or missing:
            yield from embed_batch()


def read_ahead(files: Sequence[SourceFile], settings: ChunkSettings,
               stored_sha256: dict[str, str] | None = None) -> Iterator[tuple[SourceFile, object]]:
    """(file, a part (read_parts) or Skipped) in order, produced by a thread ahead of the caller."""
    items: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def produce():
        try:
            counter = TokenCounter(packaged_model().tokenizer_file)
            for f in files:
                if stop.is_set():
                    return
                for part in read_parts(f, counter, settings, (stored_sha256 or {}).get(f.abspath)):
                    items.put((f, part))
                    if stop.is_set():
                        return
        except BaseException as e:  # surfaced in the caller's thread
            items.put((None, e))
        items.put(None)

    thread = threading.Thread(target=produce, name="kb-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not None:
            if item[0] is None:
                raise item[1]
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.05)
