"""Plain text and Markdown: the file's own characters are the passage text.

Files are decoded by kb.ingest.readers.encoding: UTF-8 exactly as
`open(path, encoding="utf-8").read()` does, so a citation's char offsets index the file
as a user's script reads it; other encodings detected. A .txt file written in reST or
AsciiDoc is read by that reader (recognised by its content).
"""

from __future__ import annotations

import re

from ..sections import Section
from .encoding import decode_text  # the readers' shared decoding (also imported from here)


def read_text(raw: bytes, path: str) -> list[Section]:
    """A .txt file: plain text, unless its content says it is reST or AsciiDoc (Sphinx's
    `_sources/*.rst.txt`, git's documentation), which are then read as such."""
    text = decode_text(raw)
    from . import asciidoc, rst

    if path.lower().endswith(".rst.txt"):
        return [rst.section(text)]
    kind = asciidoc.guess(text)
    if kind == "asciidoc":
        return [asciidoc.section(text)]
    if kind == "rst":
        return [rst.section(text)]
    return [Section(text)]


def read_markdown(raw: bytes, path: str) -> list[Section]:
    text = decode_text(raw)
    return [Section(text, markdown=True, markup=markdown_markup(text))]


# Not prose in Markdown: HTML comments (Node.js keeps each entry's YAML history in one),
# link reference definitions, and the delimiter row under a table's header.
_MD_MARKUP = re.compile(
    r"^[ \t]*<!--.*?-->[ \t]*(?:\n|\Z)|<!--.*?-->"
    r"|^ {0,3}\[[^\]\n]+\]:[ \t]+\S.*(?:\n|\Z)"
    r"|^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*(?:\n|\Z)",
    re.MULTILINE | re.DOTALL)


def markdown_markup(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(m.span() for m in _MD_MARKUP.finditer(text))
