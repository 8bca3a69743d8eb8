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
    # Where the section sits, in words a person can look up: "slide 3", "sheet Budget,
    # rows 2-41", "message 4", "OCR". Cited after the page (kb.query.hits.Hit.citation).
    location: str | None = None
    # Not read, and why (a scanned page where OCR cannot run): such a section has no
    # text; the run reports it as a skipped part of its file ("scan.pdf (page 3)").
    skipped: str | None = None
    title: str = ""  # shown with the passage and embedded as its context
    markdown: bool = False  # headings travel with the passages under them
    single_line: bool = False  # the whole section is one line of the file (a JSONL record)
    outline: tuple[Stretch, ...] | None = None  # the reader's own structure (module docstring)
    markup: tuple[tuple[int, int], ...] = ()  # sorted, disjoint spans that are not prose


def one_after_another(sections: list[Section]) -> list[Section]:
    """The sections with line numbers counted on through them, as if their texts stood
    one below the other: a citation's lines then name one place in the whole document
    (the extracted text of a deck, a workbook or a mailbox), whatever section it is in."""
    from dataclasses import replace

    laid_out, line = [], 1
    for s in sections:
        laid_out.append(replace(s, first_line=line))
        line += s.text.count("\n") + 1
    return laid_out
