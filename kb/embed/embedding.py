"""Turn texts into unit-length vectors with the packaged model.

sentence-transformers is the reference implementation: it loads the model and is what
every other backend must agree with. It is imported only inside the class that needs
it, so commands that embed nothing never pay for torch.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ..errors import BadInput, KbError, first_line
from .pooling import pool_spans
from .model import ModelFiles, offline_environment, packaged_model

Progress = Callable[[int], None]  # called with the number of texts just embedded


class Embedder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors of one model.

    An embedder may also have embed_with_sentences(texts, spans) -> (vectors, one array of
    unit vectors per text, a row per span), pooled from the same run's token vectors
    (kb.ingest.prepare.embed_passages uses it when present; without it, an index stores
    no sentence vectors and highlights by words alone)."""

    model: ModelFiles
    dimension: int

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """The reference backend: sentence-transformers on torch (the CPU, or a Ray worker's GPU).

    threads: CPU threads for torch (default: every core); a Ray worker passes its share.
    """

    batch_size = 32

    def __init__(self, model: ModelFiles, *, device: str = "cpu", threads: int | None = None):
        offline_environment()
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.model = model
        self.st_model = SentenceTransformer(str(model.path), device=device)
        self.dimension = int(self.st_model.get_embedding_dimension())

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Batches of similar length waste less time on padding.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            batch = order[start : start + self.batch_size]
            vectors = self.st_model.encode(
                [texts[i] for i in batch],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[batch] = vectors
            if progress:
                progress(len(batch))
        return out

    def embed_with_sentences(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                             progress: Progress | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """As OnnxEmbedder's: the vectors, and the token vectors pooled per span, from one run."""
        outputs = self.st_model.encode(list(texts), output_value=None, batch_size=self.batch_size,
                                       show_progress_bar=False)
        encoded = self.st_model.tokenizer(list(texts), return_offsets_mapping=True, return_special_tokens_mask=True,
                                          truncation=True, max_length=self.st_model.max_seq_length)
        vectors = np.stack([o["sentence_embedding"].float().cpu().numpy() for o in outputs]).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if progress:
            progress(len(texts))
        return vectors, [pool_spans(o["token_embeddings"].float().cpu().numpy(), offsets, special, s)
                         for o, offsets, special, s in zip(outputs, encoded["offset_mapping"],
                                                            encoded["special_tokens_mask"], spans)]


class HashEmbedder:
    """A stand-in for benchmarks and tests of scale: deterministic unit vectors from a hash
    of each text, at memory speed. Not a model: its vectors mean nothing, so indexes it
    builds are for timing and memory figures only (recall is measured on real vectors)."""

    def __init__(self, model: ModelFiles, dimension: int = 384):
        self.model = model
        self.dimension = dimension

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        import hashlib

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
            out[row] = np.random.default_rng(seed).standard_normal(self.dimension, dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        if progress:
            progress(len(texts))
        return out

    def embed_with_sentences(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                             progress: Progress | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """As OnnxEmbedder's, with each span's text hashed: what an index stores, at memory speed."""
        return self.embed(texts, progress=progress), [self.embed([t[a:b] for a, b in s]) for t, s in zip(texts, spans)]


BACKENDS = ("auto", "onnx", "torch")


def load_embedder(model: ModelFiles, *, for_indexing: bool = False, threads: int | None = None,
                  many_questions: bool = False) -> Embedder:
    """The embedder for building (for_indexing=True) or querying an index.

    The ONNX export in kb's cache is used whenever it reproduces the reference vectors
    (checked once per file, see kb.embed.onnx_embedder): it gives the same vectors faster and
    without importing torch. sentence-transformers is loaded only to export it (once per
    model and user) or when it is unusable, with a note on stderr. KB_EMBEDDER=onnx|torch
    forces a backend (onnx: fail rather than fall back). The int8 variant exists only as
    ONNX: it is made from the fp32 export, and is used or fails, never replaced by other
    vectors. Cached per process: a script or test that runs many commands loads the
    model once. threads: CPU cores the model may use (default: every core); a Ray worker
    passes the CPUs it was given, so workers sharing a machine do not oversubscribe it.
    many_questions: a server or a stream of questions; the model is readied for speed per
    question at load (see OnnxEmbedder's prepack), so every answer uses the same kernels.
    """
    backend = os.environ.get("KB_EMBEDDER") or "auto"
    if backend not in BACKENDS:
        raise BadInput(f"KB_EMBEDDER must be one of {', '.join(BACKENDS)}, not {backend!r}")
    from .onnx_embedder import onnx_path

    # Keyed on the file's location too, so pointing KB_CACHE_DIR elsewhere is honoured.
    return _load_embedder(model, for_indexing, backend, onnx_path(model), threads, many_questions)


@lru_cache(maxsize=4)
def _load_embedder(model: ModelFiles, for_indexing: bool, backend: str, path: Path,
                   threads: int | None = None, many_questions: bool = False) -> Embedder:
    from .onnx_embedder import OnnxEmbedder, OnnxUnavailable, export_onnx

    if model.variant != "fp32":
        return _load_variant(model, for_indexing, backend, path, threads, many_questions)
    if backend == "torch":
        return SentenceTransformerEmbedder(model, threads=threads)
    prepack = _prepack(for_indexing, many_questions)
    cores = _cores(for_indexing, threads)
    try:
        return OnnxEmbedder(model, path, prepack=prepack, **cores)
    except OnnxUnavailable as e:
        # A first `kb index` exporting the model is routine; anything else deserves a word.
        if not (for_indexing and not path.exists()):
            _note(f"{e}; using sentence-transformers this time and exporting the model for next time")
    reference = SentenceTransformerEmbedder(model, threads=threads)
    try:
        export_onnx(reference.st_model, path)
        return OnnxEmbedder(model, path, prepack=prepack, recheck=True, **cores)
    except Exception as e:  # any failure to export leaves the reference backend, never a wrong answer
        problem = first_line(e)
        if backend == "onnx":
            raise KbError(f"the ONNX embedder is unavailable: {problem}") from None
        _note(f"still no usable ONNX model ({problem}); using sentence-transformers")
    return reference


def _load_variant(model: ModelFiles, for_indexing: bool, backend: str, path: Path,
                  threads: int | None = None, many_questions: bool = False) -> Embedder:
    """The int8 embedder, made from the fp32 export when missing or refused; else an error."""
    from .onnx_embedder import OnnxEmbedder, OnnxUnavailable, export_int8

    if backend == "torch":
        raise BadInput(f"KB_EMBEDDER=torch cannot embed for {model.name}: it exists only as ONNX")
    prepack = _prepack(for_indexing, many_questions)
    cores = _cores(for_indexing, threads)
    try:
        return OnnxEmbedder(model, path, prepack=prepack, **cores)
    except OnnxUnavailable as e:
        if not (for_indexing and not path.exists()):
            _note(f"{e}; making the {model.variant} model again")
    fp32 = load_embedder(packaged_model(), for_indexing=True)
    try:
        if not isinstance(fp32, OnnxEmbedder):
            raise OnnxUnavailable("it is made from the fp32 ONNX model, which is unavailable")
        export_int8(fp32.path, path, model)
        return OnnxEmbedder(model, path, prepack=prepack, recheck=True, **cores)
    except Exception as e:  # answering with fp32 vectors instead would mix two models
        problem = first_line(e)
        raise KbError(f"the {model.variant} embedder is unavailable: {problem}") from None


def _prepack(for_indexing: bool, many_questions: bool) -> bool | None:
    """Indexing and servers run the model many times: prepack its weights at load. A
    question may be the process's only one: leave that until a second call (OnnxEmbedder)."""
    return True if for_indexing or many_questions else None


def _cores(for_indexing: bool, threads: int | None) -> dict:
    """How the ONNX embedder spreads over `threads` cores (default: all of them).

    Indexing runs one batch per core, each on one thread: a core taken by another job
    slows only its own batches. A question is one short run, answered soonest with every
    core on it (1.5x faster than one core on an idle machine, and no slower on a busy
    one: onnxruntime's threads do not spin; see bench/query_threads.py).
    """
    from .onnx_embedder import cores

    if for_indexing:
        return {"threads": 1, "workers": threads}
    return {"threads": threads or cores(), "workers": 1}


def _note(message: str) -> None:
    print(f"kb: note: {message}", file=sys.stderr)
