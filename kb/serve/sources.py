"""Indexed files and the text around a citation: the web page's citation view and the
MCP server's resources.

Only files the index holds can be reached. A request names a file as hits cite it (its
`source`, or its absolute path); the name is looked up among the indexed documents and
only the path stored there is ever opened. Nothing from a request is joined, normalised
or opened as a path, so `../`, absolute paths and encoded tricks have nothing to work on.

Only the content kb indexed leaves: the index keeps each file's SHA-256, and the bytes
read at request time must hash to it, or the file is refused ("changed since indexing;
run `kb index`"). The bytes are read through one descriptor opened with O_NOFOLLOW (and
O_NONBLOCK, so a FIFO put in a file's place cannot hang a worker) and checked with fstat
to be a regular file of the indexed size before a byte is read. A file replaced by a
symlink to a private file, a hard link's other name edited, a FIFO or a device: none of
them can match the hash, so none is served. A file that was itself a symlink inside the
indexed folders when kb indexed it is followed to its target, whose bytes must match
the hash all the same.

Text is re-read with the reader that indexed it, so the lines shown for a PDF page, an
HTML or DOCX file or a JSONL record are the extracted text's lines that citations count,
not raw markup. Verified documents are cached per file identity (device, inode, size,
mtime, ctime): any write to the file changes its ctime, so a cached parse is never
served for changed bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from dataclasses import dataclass
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
    sha256: str = ""  # of the bytes kb indexed: what may be served

    @property
    def media_type(self) -> str:
        """The file's own type (what it is on disk, not the text kb extracted from it)."""
        return MEDIA_TYPES.get(Path(self.abspath).suffix.lower(), "text/plain")


def indexed_files(kb: KnowledgeBase) -> list[IndexedFile]:
    """Every document in the index, sorted by how it is cited."""
    return [IndexedFile(d["source"], d["abspath"], d["size"], d["mtime_ns"], d["sha256"])
            for d in kb.documents()]


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
    # Never stale: only the bytes kb indexed are shown (a changed file is refused).
    return {"source": file.source, "page": section.page, "record": section.record, "line_start": line_start,
            "line_end": line_end, "stale": False, "lines": lines}


def document_text(file: IndexedFile) -> str:
    """The text kb indexed from a file: the decoded file for text formats, the extracted
    text for HTML and DOCX, PDF pages separated by form feeds (lines count per page, as
    in citations), and a JSONL file as its own lines (records are cited by line)."""
    document, raw = _verified(file)
    if any(s.single_line for s in document.sections):
        from ..ingest.readers.encoding import decode_text

        return decode_text(raw)
    if any(s.page is not None for s in document.sections):
        return "\f".join(s.text for s in document.sections)
    # Slides, sheets, messages, row groups: each section starts on the line its
    # citations count from, so the whole text is laid out line by line.
    lines: list[str] = []
    for s in document.sections:
        lines.extend([""] * max(0, s.first_line - 1 - len(lines)))
        lines.extend(s.text.split("\n"))
    return "\n".join(lines)


def indexed_bytes(file: IndexedFile) -> tuple[bytes, os.stat_result]:
    """The file's bytes, only if they are the bytes kb indexed (NotIndexed otherwise),
    and the identity (fstat) of the file they were read from."""
    changed = f"{file.source} changed since it was indexed; run `kb index`"
    try:
        fd = _open_no_follow(file.abspath)
    except FileNotFoundError:
        raise NotIndexed(f"{file.source} was indexed but is no longer on disk; run `kb index`") from None
    except OSError as e:
        raise NotIndexed(f"{file.source} cannot be read ({e.strerror or e}); run `kb index`") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != file.size:
            raise NotIndexed(changed)
        chunks, left = [], file.size + 1  # one byte more: a file still growing is caught too
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except BlockingIOError:
        raise NotIndexed(changed) from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if not file.sha256 or hashlib.sha256(raw).hexdigest() != file.sha256:
        raise NotIndexed(changed)
    return raw, st


def _open_no_follow(path: str) -> int:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags)
    except OSError as e:
        # ELOOP: the name is a symlink now. One that kb indexed inside its folders still
        # works: its target is opened (never following another link), and the hash check
        # decides. Only the final component is refused as a link; folders on the way may
        # be links, as they were when the walk followed them.
        if e.errno != errno.ELOOP:
            raise
    return os.open(os.path.realpath(path), flags)


def _verified(file: IndexedFile) -> tuple[Document, bytes]:
    raw, st = indexed_bytes(file)
    return _read(file.source, file.abspath, file.sha256, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                                          st.st_ctime_ns), raw), raw


def _document(file: IndexedFile) -> Document:
    return _verified(file)[0]


_cache: dict[tuple, Document] = {}
_cache_lock = threading.Lock()


def _read(source: str, abspath: str, sha256: str, identity: tuple, raw: bytes) -> Document:
    # Keyed on the verified content's hash and the file's identity: bytes already proven
    # to be the indexed ones are parsed once.
    key = (source, abspath, sha256, identity)
    with _cache_lock:
        document = _cache.get(key)
    if document is None:
        kind = Path(abspath).suffix.lower()
        try:
            document = read_document(SourceFile(source, abspath, identity[2], identity[3], kind), raw)
        except ValueError as e:
            raise NotIndexed(f"{source} can no longer be read ({e}); run `kb index`") from None
        with _cache_lock:
            while len(_cache) >= 16:
                _cache.pop(next(iter(_cache)))
            _cache[key] = document
    return document


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
