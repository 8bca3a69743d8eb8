"""kb: a local, offline, searchable knowledge base with semantic retrieval.

The pipeline, one subpackage per stage; each imports only the stages below it:

    cli                      parses options, calls the library, renders
    serve/                   HTTP server and web page, MCP server, remote client
    watch                    `kb watch`: drives knowledge_base as its folders change
    knowledge_base           the library API: index(), ask(), info()
    query/                   search, fusion, best sentence -> Hit, render
    ingest/                  files -> documents -> sections -> passages; the index run
    store/   embed/          SQLite + FAISS + tantivy on disk; text -> vectors
    errors                   every failure with its exit code

    evaluate: `kb eval` scores all of it on BEIR-layout datasets.

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
from .query.hits import Hit

if TYPE_CHECKING:
    from .knowledge_base import KnowledgeBase
    from .ingest.passages import ChunkSettings, Passage
    from .ingest.pipeline import IndexReport

_LAZY = {"KnowledgeBase": "knowledge_base", "IndexReport": "ingest.pipeline",
         "ChunkSettings": "ingest.passages", "Passage": "ingest.passages"}

__all__ = [
    "KnowledgeBase", "Hit", "IndexReport", "ChunkSettings", "Passage",
    "KbError", "BadInput", "NoIndex", "IndexMismatch", "CorruptIndex", "IndexBusy", "NoResults",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'kb' has no attribute {name!r}")
