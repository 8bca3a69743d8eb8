"""reStructuredText (and Sphinx's `_sources/*.rst.txt`): sections and API entries as headings.

The passage text is the file's own text (UTF-8 offsets index `open(path).read()`); what
the reader adds is structure, found line by line without a reST parser (docutils would
need every Sphinx role and directive registered, and gives no source offsets):
- Section titles (a title line under an optional overline, over an underline of one
  repeated punctuation character) become headings; levels follow the order in which
  title styles first appear, as in reST.
- API entries (`.. function::`, `.. class::`, `.. method::`, `.. option::`, ...) become
  stretches of their own, headed by the qualified name and signature
  (`urllib.request.urlretrieve(url, filename=None, ...)`: names are qualified by
  `.. module::`/`.. currentmodule::` and by an enclosing `.. class::`; options by
  `.. program::`). A passage never spans two entries, and each carries its entry's
  heading as context.
- Markup that is not prose (table borders and cell bars, directive options such as
  `:noindex:`, link targets, substitution definitions, comments, role names such as
  `:func:`, the `<https://...>` target of an inline link) is marked, so it is shown but
  neither embedded nor BM25-indexed.
"""

from __future__ import annotations

import re

from ..sections import Section, Stretch
from .outline import blank as _blank, indent as _indent, line_starts, merge, stretches
from .encoding import decode_text

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}[ \t]*$")  # ----, ====, ~~~~ (one char repeated)
_DIRECTIVE = re.compile(r"^([ \t]*)\.\.[ \t]+([\w:.+-]+)::(?:[ \t]+(.*))?$")
_EXPLICIT = re.compile(r"^([ \t]*)\.\.(?:[ \t]|$)")
_OPTION = re.compile(r"^[ \t]+:[\w -]+:(?:[ \t].*)?$")
_GRID_BORDER = re.compile(r"^[ \t]*\+(?:[-=:]+\+)+[ \t]*$")
_SIMPLE_BORDER = re.compile(r"^[ \t]*=+(?:[ \t]+=+)+[ \t]*$|^[ \t]*-{2,}(?:[ \t]+-{2,})+[ \t]*$")
_GRID_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
_ROLE = re.compile(r":[\w:.+-]+:(?=`)")
# The target of a hyperlink or cross-reference: `memoize <https://...>`_, :ref:`text <label>`.
_TARGET = re.compile(r"[ \t\n]<[^<>`\n]+>(?=`)")

# Directives that document one object (any Sphinx domain: py, c, cpp, js, std, rst).
API = frozenset("""function class method attribute data exception option cmdoption envvar describe object
decorator decoratormethod classmethod staticmethod property coroutinefunction coroutinemethod
abstractmethod awaitablefunction awaitablemethod opcode pdbcommand 2to3fixer macro type member var
struct union enum enumerator namespace concept directive role setting confval""".split())
CLASSES = frozenset("class exception struct union enum".split())
# Directives whose whole block is hidden or is bookkeeping, never prose.
HIDDEN = frozenset("""module currentmodule program moduleauthor sectionauthor codeauthor highlight testsetup
testcleanup toctree tabularcolumns default-role role include raw only ifconfig index
default-domain cssclass meta""".split())


def read_rst(raw: bytes, path: str) -> list[Section]:
    return [section(decode_text(raw))]


def section(text: str) -> Section:
    outline, markup = parse(text)
    return Section(text, outline=tuple(outline), markup=tuple(markup))


def looks_like_rst(text: str) -> bool:
    """A .txt file written in reST: directives, roles or link targets, or underlined titles."""
    sample = text[:50_000]
    signs = (len(re.findall(r"^[ \t]*\.\. [\w:-]+::", sample, re.M)) + len(re.findall(r":\w+:`", sample))
             + len(re.findall(r"^\.\. _[\w -]+:", sample, re.M)))
    return signs >= 2


