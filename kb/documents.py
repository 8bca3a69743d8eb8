"""Find files under the paths a user gives and read them into documents.

A file that cannot be used is skipped with a reason, never fatal: one bad file must
not cost a user the rest of the folder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import BadInput

def _readers():
    from .readers import READERS  # readers import Section from here: import late

    return READERS


@dataclass(frozen=True)
class SourceFile:
    """A file found on disk, before it is read: enough to tell if it changed."""

    source: str  # as cited: relative to where `kb index` ran, or absolute
    abspath: str
    size: int
    mtime_ns: int
    kind: str


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


@dataclass(frozen=True)
class Document:
    """A file read into sections; sha256 is of the file's bytes."""

    file: SourceFile
    sections: list[Section]
    sha256: str


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass
class Discovery:
    files: list[SourceFile]
    ignored: list[str]  # not a supported type, found while walking a folder: counted, not an error
    skipped: list[Skipped]  # should have been indexed but could not be


def discover(paths: Iterable[str | os.PathLike]) -> Discovery:
    """Walk the given files and folders (recursively, hidden entries skipped).

    A path that does not exist is the user's mistake and raises BadInput. Inside a
    folder, files of other types are ignored; a file named explicitly that kb cannot
    index is skipped with a reason.
    """
    found: dict[str, SourceFile] = {}
    result = Discovery([], [], [])
    for raw in paths:
        given = os.fspath(raw)
        if not os.path.lexists(given):
            raise BadInput(f"no such file or directory: {given}")
        explicit = not os.path.isdir(given)
        for source in _walk(given, result.skipped):
            if Path(source).suffix.lower() not in _readers() and not explicit:
                result.ignored.append(source)
                continue
            entry = _source_file(source, result.skipped)
            if entry and entry.abspath not in found:
                found[entry.abspath] = entry
    result.files = sorted(found.values(), key=lambda f: f.source)
    return result


def read_document(file: SourceFile) -> Document:
    """Read one file with its format's reader; raises ValueError/OSError with a reason."""
    with open(file.abspath, "rb") as f:
        raw = f.read()
    _, reader = _readers()[Path(file.abspath).suffix.lower()]
    sections = [s for s in reader(raw, file.abspath) if s.text.strip()]
    if not sections:
        raise ValueError("empty file")
    return Document(file=file, sections=sections, sha256=hashlib.sha256(raw).hexdigest())


def _walk(given: str, skipped: list[Skipped]) -> Iterator[str]:
    if not os.path.isdir(given):
        yield os.path.normpath(given)
        return
    seen_dirs: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(given, followlinks=True, onerror=lambda e: skipped.append(
        Skipped(e.filename or given, e.strerror or "unreadable directory"))):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen_dirs:  # symlink loop
            dirs[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.normpath(os.path.join(root, name))


def _source_file(source: str, skipped: list[Skipped]) -> SourceFile | None:
    known = _readers().get(Path(source).suffix.lower())
    if known is None:
        skipped.append(Skipped(source, f"unsupported file type (kb reads {', '.join(sorted(_readers()))})"))
        return None
    kind = known[0]
    try:
        st = os.stat(source)
    except OSError as e:
        skipped.append(Skipped(source, e.strerror or "cannot stat"))
        return None
    if not os.path.isfile(source):
        skipped.append(Skipped(source, "not a regular file"))
        return None
    return SourceFile(source, os.path.abspath(source), st.st_size, st.st_mtime_ns, kind)
