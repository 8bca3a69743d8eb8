"""kb: a local, offline, searchable knowledge base with semantic retrieval.

The pipeline, one module per arrow:

    files --documents--> Document --passages/chunking--> Passage --embedding--> vectors
        --store (SQLite truth, with lexical FTS5 BM25) + vector_index (FAISS)
        --search (dense + lexical, fusion, merged overlaps, best sentence)--> Hit
    evaluate: `kb eval` scores all of it on BEIR-layout datasets.

Importing kb is light: torch and sentence-transformers load only when text is embedded.
"""

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
from .knowledge_base import IndexReport, KnowledgeBase
from .passages import ChunkSettings, Passage

__all__ = [
    "KnowledgeBase", "Hit", "IndexReport", "ChunkSettings", "Passage",
    "KbError", "BadInput", "NoIndex", "IndexMismatch", "CorruptIndex", "IndexBusy", "NoResults",
]
