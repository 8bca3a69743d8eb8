"""AsciiDoc (.adoc, .asciidoc, and AsciiDoc .txt files such as git's documentation).

The passage text is the file's own text; the reader adds structure, line by line:
- Section titles, in both styles: `== Title` (level = number of `=` - 1) and a title
  line over an underline of `=`, `-`, `~`, `^` or `+` (levels 0 to 4) as long as the
  title (within 2 characters), become headings.
- Labeled-list entries (`--stdin::`, `-a::` + `--all::`, `core.fileMode::`) become
  stretches of their own, headed by their terms: in a manual page each option, and in
  a configuration reference each variable, is cited and ranked as its own entry.
- Markup that is not prose (block delimiters `----`, block attributes `[verse]`,
  anchors `[[id]]`, attribute entries `:name: value`, comments, `ifdef::`/`include::`
  lines, list continuations `+`, table rules and cell bars, the `linkgit:` prefix) is
  shown but neither embedded nor BM25-indexed. Lines inside listing and literal blocks
  are never taken for titles or entries.
"""

from __future__ import annotations

import re

from ..sections import Section, Stretch
from .outline import blank, line_starts, merge, stretches
from .encoding import decode_text

_ONE_LINE_TITLE = re.compile(r"^(={1,6})[ \t]+(\S.*?)(?:[ \t]+=+)?[ \t]*$")
_UNDERLINE = re.compile(r"^([=\-~^+])\1+[ \t]*$")
_LEVELS = "=-~^+"
_DELIMITER = re.compile(r"^(-{4,}|\.{4,}|={4,}|\*{4,}|_{4,}|\+{4,}|/{4,}|--)[ \t]*$")
_VERBATIM = ("-", ".", "+", "/")  # listing, literal, passthrough and comment blocks
_TERM = re.compile(r"^(\S.*?)(::|;;)[ \t]*$")
_ATTRIBUTE_LINE = re.compile(r"^\[\[?[^\]\n]*\]\]?[ \t]*$")
_MACRO_LINE = re.compile(r"^(?:ifdef|ifndef|ifeval|endif|include)::.*\[.*\][ \t]*$")
_ATTRIBUTE_ENTRY = re.compile(r"^:!?[\w-]+!?:(?:[ \t].*)?$")
_TABLE = re.compile(r"^\|===+[ \t]*$")
_PREFIX = re.compile(r"\blinkgit:(?=[\w.-]+\[)")


def read_asciidoc(raw: bytes, path: str) -> list[Section]:
    return [section(decode_text(raw))]


def section(text: str) -> Section:
    outline, markup = parse(text)
    return Section(text, outline=tuple(outline), markup=markup)


def guess(text: str) -> str:
    """What a .txt file is written in: "asciidoc", "rst" or "text".

    AsciiDoc when its signs (linkgit:, [verse], [[anchors]], include::/ifdef:: lines,
    `== Title` lines, `term::` entries) outnumber reST's (directives, roles); reST when
    it has at least two of its own; and a file with underlined titles and no other sign
    is read as reST, whose titles are the same."""
    sample = text[:50_000]
    asciidoc = (len(re.findall(r"linkgit:", sample)) + len(re.findall(r"^\[\[?[\w, .\"=-]*\]\]?$", sample, re.M))
                + len(re.findall(r"^(?:include|ifdef|ifndef|endif)::", sample, re.M))
                + len(re.findall(r"^={2,5} \S", sample, re.M)) + len(re.findall(r"^[-\w.<>=\[\]]+::$", sample, re.M)))
    rst = (len(re.findall(r"^[ \t]*\.\. [\w:-]+::", sample, re.M)) + len(re.findall(r":\w+:`", sample))
           + len(re.findall(r"^\.\. _[\w -]+:", sample, re.M)))
    if asciidoc >= 2 and asciidoc > rst:
        return "asciidoc"
    if rst >= 2:
        return "rst"
    titled = re.search(r"^\w[^\n]*\n([=\-~^+])\1{2,}[ \t]*$", sample, re.M)
    if titled:
        return "asciidoc" if asciidoc else "rst"
    return "text"


