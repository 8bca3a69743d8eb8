"""Find files under the paths a user gives and read them into documents.

A file that cannot be used is skipped with a reason, never fatal: one bad file must
not cost a user the rest of the folder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import BadInput
from .sections import Section

# Files larger than this are skipped (a setting: `kb index --max-file-size`): one
# stray multi-gigabyte log or dump should not stall a run or fill the index.
DEFAULT_MAX_FILE_SIZE = 20 * 1024 * 1024
# How files are read into sections: recorded in the index, whose next `kb index` re-reads
# every file when it changes (vectors of unchanged passages are reused, by content).
# Bump it when a reader starts making different sections, outlines or markup.
READING = 2
# gitignore-syntax files honoured in every walked folder (and the folders below it).
IGNORE_FILES = (".gitignore", ".kbignore")

def _readers():
    from .readers import (
        READERS,  # imported on first use: the parsers load only to read files
    )

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
    excluded: list[str] = field(default_factory=list)  # matched a .gitignore/.kbignore rule


def discover(paths: Iterable[str | os.PathLike], *, max_file_size: int | None = DEFAULT_MAX_FILE_SIZE) -> Discovery:
    """Walk the given files and folders (recursively, hidden entries skipped).

    A path that does not exist is the user's mistake and raises BadInput. Inside a
    folder, files of other types are ignored and files matched by a .gitignore or
    .kbignore are excluded; a file named explicitly that kb cannot index, or one over
    max_file_size bytes (None: no cap), is skipped with a reason.
    """
    found: dict[str, SourceFile] = {}
    result = Discovery([], [], [])
    for raw in paths:
        given = os.fspath(raw)
        if not os.path.lexists(given):
            raise BadInput(f"no such file or directory: {given}")
        explicit = not os.path.isdir(given)
        for source in _walk(given, result.skipped, result.excluded):
            if Path(source).suffix.lower() not in _readers() and not explicit:
                result.ignored.append(source)
                continue
            entry = _source_file(source, result.skipped, max_file_size)
            if entry and entry.abspath not in found:
                found[entry.abspath] = entry
    result.files = sorted(found.values(), key=lambda f: f.source)
    return result


def read_document(file: SourceFile, raw: bytes | None = None) -> Document:
    """Read one file with its format's reader; raises ValueError/OSError with a reason.

    raw: the file's bytes when they were read elsewhere (a Ray worker is sent them by
    the process that found the file); by default the file is opened here.
    """
    if raw is None:
        with open(file.abspath, "rb") as f:
            raw = f.read()
    _, reader = _readers()[Path(file.abspath).suffix.lower()]
    sections = [s for s in reader(raw, file.abspath) if s.text.strip()]
    if not sections:
        raise ValueError("empty file")
    return Document(file=file, sections=sections, sha256=hashlib.sha256(raw).hexdigest())


def _walk(given: str, skipped: list[Skipped], excluded: list[str]) -> Iterator[str]:
    if not os.path.isdir(given):
        yield os.path.normpath(given)
        return
    given = os.path.normpath(given)
    seen_dirs: set[tuple[int, int]] = set()
    rules: dict[str, list] = {}  # folder -> ignore rules in force there, outermost first
    for root, dirs, files in os.walk(given, followlinks=True, onerror=lambda e: skipped.append(
        Skipped(e.filename or given, e.strerror or "unreadable directory"))):
        try:
            st = os.stat(root)
        except OSError as e:  # vanished or became unreadable mid-walk
            skipped.append(Skipped(root, e.strerror or "unreadable directory"))
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:  # symlink loop
            dirs[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        here = rules.get(os.path.dirname(root), []) + _ignore_rules(root, files)
        rules[root] = here
        kept = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if _is_ignored(here, os.path.join(root, d), is_dir=True):
                excluded.append(os.path.normpath(os.path.join(root, d)) + os.sep)
            else:
                kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.normpath(os.path.join(root, name))
            if _is_ignored(here, path, is_dir=False):
                excluded.append(path)
            else:
                yield path


def _ignore_rules(folder: str, names: list[str]) -> list:
    """(folder, spec) for each .gitignore/.kbignore in folder; unreadable ones are ignored."""
    found = [n for n in IGNORE_FILES if n in names]
    if not found:
        return []
    import pathspec

    rules = []
    for name in found:
        try:
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                rules.append((folder, pathspec.GitIgnoreSpec.from_lines(f.read().splitlines())))
        except (OSError, ValueError):
            continue
    return rules


def _is_ignored(rules: list, path: str, *, is_dir: bool) -> bool:
    """gitignore semantics: the last matching rule wins, deeper files override outer ones."""
    decision = False
    for folder, spec in rules:
        relative = os.path.relpath(path, folder).replace(os.sep, "/") + ("/" if is_dir else "")
        include = spec.check_file(relative).include
        if include is not None:
            decision = include
    return decision


def _source_file(source: str, skipped: list[Skipped], max_file_size: int | None = None) -> SourceFile | None:
    known = _readers().get(Path(source).suffix.lower())
    if known is None:
        skipped.append(Skipped(source, f"unsupported file type (kb reads {', '.join(sorted(_readers()))})"))
        return None
    kind = known[0]
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name: the index and its JSON are UTF-8
        printable = source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        skipped.append(Skipped(printable, "file name is not valid UTF-8 (rename the file to index it)"))
        return None
    try:
        st = os.stat(source)
    except OSError as e:
        skipped.append(Skipped(source, e.strerror or "cannot stat"))
        return None
    if not os.path.isfile(source):
        skipped.append(Skipped(source, "not a regular file"))
        return None
    if max_file_size is not None and st.st_size > max_file_size:
        skipped.append(Skipped(source, f"{_size(st.st_size)} is over the size cap of "
                                       f"{_size(max_file_size)} (--max-file-size)"))
        return None
    return SourceFile(source, os.path.abspath(source), st.st_size, st.st_mtime_ns, kind)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"
