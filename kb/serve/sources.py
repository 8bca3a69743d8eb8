"""Indexed files and the text around a citation: the web page's citation view and the
MCP server's resources.

Only files the index holds can be reached. A request names a file as hits cite it (its
`source`, or its absolute path); the name is looked up among the indexed documents and
only the path stored there is ever opened. Nothing from a request is joined, normalised
or opened as a path, so `../`, absolute paths and encoded tricks have nothing to work on.

Text is re-read with the reader that indexed it, so the lines shown for a PDF page, an
HTML or DOCX file or a JSONL record are the extracted text's lines that citations count,
not raw markup. Parsed documents are cached per (path, size, mtime).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..ingest.documents import Document, SourceFile, read_document
from ..errors import BadInput, NotIndexed

if TYPE_CHECKING:
    from ..knowledge_base import KnowledgeBase

MEDIA_TYPES = {".md": "text/markdown", ".html": "text/html", ".htm": "text/html", ".jsonl": "application/jsonl",
               ".pdf": "application/pdf",
               ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


@dataclass(frozen=True)
class IndexedFile:
    """A document as the index recorded it."""

    source: str  # as cited
    abspath: str
    size: int
    mtime_ns: int

    @property
    def media_type(self) -> str:
        """The file's own type (what it is on disk, not the text kb extracted from it)."""
        return MEDIA_TYPES.get(Path(self.abspath).suffix.lower(), "text/plain")

    def state(self) -> str:
        """"fresh", "stale" (changed since indexing: citations may be off) or "gone"."""
        try:
            st = os.stat(self.abspath)
        except OSError:
            return "gone"
        return "fresh" if (st.st_size, st.st_mtime_ns) == (self.size, self.mtime_ns) else "stale"


def indexed_files(kb: KnowledgeBase) -> list[IndexedFile]:
    """Every document in the index, sorted by how it is cited."""
    return [IndexedFile(d["source"], d["abspath"], d["size"], d["mtime_ns"]) for d in kb.documents()]


def find_indexed(kb: KnowledgeBase, name: str) -> IndexedFile:
    """The indexed file cited as `name` (or with that absolute path); NotIndexed otherwise."""
    files = indexed_files(kb)
    for f in files:
        if name == f.source:
            return f
    for f in files:
        if name == f.abspath:
            return f
    raise NotIndexed(f"{name!r} is not in the index")


def source_view(file: IndexedFile, *, line_start: int, line_end: int | None = None, page: int | None = None,
                record: str | None = None, context: int = 10) -> dict:
    """The lines around a citation, each with its line number and its offset in the text
    the passage offsets count in, so a page can mark the passage and its best sentence
    exactly: {"source", "page", "record", "line_start", "line_end", "stale", "lines": [...]}.
    """
    line_end = line_start if line_end is None else line_end
    if line_start < 1 or line_end < line_start:
        raise BadInput("line_start must be at least 1 and line_end at least line_start")
    if context < 0:
        raise BadInput("context must be at least 0")
    section = _section(_document(file), line_start, page, record, file.source)
    lines, offset = [], 0
    for i, text in enumerate(section.text.split("\n")):
        # A JSONL record is one line of its file, however many lines its text holds.
        number = section.first_line if section.single_line else section.first_line + i
        if line_start - context <= number <= line_end + context:
            lines.append({"number": number, "start": offset, "text": text})
        offset += len(text) + 1
    return {"source": file.source, "page": section.page, "record": section.record, "line_start": line_start,
            "line_end": line_end, "stale": file.state() != "fresh", "lines": lines}


def document_text(file: IndexedFile) -> str:
    """The text kb indexed from a file: the decoded file for text formats, the extracted
    text for HTML and DOCX, PDF pages separated by form feeds (lines count per page, as
    in citations), and a JSONL file as its own lines (records are cited by line)."""
    document = _document(file)
    if any(s.single_line for s in document.sections):
        from ..ingest.readers.text import decode_text

        return decode_text(Path(file.abspath).read_bytes())
    return "\f".join(s.text for s in document.sections)


def _document(file: IndexedFile) -> Document:
    state = file.state()
    if state == "gone":
        raise NotIndexed(f"{file.source} was indexed but is no longer on disk; run `kb index`")
    st = os.stat(file.abspath)
    return _read(file.source, file.abspath, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _read(source: str, abspath: str, size: int, mtime_ns: int) -> Document:
    # Keyed on size and mtime: a file changed on disk is read again.
    kind = Path(abspath).suffix.lower()
    try:
        return read_document(SourceFile(source, abspath, size, mtime_ns, kind))
    except ValueError as e:
        raise NotIndexed(f"{source} can no longer be read ({e}); run `kb index`") from None


def _section(document: Document, line_start: int, page: int | None, record: str | None, source: str):
    for s in document.sections:
        if page is not None and s.page != page:
            continue
        if record is not None and s.record != record:
            continue
        last = s.first_line if s.single_line else s.first_line + s.text.count("\n")
        if s.first_line <= line_start <= last:
            return s
    where = f" on page {page}" if page is not None else f" in record {record}" if record is not None else ""
    raise NotIndexed(f"{source} has no line {line_start}{where} (changed since indexing? run `kb index`)")
