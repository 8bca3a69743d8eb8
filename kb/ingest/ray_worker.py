"""What runs on a Ray worker: read and chunk files, embed passages, the model loaded once.

A worker is a Ray actor started by kb.ingest.prepare_ray for one `kb index` run. It never sees
the index: it turns what the driver sends (a file and usually its bytes; a batch of
texts) into what the driver writes (kb.ingest.prepare items; vectors). Everything it returns is
an ordinary kb value, so the driver's writer cannot tell a worker's results from
LocalExecutor's.

On a CPU the worker embeds with kb's ONNX embedder (`load_embedder`), its thread pool
sized to the CPUs Ray gave the actor: onnxruntime would otherwise start a thread per core
of the machine, and workers sharing a machine would fight over them. Given a GPU, it
embeds with sentence-transformers on CUDA, but only after checking that its vectors for
the probe texts agree with the ONNX embedder's (cosine >= 0.9999): a node with a broken
driver or build must fail loudly, not put different vectors into the index.

Errors a file can cause are caught per file (kb.ingest.prepare.read_and_chunk): an exception
escaping an actor method would fail the whole run.
"""

from __future__ import annotations

import os
import socket
from typing import Sequence

import numpy as np

from .documents import Skipped, SourceFile
from ..errors import KbError
from ..embed.model import TokenCounter, offline_environment, packaged_model
from .passages import ChunkSettings
from .prepare import Failed, Prepared, Touched, embed_passages, keys_for, read_and_chunk

CPU_TEXTS_PER_CALL = 64  # ~3-6 s of one CPU thread: little is redone when a worker dies
GPU_TEXTS_PER_CALL = 512  # a GPU needs big batches to be busy
GPU_BATCH = 128  # texts per forward pass on a GPU


class Worker:
    """One model per actor: `chunk` files, `embed` texts. Wrapped by ray.remote at run time,
    so importing this module needs no Ray."""

    def __init__(self, settings: ChunkSettings, threads: int, gpu: bool):
        offline_environment()
        model = packaged_model()
        self.settings = settings
        self.model_id = model.vector_id
        self.counter = TokenCounter(model.tokenizer_file)
        self.device = "cuda" if gpu else "cpu"
        self.embedder = worker_embedder(threads, gpu)

    def identity(self) -> dict:
        """Who this worker is: the driver refuses workers with another model."""
        import ray

        return {"weights_sha256": self.model_id, "pid": os.getpid(), "host": socket.gethostname(),
                "node": ray.get_runtime_context().get_node_id(), "device": self.device}

    def chunk(self, file: SourceFile, raw: bytes | None, stored_sha256: str | None) -> Prepared | Touched | Failed:
        """Read and chunk one file (from raw, its bytes, or else from its path on this node).

        Returns Prepared with the passages' vector keys (the driver looks them up),
        Touched if the bytes are those already indexed, or Failed."""
        result = read_and_chunk(file, self.counter, self.settings, raw)
        if isinstance(result, Skipped):
            return Failed(file, result)
        document, passages = result
        if stored_sha256 == document.sha256:
            return Touched(file)
        return Prepared(file, document, passages, keys_for(passages, self.model_id))

    def embed(self, keys: list[bytes], passages: Sequence) -> tuple[list[bytes], np.ndarray, list]:
        """The passages' vectors and packed sentence vectors (kb.ingest.prepare.embed_passages),
        with the keys they were sent with (results arrive in any order)."""
        return (keys, *embed_passages(self.embedder, passages))


def worker_embedder(threads: int, gpu: bool):
    """ONNX on `threads` CPU threads; with a GPU, sentence-transformers on CUDA once it has
    shown it agrees with ONNX."""
    from ..embed.embedding import SentenceTransformerEmbedder, load_embedder

    model = packaged_model()
    cpu = load_embedder(model, for_indexing=True, threads=threads)
    if not gpu:
        return cpu
    cuda = SentenceTransformerEmbedder(model, device="cuda", threads=threads)
    cuda.batch_size = GPU_BATCH
    check_agrees(cuda, cpu)
    return cuda


def check_agrees(candidate, reference, minimum: float | None = None) -> float:
    """The lowest cosine between two embedders' vectors for the probe texts (short, long,
    and longer than the model's window); KbError if it is under `minimum` (default 0.9999)."""
    from ..embed.onnx_embedder import MIN_COSINE, PROBES

    minimum = MIN_COSINE if minimum is None else minimum
    texts = list(PROBES)
    cosine = float(np.min(np.sum(candidate.embed(texts) * reference.embed(texts), axis=1)))
    if not cosine >= minimum:
        raise KbError(f"vectors on {socket.gethostname()} disagree with the ONNX embedder "
                      f"(cosine {cosine:.6f} < {minimum}); check the node's torch and CUDA builds")
    return cosine
