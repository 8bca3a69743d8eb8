"""Errors that carry their own exit code, so the CLI can stay a thin layer.

Every failure a user can cause or meet is one of these; anything else is a bug.

Classified once, here. What the libraries under kb raise (OSError, sqlite3 errors,
FAISS's RuntimeError, tantivy's ValueError and Rust panics) means one of three things,
and `classify` says which, for the CLI, the HTTP server and MCP alike:
- the machine cannot do it now (a full disk, a read-only folder, too many open files,
  permission denied): IoFailure, exit 8, with the condition named. Nothing is damaged,
  nothing is to be rebuilt; the same command works once the condition is gone;
- a file of the index holds bytes it should not: CorruptIndex, exit 5, the only error
  that advises rebuilding (or, for files derived from SQLite, plain `kb index`);
- the user's input cannot be used (a filter SQLite finds too large): BadInput, exit 2.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from contextlib import contextmanager
from typing import Iterator


def first_line(e: BaseException, limit: int = 160) -> str:
    """An exception as one short line for a `kb: ` message (its type when it says nothing)."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


class KbError(Exception):
    """Base class: a message for one line on stderr and a documented exit code."""

    exit_code = 1


class NoResults(KbError):
    """Nothing to show (e.g. no passage cleared --min-score): like grep, exit 1."""

    exit_code = 1


class BadInput(KbError):
    """The user's input cannot be used: empty question, missing path, bad value."""

    exit_code = 2


class NotIndexed(BadInput):
    """A file was asked for that the index does not hold: the server's citation view and
    the MCP resources serve indexed files only, so no path can reach anything else."""


class NoIndex(KbError):
    """There is no index at the given location yet."""

    exit_code = 3


class IndexMismatch(KbError):
    """The index was built with another model or format; asking it would give garbage."""

    exit_code = 4


class CorruptIndex(KbError):
    """An index file is unreadable or inconsistent."""

    exit_code = 5


class IndexBusy(KbError):
    """Another `kb index` holds the index's write lock."""

    exit_code = 6


class IoFailure(KbError):
    """The operating system refused: the disk is full, the folder read-only, too many
    open files, permission denied. Transient or the machine's: nothing is damaged."""

    exit_code = 8

    def __init__(self, condition: str, detail: str = ""):
        self.condition = condition
        super().__init__(f"{condition} ({detail})" if detail and detail != condition else condition)


# Not an exception: `kb index` finished but skipped some files (named on stderr).
EXIT_SKIPPED_FILES = 7
# An operating-system error on the index folder (permission denied, disk full).
EXIT_IO_ERROR = 8

EXIT_CODES_HELP = """\
\b
Exit codes:
  0  success
  1  no results (nothing cleared --min-score)
  2  bad input: empty question, missing path, bad option
  3  no index at the given location (run `kb index` first)
  4  index built with another model or format (run `kb index --rebuild`)
  5  index files damaged (run `kb index`, or `kb index --rebuild` if it says so)
  6  another `kb index` is writing this index
  7  indexed, but some files were skipped (each named on stderr)
  8  I/O error: the disk is full, the folder is read-only, too many open files,
     permission denied (nothing is damaged: fix that and run the command again)"""


# -- classifying what the libraries raise -------------------------------------------------
# errno -> the condition a user is told. What is not here is still exit 8, with the
# system's own words.
CONDITIONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the index folder is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.EIO: "an input/output error (the disk may be failing)",
    errno.ENOMEM: "out of memory",
}
# Conditions of the machine, not of one file: a run meeting one stops (IoFailure) rather
# than skip, and so drop from the index, every file it could not open meanwhile.
MACHINE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# The words FAISS and tantivy put in their messages (both quote strerror).
_STRERRORS = {os.strerror(code).lower(): code for code in CONDITIONS}
_STRERRORS["storagefull"] = errno.ENOSPC  # Rust's io::ErrorKind, in tantivy's messages
_STRERRORS["readonlyfilesystem"] = errno.EROFS

# SQLite's primary result codes (sqlite3_errcode & 0xff).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_READONLY = 3, 5, 6, 7, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_TOOBIG, _SQLITE_FORMAT, _SQLITE_NOTADB = 18, 24, 26
# SQLITE_ERROR messages that mean the question asked too much, not that the file is bad.
_TOO_BIG_QUERIES = ("expression tree is too large", "too many sql variables", "too many terms",
                    "pattern too complex", "string or blob too big", "parser stack overflow")
REBUILD = "run `kb index --rebuild`"


def is_rust_panic(e: BaseException) -> bool:
    """A panic inside a Rust extension (tantivy) surfaces as pyo3_runtime.PanicException,
    a BaseException: it must be caught by name, never with a bare `except BaseException`."""
    return type(e).__name__ == "PanicException" and type(e).__module__ in ("pyo3_runtime", "builtins")