def parse(text: str) -> tuple[list[Stretch], tuple[tuple[int, int], ...]]:
    """(outline, markup) of a reST text (see the module docstring)."""
    lines = text.split("\n")
    starts = line_starts(lines)
    n = len(lines)
    label: list[object] = [None] * n  # per line: the stretch it belongs to (None: a heading)
    markup: list[tuple[int, int]] = []

    def whole_lines(a: int, b: int) -> None:  # lines a..b-1 are markup
        markup.append((starts[a], min(starts[b], len(text))))

    # Section titles, and the heading trail each line sits under.
    styles: list[tuple[str, bool]] = []
    trail: list[tuple[int, str]] = []
    titles: dict[int, tuple[int, str]] = {}  # first line of a title block -> (last line, title)
    i = 0
    while i < n:
        title = _title_at(lines, i)
        if title:
            last, over, char, words = title
            style = (char, over)
            if style not in styles:
                styles.append(style)
            level = styles.index(style)
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, _plain(words))]
            titles[i] = (last, " > ".join(t for _, t in trail))
            i = last + 1
            continue
        i += 1
    section, section_id = "", -1
    section_of = [""] * n
    i = 0
    while i < n:
        if i in titles:
            (last, section), section_id = titles[i], i
            for j in range(i, last + 1):
                section_of[j] = section
            i = last + 1
            continue
        section_of[i] = section
        label[i] = ("section", section, section_id)
        i += 1

    # Directives: API entries get their own stretch; hidden ones and options are markup.
    module = program = ""
    entries: list[tuple[int, int, int, str]] = []  # (first line, end line, indent, class qualname)
    i = 0
    while i < n:
        line = lines[i]
        m = _DIRECTIVE.match(line)
        if not m:
            if _EXPLICIT.match(line) and not line.lstrip().startswith(".. ["):
                # A link target, substitution definition or comment, with its indented block.
                end = _block_end(lines, i + 1, _indent(line))
                whole_lines(i, end)
                i = end
                continue
            i += 1
            continue
        indent, name, argument = len(m.group(1)), m.group(2), (m.group(3) or "").strip()
        kind = name.rsplit(":", 1)[-1]
        header_end = i + 1
        signatures = [argument] if argument else []
        while header_end < n and lines[header_end].strip() and _indent(lines[header_end]) > indent \
                and not _OPTION.match(lines[header_end]):
            if kind in API:
                signatures.append(lines[header_end].strip())
            header_end += 1
        options_start = header_end
        while header_end < n and _OPTION.match(lines[header_end]) and _indent(lines[header_end]) > indent:
            header_end += 1
        end = _block_end(lines, header_end, indent)
        if kind in ("module", "currentmodule"):
            module = "" if argument == "None" else argument
        elif kind == "program":
            program = argument
        if kind in HIDDEN:
            whole_lines(i, end)
            i = end
            continue
        if kind in API and signatures:
            owner = next((q for a, e, ind, q in reversed(entries) if a < i < e and ind < indent and q), "")
            heading = _qualified(kind, name, signatures[0], module, owner, program)
            qualname = _name(heading) if kind in CLASSES else ""
            entries.append((i, end, indent, qualname))
            context = " > ".join(t for t in (section_of[i], heading) if t)
            for j in range(i, header_end):
                label[j] = None
            for j in range(header_end, end):
                label[j] = ("entry", context, i)
            i = header_end  # nested entries inside the body are found in turn
            continue
        if header_end > options_start:
            whole_lines(options_start, header_end)
        i = header_end

    # Tables: borders are markup; so are the bars between grid-table cells.
    for i, line in enumerate(lines):
        if _GRID_BORDER.match(line) or _SIMPLE_BORDER.match(line):
            whole_lines(i, i + 1)
        elif _GRID_ROW.match(line):
            base = starts[i]
            markup.extend((base + m.start(), base + m.end()) for m in re.finditer(r"\|", line))
        elif _ADORNMENT.match(line) and label[i] is not None and _blank(lines, i - 1) and _blank(lines, i + 1):
            whole_lines(i, i + 1)  # a transition (----------) between paragraphs
    markup.extend(m.span() for m in _ROLE.finditer(text))
    markup.extend(m.span() for m in _TARGET.finditer(text))
    return stretches(label, starts, len(text)), merge(markup)


def _title_at(lines: list[str], i: int):
    """(last line, has overline, char, title) if a section title starts at line i."""
    n = len(lines)
    line = lines[i]
    if i > 0 and lines[i - 1].strip():
        return None
    over = _ADORNMENT.match(line)
    if over and i + 2 < n:
        words, under = lines[i + 1], _ADORNMENT.match(lines[i + 2])
        if under and under.group(1) == over.group(1) and words.strip() and not _ADORNMENT.match(words) \
                and len(lines[i + 2].rstrip()) >= len(words.rstrip()) - 1:
            return i + 2, True, over.group(1), words.strip()
    if over or not line.strip() or line[0] in " \t" or i + 1 >= n:
        return None
    under = _ADORNMENT.match(lines[i + 1])
    if under and len(lines[i + 1].rstrip()) >= min(len(line.rstrip()), 4) and not _EXPLICIT.match(line) \
            and not _GRID_ROW.match(line):
        return i + 1, False, under.group(1), line.strip()
    return None


def _qualified(kind: str, name: str, signature: str, module: str, owner: str, program: str) -> str:
    """The entry's heading: its qualified name and its signature."""
    signature = signature.strip()
    if kind in ("option", "cmdoption"):
        return f"{program} {signature}" if program else signature
    if ":" in name and not name.startswith("py:"):  # c:, cpp:, js:, std:, rst: keep their own names
        return signature
    if kind in ("describe", "object", "envvar", "opcode", "pdbcommand", "2to3fixer", "directive", "role",
                "setting", "confval"):
        return signature
    prefix = owner or module
    qual = _name(signature)
    if prefix and qual and not qual.startswith(prefix + ".") and not (owner and qual.startswith(module + ".")):
        if owner and module and qual.split(".")[0] == owner.split(".")[-1]:
            prefix = owner.rsplit(".", 1)[0]  # `.. method:: Struct.pack()` inside `.. class:: Struct`
        signature = f"{prefix}.{signature}"
    return signature


def _name(signature: str) -> str:
    m = re.match(r"[\w.]+", signature.strip())
    return m.group(0) if m else ""


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The line after an explicit block whose first line is start - 1 (body: deeper indent)."""
    j, last = start, start
    while j < len(lines):
        if lines[j].strip():
            if _indent(lines[j]) <= indent:
                break
            last = j + 1
        j += 1
    return last


def _plain(title: str) -> str:
    """A title without its inline markup: `:mod:\\`functools\\` --- ...` -> `functools --- ...`."""
    return re.sub(r"`+", "", _ROLE.sub("", title)).strip()
