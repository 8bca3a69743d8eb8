"""What a reader makes of a file: the stretches of text kb chunks, with where they sit.

A leaf module: the readers (kb.ingest.readers) make sections and kb.ingest.documents, which calls the
readers, collects them; neither needs to import the other to share this type.
"""

from __future__ import annotations

from dataclasses import dataclass


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
