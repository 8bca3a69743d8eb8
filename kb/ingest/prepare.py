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
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from .documents import Document, Skipped, SourceFile, read_document
from ..errors import MACHINE_ERRNOS, io_failure
from ..embed.model import TokenCounter, packaged_model
from .passages import ChunkSettings, Passage, make_passages
from .chunking import sentence_spans
from ..store.database import vector_key
from ..store.sentence_vectors import pack

READ_AHEAD = 64  # documents read and chunked ahead of the embedder

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


def keys_for(passages: Sequence[Passage], model_id: str) -> list[bytes]:
    """Vector keys: the model's identity and exactly the text it reads."""
    prefix = model_id + "\0"
    return [vector_key(prefix + p.embedding_text) for p in passages]


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
    # The model reads the context (headings) first, then a newline, then the text.
    shifted = [[(a + len(p.context) + 1, b + len(p.context) + 1) for a, b in s] if p.context else s
               for p, s in zip(passages, spans)]
    vectors, sentences = pool(texts, shifted)
    return vectors, [pack(s, v) if s else None for s, v in zip(spans, sentences)]


def read_and_chunk(f: SourceFile, counter: TokenCounter, settings: ChunkSettings, raw: bytes | None = None):
    """(document, passages), or Skipped with the reason the file cannot be used.

    raw: the file's bytes, if they were already read (see kb.ingest.documents.read_document)."""
    try:
        document = read_document(f, raw)
        return document, make_passages(document, counter, settings)
    except (OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno in MACHINE_ERRNOS:
            # Not this file's fault: skipping it would drop it from the index. Stop the run.
            raise io_failure(e) from None
        return Skipped(f.source, getattr(e, "strerror", None) or str(e))
    except Exception as e:  # a parser's bug on one odd file must not cost the run
        return Skipped(f.source, f"could not be read ({type(e).__name__}: {str(e)[:80]})")


class LocalExecutor:
    """This process: read and chunk in a thread, embed in batches gathered across files."""

    def __init__(self, get_embedder: Callable[[], object], model_id: str, batch: int):
        self.get_embedder, self.model_id, self.batch = get_embedder, model_id, max(1, batch)

    def prepare(self, files: Sequence[SourceFile], *, settings: ChunkSettings, stored_sha256: dict[str, str],
                known: Known) -> Iterator[Item]:
        waiting: deque[tuple[Prepared, int]] = deque()  # documents, and texts queued when they came
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
        for f, result in read_ahead(files, settings):
            if isinstance(result, Skipped):
                yield Failed(f, result)
                continue
            document, passages = result
            if stored_sha256.get(f.abspath) == document.sha256:
                yield Touched(f)
                continue
            keys = keys_for(passages, self.model_id)
            cached = known(keys)
            for key, p in zip(keys, passages):
                if key not in cached and key not in missing:
                    missing[key] = p
                    queued += 1
            reused = sum(1 for k in keys if k in cached)
            waiting.append((Prepared(f, document, passages, keys, reused=reused), queued))
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


def read_ahead(files: Sequence[SourceFile], settings: ChunkSettings) -> Iterator[tuple[SourceFile, object]]:
    """(file, (document, passages) or Skipped) in order, produced by a thread ahead of the caller."""
    items: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def produce():
        try:
            counter = TokenCounter(packaged_model().tokenizer_file)
            for f in files:
                if stop.is_set():
                    return
                items.put((f, read_and_chunk(f, counter, settings)))
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
