"""LaTeX (.tex): sectioning commands as headings, `\\title{}` as the document's title.

The passage text is the file's own source text. `\\part`, `\\chapter`, `\\section`,
`\\subsection`, `\\subsubsection` and `\\paragraph` (starred or not, with an optional
short title) start stretches under their trail; the title's own markup (`\\emph{x}`)
is dropped from the trail. Markup that is not prose (the preamble, comments,
`\\begin{..}`/`\\end{..}`, `\\label`/`\\ref`/`\\cite`/`\\index` commands and other command
names, braces, `&` and `\\\\` in tables) is shown but neither embedded nor BM25-indexed.
"""

from __future__ import annotations

import re

from ..sections import Section, Stretch
from .outline import merge
from .encoding import decode_text

_LEVELS = {"part": 0, "chapter": 1, "section": 2, "subsection": 3, "subsubsection": 4, "paragraph": 5,
           "subparagraph": 6}
_HEADING = re.compile(r"\\(part|chapter|section|subsection|subsubsection|paragraph|subparagraph)\*?"
                      r"[ \t]*(?:\[[^\]\n]*\])?[ \t]*\{")
_TITLE = re.compile(r"\\title[ \t]*(?:\[[^\]\n]*\])?[ \t]*\{")
_COMMENT = re.compile(r"(?<!\\)%.*$", re.MULTILINE)
# Commands dropped with their argument, and the names of all others (their text stays).
_DROPPED = re.compile(r"\\(?:label|ref|eqref|pageref|cite[pt]?|index|begin|end|usepackage|documentclass|"
                      r"includegraphics|bibliography|bibliographystyle|input|include|vspace|hspace)\*?"
                      r"(?:\[[^\]\n]*\])?(?:\{[^{}\n]*\})?")
_COMMAND = re.compile(r"\\[A-Za-z@]+\*?|[{}&]|\\\\")


def read_latex(raw: bytes, path: str) -> list[Section]:
    text = decode_text(raw)
    outline, markup, title = parse(text)
    return [Section(text, title=title, outline=tuple(outline), markup=markup)]


def parse(text: str) -> tuple[list[Stretch], tuple[tuple[int, int], ...], str]:
    markup: list[tuple[int, int]] = [m.span() for m in _COMMENT.finditer(text)]
    begin = text.find("\\begin{document}")
    body = 0 if begin < 0 else begin
    if body:
        markup.append((0, body))
    title = ""
    m = _TITLE.search(text, 0, body or len(text))
    if m:
        title = _plain(_braced(text, m.end() - 1))
    comments = [c.span() for c in _COMMENT.finditer(text)]
    # Stretches run from the end of one heading command to the start of the next.
    heads = []
    for m in _HEADING.finditer(text, body):
        if any(a <= m.start() < b for a, b in comments):
            continue
        argument = _braced(text, m.end() - 1)
        heads.append((m.start(), m.end() + len(argument) + 1, _LEVELS[m.group(1)], _plain(argument)))
    out: list[Stretch] = []
    trail: list[tuple[int, str]] = []
    pos, context = body, ""
    for start, end, level, words in heads:
        out.append((pos, start, context))
        trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, words)]
        pos, context = end, " > ".join(t for _, t in trail)
    end_doc = text.find("\\end{document}", pos)
    out.append((pos, len(text) if end_doc < 0 else end_doc, context))
    markup += [m.span() for m in _DROPPED.finditer(text, body)]
    markup += [m.span() for m in _COMMAND.finditer(text, body)]
    return [s for s in out if s[0] < s[1]], merge(markup), title


def _braced(text: str, open_at: int) -> str:
    """The text inside the braces opening at open_at (nested braces kept)."""
    depth = 0
    for i in range(open_at, min(len(text), open_at + 2000)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return ""


def _plain(latex: str) -> str:
    return re.sub(r"\s+", " ", _COMMAND.sub("", _DROPPED.sub("", latex)).replace("~", " ")).strip()
