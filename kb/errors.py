"""Errors that carry their own exit code, so the CLI can stay a thin layer.

Every failure a user can cause or meet is one of these; anything else is a bug.
"""

from __future__ import annotations


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
  5  index files corrupt or unreadable (run `kb index --rebuild`)
  6  another `kb index` is writing this index
  7  indexed, but some files were skipped (each named on stderr)
  8  I/O error on the index folder (permission denied, disk full)"""