def parse(text: str) -> tuple[list[Stretch], tuple[tuple[int, int], ...]]:
    lines = text.split("\n")
    starts = line_starts(lines)
    n = len(lines)
    labels: list[object] = [None] * n
    markup: list[tuple[int, int]] = []

    def whole_lines(a: int, b: int) -> None:
        markup.append((starts[a], min(starts[b], len(text))))

    trail: list[tuple[int, str]] = []
    section_id = -1
    entry: tuple[str, int] | None = None  # (heading, first line) of the open labeled-list entry
    block: str | None = None  # delimiter of the open verbatim block
    open_block = False  # inside a `--` open block: an entry's continued body, nested lists and all
    title_end = -1
    i = 0
    while i < n:
        line = lines[i]
        delimiter = _DELIMITER.match(line)
        if block is not None:  # inside a listing/literal block: verbatim until its closing line
            if delimiter and line.rstrip() == block:
                whole_lines(i, i + 1)
                block = None
            elif block.startswith("/"):
                whole_lines(i, i + 1)  # a comment block's lines
            labels[i] = _label(trail, entry, section_id)
            i += 1
            continue
        title = _title_at(lines, i)
        if title:
            last, level, words = title
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, words)]
            section_id, entry, title_end = i, None, last
            i = last + 1
            continue
        term = _TERM.match(line)
        if term and term.group(2) == "::" and not open_block and not line.startswith((" ", "\t")) and (
                blank(lines, i - 1) or i - 1 == title_end or entry is not None):
            terms, j = [term.group(1).strip()], i + 1
            while j < n and (m := _TERM.match(lines[j])) and m.group(2) == "::":
                terms.append(m.group(1).strip())
                j += 1
            entry = (", ".join(terms), i)
            i = j
            continue
        labels[i] = _label(trail, entry, section_id)
        if delimiter:
            whole_lines(i, i + 1)
            if line.rstrip() == "--":
                open_block = not open_block
            elif line.rstrip()[0] in _VERBATIM:
                block = line.rstrip()
        elif line.startswith("//") or _ATTRIBUTE_LINE.match(line) or _MACRO_LINE.match(line) \
                or _ATTRIBUTE_ENTRY.match(line) or line.strip() == "+" or _TABLE.match(line):
            whole_lines(i, i + 1)
        elif line.startswith("|"):
            markup.extend((starts[i] + m.start(), starts[i] + m.end()) for m in re.finditer(r"(?<!\\)\|", line))
        i += 1
    markup.extend(m.span() for m in _PREFIX.finditer(text))
    return stretches(labels, starts, len(text)), merge(markup)


def _label(trail, entry, section_id):
    heading = " > ".join(t for _, t in trail)
    if entry is None:
        return ("section", heading, section_id)
    return ("entry", " > ".join(t for t in (heading, entry[0]) if t), entry[1])


def _title_at(lines: list[str], i: int):
    """(last line, level, title) if a section title starts at line i."""
    line = lines[i]
    m = _ONE_LINE_TITLE.match(line)
    if m and (blank(lines, i - 1) or _ATTRIBUTE_LINE.match(lines[i - 1])):
        return i, len(m.group(1)) - 1, m.group(2).strip()
    if i + 1 >= len(lines) or not re.search(r"\w", line) or line.startswith((" ", "\t", "[", ".", "//", "|")):
        return None
    under = _UNDERLINE.match(lines[i + 1])
    if under and abs(len(lines[i + 1].rstrip()) - len(line.rstrip())) <= 2 and not _DELIMITER.match(line) \
            and not _TERM.match(line):
        return i + 1, _LEVELS.index(under.group(1)), line.strip()
    return None
