"""Org mode (.org): headlines as headings, `#+TITLE:` as the document's title.

The passage text is the file's own text. Headlines (`* Title`, `** Sub`, with TODO
keywords, priorities and tags dropped from the trail) start stretches under their trail.
Markup that is not prose (`#+KEYWORD:` lines and block delimiters, `# comments`,
property and logbook drawers, table rules and cell bars) is shown but neither
embedded nor BM25-indexed; lines inside `#+BEGIN_SRC`/`#+BEGIN_EXAMPLE` blocks are
never taken for headlines.
"""

from __future__ import annotations

import re

from ..sections import Section, Stretch
from .outline import line_starts, merge, stretches
from .encoding import decode_text

_HEADLINE = re.compile(r"^(\*+)[ \t]+(?:(?:TODO|DONE|NEXT|WAITING|CANCELLED|CANCELED)[ \t]+)?"
                       r"(?:\[#[A-Z0-9]\][ \t]+)?(.*?)(?:[ \t]+:[\w@#%:]+:)?[ \t]*$")
_KEYWORD = re.compile(r"^[ \t]*#\+(\w+)(?:\[[^\]]*\])?:?(.*)$")
_BEGIN = re.compile(r"^[ \t]*#\+begin_(\w+)", re.IGNORECASE)
_DRAWER = re.compile(r"^[ \t]*:[\w-]+:[ \t]*$")
_TABLE_RULE = re.compile(r"^[ \t]*\|[-+]+\|?[ \t]*$")


def read_org(raw: bytes, path: str) -> list[Section]:
    text = decode_text(raw)
    outline, markup, title = parse(text)
    return [Section(text, title=title, outline=tuple(outline), markup=markup)]


def parse(text: str) -> tuple[list[Stretch], tuple[tuple[int, int], ...], str]:
    lines = text.split("\n")
    starts = line_starts(lines)
    labels: list[object] = [None] * len(lines)
    markup: list[tuple[int, int]] = []
    title, trail, section_id = "", [], -1
    block: str | None = None
    drawer = False
    for i, line in enumerate(lines):
        whole = (starts[i], min(starts[i + 1], len(text)))
        if block is not None:
            labels[i] = ("section", " > ".join(t for _, t in trail), section_id)
            if re.match(rf"^[ \t]*#\+end_{block}\b", line, re.IGNORECASE):
                markup.append(whole)
                block = None
            continue
        head = _HEADLINE.match(line)
        if head and head.group(2):
            level = len(head.group(1))
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, head.group(2).strip())]
            section_id = i
            continue
        labels[i] = ("section", " > ".join(t for _, t in trail), section_id)
        keyword = _KEYWORD.match(line)
        if keyword:
            if keyword.group(1).lower() == "title" and not title:
                title = keyword.group(2).strip()
            begin = _BEGIN.match(line)
            if begin:
                block = begin.group(1).lower()
            markup.append(whole)
        elif drawer or _DRAWER.match(line):
            drawer = line.strip().lower() != ":end:"
            markup.append(whole)
        elif re.match(r"^[ \t]*#(?:[ \t]|$)", line) or _TABLE_RULE.match(line):
            markup.append(whole)
        elif line.lstrip().startswith("|"):
            markup.extend((starts[i] + m.start(), starts[i] + m.end()) for m in re.finditer(r"\|", line))
    return stretches(labels, starts, len(text)), merge(markup), title
