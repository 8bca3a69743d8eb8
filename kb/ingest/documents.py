"""Find files under the paths a user gives and read them into documents.

A file that cannot be used is skipped with a reason, never fatal: one bad file must
not cost a user the rest of the folder.

Symlinks: the walk follows a link only when its target lies inside the folders and
files being indexed (their real paths), as ripgrep and git keep to the tree they were
given. A link that leaves them (`docs/passwd.txt -> /etc/passwd`, a link to a home
folder) is skipped with a reason unless follow_symlinks is set (`kb index
--follow-symlinks`): putting a link in a shared folder must not pull a private file
into an index that others can search. A path named on the command line is used as
given, link or not: the user named it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MACHINE_ERRNOS, BadInput, io_failure
from .sections import Section

# Files larger than this are skipped (a setting: `kb index --max-file-size`): one
# stray multi-gigabyte log or dump should not stall a run or fill the index.
DEFAULT_MAX_FILE_SIZE = 20 * 1024 * 1024
# A file read as a stream (a mailbox, a PDF: kb.ingest.readers.STREAMS) costs the memory
# of a message or a page, not of the file: its cap is this, or max_file_size if larger.
STREAMED_MAX_FILE_SIZE = 2 * 1024 * 1024 * 1024
# How files are read into sections: recorded in the index, whose next `kb index` re-reads
# every file when it changes (vectors of unchanged passages are reused, by content).
# Bump it when a reader starts making different sections, outlines or markup.
# 3: passages with markup pool their sentence vectors from their own sentences' tokens
# (kb.ingest.chunking.markup_free); re-reading gives them new vector keys, so they alone
# are embedded again.
READING = 3
# gitignore-syntax files honoured in every walked folder (and the folders below it).
IGNORE_FILES = (".gitignore", ".kbignore")

def _readers():
    from .readers import (
        READERS,  # imported on first use: the parsers load only to read files
    )

    return READERS


def _streams():
    from .readers import STREAMS

    return STREAMS


def streamed(path: str) -> bool:
    """Whether a file of this name is read from disk a section at a time (not whole)."""
    return Path(path).suffix.lower() in _streams()


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
    """A file read into sections; sha256 is of the file's bytes.

    A streamed file's sections are an iterator, read from disk as it is consumed (once);
    its skipped_parts are complete when the iterator is exhausted.
    """

    file: SourceFile
    sections: list[Section] | Iterator[Section]
    sha256: str
    skipped_parts: list[Skipped] = field(default_factory=list)  # pages it could not read, and why


@dataclass(frozen=True)
class Skipped:
    source: str  # the file, or a part of it: "scan.pdf (page 3)"
    reason: str
    file: str | None = None  # for a part, the file's source

    @property
    def category(self) -> str:
        """What kind of hole this is, for `kb info`: one of SKIP_CATEGORIES."""
        return skip_category(self.reason)


SKIP_CATEGORIES = ("unsupported type", "needs an extra", "no text", "encrypted", "too large", "generated",
                   "unreadable")


def skip_category(reason: str) -> str:
    """The category of a skip reason (as readers and discovery word them)."""
    text = reason.lower()
    if text.startswith("unsupported file type"):
        return "unsupported type"
    if "pip install" in text or "apt-get install" in text:
        return "needs an extra"
    if "encrypted" in text or "password" in text:
        return "encrypted"
    if "size cap" in text or "too large" in text:
        return "too large"
    if any(w in text for w in ("generated", "minified", "lock file")):
        return "generated"
    if any(w in text for w in ("empty file", "no text", "no extractable text")):
        return "no text"
    return "unreadable"


@dataclass
class Discovery:
    files: list[SourceFile]
    ignored: list[str]  # not a supported type, found while walking a folder: counted, not an error
    skipped: list[Skipped]  # should have been indexed but could not be
    excluded: list[str] = field(default_factory=list)  # matched a .gitignore/.kbignore rule


def discover(paths: Iterable[str | os.PathLike], *, max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
             follow_symlinks: bool = False) -> Discovery:
    """Walk the given files and folders (recursively, hidden entries skipped).

    A path that does not exist is the user's mistake and raises BadInput. Inside a
    folder, files of other types are ignored and files matched by a .gitignore or
    .kbignore are excluded; a file named explicitly that kb cannot index, or one over
    max_file_size bytes (None: no cap), is skipped with a reason, and so is one that
    exists but cannot be looked at (permission denied on its folder). Symlinks that
    leave the given paths are skipped unless follow_symlinks (see the module's notes).
    """
    found: dict[str, SourceFile] = {}
    result = Discovery([], [], [])
    given_paths = [os.fspath(raw) for raw in paths]
    for given in given_paths:
        try:
            os.lstat(given)
        except (FileNotFoundError, NotADirectoryError):
            raise BadInput(f"no such file or directory: {given}") from None
        except OSError as e:  # there, but not for us (a folder we may not enter): like one inside a folder
            result.skipped.append(Skipped(os.path.normpath(given), e.strerror or "cannot stat"))
    roots = None if follow_symlinks else [os.path.realpath(g) for g in given_paths]
    for given in given_paths:
        if not os.path.lexists(given):
            continue  # skipped above
        explicit = not os.path.isdir(given)
        for source in _walk(given, result.skipped, result.excluded, roots):
            if Path(source).suffix.lower() not in _readers() and not explicit:
                result.ignored.append(source)
                continue
            if not explicit and roots is not None and os.path.islink(source):
                outside = _outside(source, roots)
                if outside:
                    result.skipped.append(Skipped(source, outside))
                    continue
            entry = _source_file(source, result.skipped, max_file_size)
            if entry and entry.abspath not in found:
                found[entry.abspath] = entry
    result.files = sorted(found.values(), key=lambda f: f.source)
    return result


def read_document(file: SourceFile, raw: bytes | None = None) -> Document:
    """Read one file with its format's reader; raises ValueError/OSError with a reason.

    raw: the file's bytes when they were read elsewhere (a Ray worker is sent them by
    the process that found the file); by default the file is opened here, and a format
    with a stream (kb.ingest.readers.STREAMS) is read a section at a time.
    """
    if raw is None and (stream := _streams().get(Path(file.abspath).suffix.lower())):
        return _streamed_document(file, stream)
    if raw is None:
        with open(file.abspath, "rb") as f:
            raw = f.read()
    _, reader = _readers()[Path(file.abspath).suffix.lower()]
    read = reader(raw, file.abspath)
    sections = [s for s in read if s.text.strip()]
    if not sections:
        raise ValueError("empty file")
    parts = [Skipped(f"{file.source} ({_part(s)})", s.skipped, file=file.source)
             for s in read if s.skipped and not s.text.strip()]
    return Document(file=file, sections=sections, sha256=hashlib.sha256(raw).hexdigest(), skipped_parts=parts)


def _streamed_document(file: SourceFile, stream) -> Document:
    """A Document whose sections are read as they are consumed. The sha256 is of the
    file's bytes, hashed a block at a time; the sections are read up to the first with
    text here, so a file that cannot be used fails before any of it is staged."""
    digest = hashlib.sha256()
    with open(file.abspath, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    parts: list[Skipped] = []
    sections = stream(file.abspath)

    def with_text():
        for s in sections:
            if s.text.strip():
                yield s
            elif s.skipped:
                parts.append(Skipped(f"{file.source} ({_part(s)})", s.skipped, file=file.source))

    found = with_text()
    first = next(found, None)
    if first is None:
        raise ValueError("empty file")

    def read():
        yield first
        yield from found

    return Document(file=file, sections=read(), sha256=digest.hexdigest(), skipped_parts=parts)


def _part(section: Section) -> str:
    return ", ".join(p for p in (f"page {section.page}" if section.page else "", section.location or "") if p) \
        or f"line {section.first_line}"


def _outside(link: str, roots: list[str]) -> str | None:
    """Why a symlink may not be followed (its target leaves the roots), else None."""
    target = os.path.realpath(link)
    if any(target == root or target.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        return None
    return (f"symbolic link to {target}, outside the indexed folders "
            "(index that path itself, or give --follow-symlinks)")


def _walk(given: str, skipped: list[Skipped], excluded: list[str], roots: list[str] | None = None,
          inherited: list | None = None) -> Iterator[str]:
    """roots: the real paths symlinks may lead into (None: follow every link). inherited:
    the ignore rules in force in given's parent (a watcher walks a folder deep inside a
    tree it was given; kb.watch)."""
    if not os.path.isdir(given):
        yield os.path.normpath(given)
        return
    given = os.path.normpath(given)
    seen_dirs: set[tuple[int, int]] = set()
    rules: dict[str, list] = {os.path.dirname(given): inherited or []}  # folder -> ignore rules in force there
    def unreadable(e: OSError) -> None:
        if e.errno in MACHINE_ERRNOS:  # not the folder's fault: skipping it would drop its files
            raise io_failure(e) from None
        skipped.append(Skipped(e.filename or given, e.strerror or "unreadable directory"))

    for root, dirs, files in os.walk(given, followlinks=True, onerror=unreadable):
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
            path = os.path.join(root, d)
            if _is_ignored(here, path, is_dir=True):
                excluded.append(os.path.normpath(path) + os.sep)
            elif roots is not None and os.path.islink(path) and (outside := _outside(path, roots)):
                skipped.append(Skipped(os.path.normpath(path) + os.sep, outside))
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


def discover_changes(paths: Iterable[str | os.PathLike], changed: Iterable[str], *,
                     max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
                     follow_symlinks: bool = False) -> tuple[Discovery, list[str]]:
    """What discover(paths) would find at or under the changed paths, without walking the rest.

    changed: absolute paths of files or folders, present or gone (a watcher's events).
    Returns the discovery and the absolute paths it covers: a document stored at or under
    one of them that was not found is gone. A changed path outside the given paths, or
    hidden below one, covers nothing. Ignore rules are read from the folders between the
    given path and each changed one (cached for the call), so the answer is discover's.
    """
    result = Discovery([], [], [])
    covered: list[str] = []
    found: dict[str, SourceFile] = {}
    rules_cache: dict[str, list] = {}
    paths = [os.fspath(p) for p in paths]
    roots = [(os.path.normpath(p), os.path.abspath(p)) for p in paths]
    link_roots = None if follow_symlinks else [os.path.realpath(p) for p in paths]
    for path in sorted(set(changed)):
        for given, root in roots:
            if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
                continue
            if not os.path.isdir(root):  # a file given by name: indexed whatever its folder's rules say
                covered.append(path)
                entry = _source_file(given, result.skipped, max_file_size) if os.path.lexists(path) else None
                if entry:
                    found.setdefault(entry.abspath, entry)
                continue
            parts = [] if path == root else os.path.relpath(path, root).split(os.sep)
            if any(part.startswith(".") for part in parts):
                continue  # hidden: never indexed
            covered.append(path)
            if not os.path.lexists(path):
                continue
            rules = _rules_above(root, parts, rules_cache)
            if rules is None:  # inside an excluded folder
                continue
            source = os.path.normpath(os.path.join(given, *parts))
            if os.path.isdir(path):
                if parts and _is_ignored(rules, path, is_dir=True):
                    continue
                walked = _walk(source, result.skipped, result.excluded, link_roots, inherited=rules)
            elif _is_ignored(rules, path, is_dir=False):
                continue
            else:
                walked = iter([source])
            for name in walked:
                if Path(name).suffix.lower() not in _readers():
                    result.ignored.append(name)
                    continue
                if link_roots is not None and os.path.islink(name) and (outside := _outside(name, link_roots)):
                    result.skipped.append(Skipped(name, outside))
                    continue
                entry = _source_file(name, result.skipped, max_file_size)
                if entry:
                    found.setdefault(entry.abspath, entry)
            break
    result.files = sorted(found.values(), key=lambda f: f.source)
    return result, covered


def _rules_above(root: str, parts: list[str], cache: dict[str, list]) -> list | None:
    """The ignore rules in force in the folder holding root/parts..., or None when a folder
    on the way is itself excluded."""
    folder, rules = root, None
    for depth in range(len(parts)):
        if depth:
            folder = os.path.join(folder, parts[depth - 1])
            if _is_ignored(rules, folder, is_dir=True):
                return None
        if folder not in cache:
            names = [n for n in IGNORE_FILES if os.path.isfile(os.path.join(folder, n))]
            cache[folder] = (rules or []) + _ignore_rules(folder, names)
        rules = cache[folder]
    return rules if rules is not None else []


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
    if max_file_size is not None and streamed(source):
        max_file_size = max(max_file_size, STREAMED_MAX_FILE_SIZE)
    if max_file_size is not None and st.st_size > max_file_size:
        skipped.append(Skipped(source, f"{_size(st.st_size)} is over the size cap of "
                                       f"{_size(max_file_size)} (--max-file-size)"))
        return None
    return SourceFile(source, os.path.abspath(source), st.st_size, st.st_mtime_ns, kind)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"
