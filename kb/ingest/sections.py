"""What a reader makes of a file: the stretches of text kb chunks, with where they sit.

A leaf module: the readers (kb.ingest.readers) make sections and kb.ingest.documents, which calls the
readers, collects them; neither needs to import the other to share this type.

Structure travels in two fields a reader may fill:
- outline: the stretches of the text that belong together (a document section, one API
  entry), each with its heading trail. A passage never spans two stretches, and every
  passage of a stretch is embedded and BM25-indexed with its trail as context. Markdown
  readers set `markdown=True` instead and the chunker finds the heading trails itself.
- markup: spans of the text that are not prose (table borders, directive options, link
  targets, comments). Passages show them, as the file has them; what is embedded and
  BM25-indexed leaves them out (kb.ingest.passages.indexed_text).
"""

from __future__ import annotations

from dataclasses import dataclass

# (start, end, heading trail): a stretch of a section's text and the headings it sits under.
Stretch = tuple[int, int, str]


@dataclass(frozen=True)
class Section:
    """A stretch of a document that is chunked on its own.

    A text file is one section (its whole decoded text, so char offsets are file
    offsets); a PDF has one per page, a JSONL file one per record.
    """

    text: str
    first_line: int = 1  # line number in the source file of text's first line
    page: int | None = None  # 1-based page (PDF)
    record: str | None = None  # record id (JSONL)
    title: str = ""  # shown with the passage and embedded as its context
    markdown: bool = False  # headings travel with the passages under them
    single_line: bool = False  # the whole section is one line of the file (a JSONL record)
    outline: tuple[Stretch, ...] | None = None  # the reader's own structure (module docstring)
    markup: tuple[tuple[int, int], ...] = ()  # sorted, disjoint spans that are not prose