def io_failure(e: BaseException, where: str | os.PathLike | None = None) -> IoFailure | None:
    """The I/O condition e reports (an OSError, or a FAISS/tantivy message quoting one), else None."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and isinstance(e, (OSError, RuntimeError, ValueError)):
        text = str(e).lower()
        squeezed = text.replace(" ", "")
        code = next((c for words, c in _STRERRORS.items() if words in text or words in squeezed), None)
    condition = CONDITIONS.get(code) if code is not None else None
    if condition is None:
        return None
    filename = getattr(e, "filename", None) or where
    words = os.strerror(code)
    return IoFailure(condition, f"{os.fspath(filename)}: {words}" if filename else words)


def classify(e: BaseException, where: str | os.PathLike | None = None) -> KbError | None:
    """What e means to a user, as a KbError (see the module docstring); None for a bug.

    where: the index folder (or file) being worked on, to name it and, for SQLite's
    errors that do not carry the system's errno, to tell which condition it was."""
    if isinstance(e, KbError):
        return e
    if isinstance(e, sqlite3.Error):
        return _sqlite_error(e, where)
    if is_rust_panic(e):
        return CorruptIndex(f"the lexical index is damaged (tantivy: {first_line(e, 100)}); "
                            "run `kb index` to write it again")
    if isinstance(e, (OSError, RuntimeError, ValueError)):
        found = io_failure(e, where)
        if found is not None or not isinstance(e, OSError):
            return found
        filename = e.filename or where
        words = e.strerror or first_line(e)
        return IoFailure(words[:1].lower() + words[1:], os.fspath(filename) if filename else "")
    if isinstance(e, MemoryError):
        return IoFailure("out of memory")
    return None


@contextmanager
def classified(where: str | os.PathLike | None = None) -> Iterator[None]:
    """Re-raise what the block raises as its KbError, when it has one (see classify)."""
    try:
        yield
    except KbError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:
        error = classify(e, where)
        if error is None:
            raise
        raise error from None


def _sqlite_error(e: sqlite3.Error, where) -> KbError:
    code = getattr(e, "sqlite_errorcode", None)
    text = str(e)
    lower = text.lower()
    primary = code & 0xFF if code is not None else _sqlite_code_from_text(lower)
    db = f"the index database{f' in {where}' if where else ''}"
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_FORMAT):
        return CorruptIndex(f"{db} is damaged ({text}); {REBUILD}")
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return IndexBusy(f"{db} is locked by another process ({text}); try again")
    detail = f"{os.fspath(where)}: {text}" if where else text
    if primary == _SQLITE_FULL:
        return IoFailure("the disk is full", detail)
    if primary in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR, _SQLITE_PERM):
        return IoFailure(diagnose(where) or _SQLITE_WORDS.get(primary, text), detail)
    if primary == _SQLITE_NOMEM:
        return IoFailure("out of memory", detail)
    if primary == _SQLITE_TOOBIG or any(words in lower for words in _TOO_BIG_QUERIES):
        return BadInput(f"the question's filters are too many or too long for SQLite ({text})")
    if "no such table" in lower or "no such column" in lower:
        return CorruptIndex(f"{db} is not a kb index or is damaged ({text}); {REBUILD}")
    return CorruptIndex(f"{db} failed ({text})")


_SQLITE_WORDS = {
    _SQLITE_READONLY: "the index database is read-only",
    _SQLITE_CANTOPEN: "cannot open the index database",
    _SQLITE_IOERR: "an input/output error on the index database",
    _SQLITE_PERM: "permission denied",
}


def _sqlite_code_from_text(lower: str) -> int | None:
    """Python < 3.11 has no sqlite_errorcode: SQLite's standard messages instead."""
    for words, code in (("malformed", _SQLITE_CORRUPT), ("not a database", _SQLITE_NOTADB),
                        ("is locked", _SQLITE_BUSY), ("disk is full", _SQLITE_FULL),
                        ("readonly", _SQLITE_READONLY), ("unable to open", _SQLITE_CANTOPEN),
                        ("disk i/o error", _SQLITE_IOERR)):
        if words in lower:
            return code
    return None


def diagnose(where: str | os.PathLike | None) -> str | None:
    """Which condition stops SQLite (whose messages carry no errno) from using `where`.

    Tried cheapest first: no file descriptor left (open one), a read-only file system,
    a full one, a folder this user may not write."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            return CONDITIONS[e.errno]
    if where is None:
        return None
    folder = os.fspath(where)
    if not os.path.isdir(folder):
        folder = os.path.dirname(folder) or "."
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return CONDITIONS[errno.EROFS]
    if fs.f_bavail == 0 or fs.f_favail == 0:
        return CONDITIONS[errno.ENOSPC]
    if not os.access(folder, os.W_OK):
        return "the index folder is not writable by this user"
    return None
