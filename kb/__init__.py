"""kb: a local, offline, searchable knowledge base with semantic retrieval.

The pipeline, one module per arrow:

    files --documents--> Document --passages/chunking--> Passage --embedding--> vectors
        --store (SQLite truth) + lexical (tantivy BM25) + vector_index (FAISS)
        --search (dense + lexical, fusion, merged overlaps, best sentence)--> Hit
    evaluate: `kb eval` scores all of it on BEIR-layout datasets.
    server (HTTP + web page), mcp_server (agents) and client (`kb ask --server`) sit on top.

Importing kb is light: the names below load on first use (PEP 562), so `kb --help` and
`kb ask --server` never import numpy or the search stack, and torch and
sentence-transformers load only when text is embedded.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import (
    BadInput,
    CorruptIndex,
    IndexBusy,
    IndexMismatch,
    KbError,
    NoIndex,
    NoResults,
)
from .hits import Hit

if TYPE_CHECKING:
    from .knowledge_base import KnowledgeBase
    from .passages import ChunkSettings, Passage
    from .pipeline import IndexReport

_LAZY = {"KnowledgeBase": "knowledge_base", "IndexReport": "pipeline",
         "ChunkSettings": "passages", "Passage": "passages"}

__all__ = [
    "KnowledgeBase", "Hit", "IndexReport", "ChunkSettings", "Passage",
    "KbError", "BadInput", "NoIndex", "IndexMismatch", "CorruptIndex", "IndexBusy", "NoResults",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'kb' has no attribute {name!r}")
