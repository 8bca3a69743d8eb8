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

# Extension -> kind. The kind decides how a document is chunked.
SUPPORTED = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}


@dataclass(frozen=True)
class SourceFile:
    """A file found on disk, before it is read: enough to tell if it changed."""

    source: str  # as cited: relative to where `kb index` ran, or absolute
    abspath: str
    size: int
    mtime_ns: int
    kind: str


@dataclass(frozen=True)
class Document:
    """A file's text, decoded exactly as `open(source, encoding="utf-8").read()` gives it."""

    file: SourceFile
    text: str
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
            if SUPPORTED.get(Path(source).suffix.lower()) is None and not explicit:
                result.ignored.append(source)
                continue
            entry = _source_file(source, result.skipped)
            if entry and entry.abspath not in found:
                found[entry.abspath] = entry
    result.files = sorted(found.values(), key=lambda f: f.source)
    return result


def read_document(file: SourceFile) -> Document:
    """Read and decode one file; raises ValueError/OSError with a reason on failure."""
    with open(file.abspath, "rb") as f:
        raw = f.read()
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte {e.start})") from None
    if "\x00" in text:
        raise ValueError("binary file")
    # Universal newlines, as Python's text mode reads it: citations index this text.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ValueError("empty file")
    return Document(file=file, text=text, sha256=sha)


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
    kind = SUPPORTED.get(Path(source).suffix.lower())
    if kind is None:
        skipped.append(Skipped(source, f"unsupported file type (kb reads {', '.join(sorted(SUPPORTED))})"))
        return None
    try:
        st = os.stat(source)
    except OSError as e:
        skipped.append(Skipped(source, e.strerror or "cannot stat"))
        return None
    if not os.path.isfile(source):
        skipped.append(Skipped(source, "not a regular file"))
        return None
    return SourceFile(source, os.path.abspath(source), st.st_size, st.st_mtime_ns, kind)
