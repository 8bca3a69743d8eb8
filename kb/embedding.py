"""Turn texts into unit-length vectors with the packaged model.

sentence-transformers is the reference implementation: it loads the model and is what
every other backend must agree with. It is imported only inside the class that needs
it, so commands that embed nothing never pay for torch.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable, Protocol, Sequence

import numpy as np

from .model import ModelFiles, offline_environment

Progress = Callable[[int], None]  # called with the number of texts just embedded


class Embedder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors of one model."""

    model: ModelFiles
    dimension: int

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """The reference backend: sentence-transformers on torch, CPU only."""

    batch_size = 32

    def __init__(self, model: ModelFiles):
        offline_environment()
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(os.cpu_count() or 1)
        self.model = model
        self.st_model = SentenceTransformer(str(model.path), device="cpu")
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


@lru_cache(maxsize=4)
def load_embedder(model: ModelFiles, *, for_indexing: bool = False) -> Embedder:
    """The embedder for building (for_indexing=True) or querying an index.

    Cached per process: a script or test that runs many commands loads the model once.
    """
    return SentenceTransformerEmbedder(model)
