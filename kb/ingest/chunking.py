"""Split a document's text into passages that fit the embedding model's window.

Passages follow the text's own structure: paragraphs are packed whole while they
fit; a paragraph too long for one passage is cut between sentences; only a
sentence that alone exceeds the window is cut, at token boundaries. Every passage
is a pair of character offsets into the original text, so citations are exact.

Pure functions: token counting is injected, which keeps this module free of any
model import and easy to property-test.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Sequence

# Counts tokens for a batch of strings (without special tokens).
TokenCounter = Callable[[Sequence[str]], list[int]]
# Returns the end offsets (relative to the string) of its tokens, for cutting.
TokenEnds = Callable[[str], list[int]]


@dataclass(frozen=True)
class Chunk:
    """One passage: a span of the source text plus the headings it sits under."""

    char_start: int
    char_end: int
    context: str = ""


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? or … (optionally followed by closing quotes or brackets)
# when whitespace and then something that can start a sentence follows.
_SENTENCE_END = re.compile(
    r"""[.!?…]+["'”’)\]]*(?=\s+["'“‘(\[]?[A-Z0-9])"""
)
# Abbreviations whose final period is not a sentence end.
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st vs etc e.g i.e cf al fig no nos vol pp p
    inc ltd co corp dept univ gen col lt sgt rev hon jan feb mar apr jun jul aug
    sep sept oct nov dec""".split()
)
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")
_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
# A fenced code block: ``` or ~~~ up to the same fence (or the end of the text).
_MD_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,}).*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)


def paragraph_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Spans of non-blank paragraphs (separated by blank lines), whitespace trimmed."""
    end = len(text) if end is None else end
    spans = []
    pos = start
    for m in _PARAGRAPH_BREAK.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s[0] < s[1]]


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Spans of the sentences in text[start:end], whitespace trimmed, covering all of it."""
    end = len(text) if end is None else end
    spans = []
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        if _is_abbreviation(text, pos, m.start()):
            continue
        spans.append((pos, m.end()))
        pos = m.end()
    spans.append((pos, end))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s[0] < s[1]]


def chunk_text(
    text: str,
    count_tokens: TokenCounter,
    token_ends: TokenEnds,
    *,
    max_tokens: int,
    overlap_tokens: int = 0,
    markdown: bool = False,
    title: str = "",
    outline: Sequence[tuple[int, int, str]] | None = None,
    markup: Sequence[tuple[int, int]] = (),
) -> list[Chunk]:
    """Cut text into chunks of at most max_tokens tokens (context included).

    overlap_tokens: when a paragraph has to be cut, the next chunk starts with as many
    trailing sentences of the previous one as fit in this budget, so an answer that
    straddles the cut is still seen whole by one chunk. title (e.g. a record's title)
    leads every chunk's context, as Markdown headings do. outline: (start, end, heading
    trail) stretches a chunk never crosses (default: the whole text, or its Markdown
    sections if markdown); markup: sorted spans that are not prose, so a paragraph made
    of nothing else (a link target, a comment) is no passage of its own.
    """
    chunks: list[Chunk] = []
    stretches = outline if outline is not None else _sections(text, markdown)
    for sec_start, sec_end, context in stretches:
        context = " > ".join(c for c in (title, context) if c)
        budget = max_tokens
        if context:
            budget -= count_tokens([context])[0] + 1
            if budget < max_tokens // 2:  # absurd heading trail: keep the text's room
                context, budget = "", max_tokens
        chunks.extend(
            _chunk_section(text, sec_start, sec_end, context, count_tokens, token_ends, budget, overlap_tokens,
                           markup)
        )
    return chunks


def _chunk_section(text, start, end, context, count_tokens, token_ends, budget, overlap_tokens, markup=()):
    # Units are sentences tagged with their paragraph; oversized sentences are cut first.
    units: list[tuple[int, int, int]] = []  # (start, end, paragraph number)
    paragraphs = paragraph_spans(text, start, end)
    if markup:
        paragraphs = [(a, b) for a, b in paragraphs if not only_markup(text, markup, a, b)]
    for para_no, (p_start, p_end) in enumerate(paragraphs):
        for s_start, s_end in sentence_spans(text, p_start, p_end):
            units.append((s_start, s_end, para_no))
    if not units:
        return []
    # Sizes are of what the model reads: markup (a table's borders) takes no room.
    sizes = count_tokens([_indexed(text, markup, a, b) for a, b, _ in units])
    pieces: list[tuple[int, int, int, int]] = []  # (start, end, paragraph, tokens)
    mid_word: set[int] = set()  # pieces of a sentence cut at token boundaries (maybe mid-word)
    for (a, b, para), size in zip(units, sizes):
        if size <= budget:
            pieces.append((a, b, para, size))
            continue
        # Too long: cut between its lines (a table's rows, a list's items) where they fit,
        # else at token boundaries.
        lines = [s for s in (_trim(text, x, y) for x, y in _line_spans(text, a, b)) if s[0] < s[1]]
        line_sizes = count_tokens([_indexed(text, markup, x, y) for x, y in lines]) if len(lines) > 1 else []
        for (x, y), n in zip(lines, line_sizes):
            if n <= budget:
                pieces.append((x, y, para, n))
                continue
            for x2, y2, n2 in _cut_long(text, x, y, count_tokens, token_ends, budget):
                mid_word.add(len(pieces))
                pieces.append((x2, y2, para, n2))
        if not line_sizes:
            for x, y, n in _cut_long(text, a, b, count_tokens, token_ends, budget):
                mid_word.add(len(pieces))
                pieces.append((x, y, para, n))

    chunks: list[Chunk] = []
    i = 0
    while i < len(pieces):
        # Pack pieces from i while the chunk stays within budget. Joining pieces adds
        # at most one token per boundary in practice; count the real span to be sure.
        j = i + 1
        used = pieces[i][3]
        while j < len(pieces) and used + pieces[j][3] + 1 <= budget:
            used += pieces[j][3] + 1
            j += 1
        # Prefer ending on a paragraph boundary if one falls in the second half.
        if j < len(pieces) and pieces[j][2] == pieces[j - 1][2]:
            for cut in range(j - 1, i, -1):
                if pieces[cut][2] != pieces[cut - 1][2] and cut - i >= (j - i + 1) // 2:
                    j = cut
                    break
        # Whole sentences are separated by whitespace, where the tokenizer splits anyway, so
        # their counts add up exactly; a sentence cut mid-word may not: count the real span.
        while j > i + 1 and any(n in mid_word for n in range(i, j)) and \
                count_tokens([_indexed(text, markup, pieces[i][0], pieces[j - 1][1])])[0] > budget:
            j -= 1
        chunks.append(Chunk(pieces[i][0], pieces[j - 1][1], context))
        if j >= len(pieces):
            break
        # Overlap only inside a paragraph: across a paragraph break the text changes topic.
        nxt = j
        if overlap_tokens and pieces[j][2] == pieces[j - 1][2]:
            carried = 0
            while nxt - 1 > i and pieces[nxt - 1][2] == pieces[j][2] and carried + pieces[nxt - 1][3] <= overlap_tokens:
                carried += pieces[nxt - 1][3]
                nxt -= 1
        i = nxt
    return chunks


def _cut_long(text, start, end, count_tokens, token_ends, budget):
    """Cut one oversized sentence at token boundaries, preferring whitespace."""
    ends = [start + e for e in token_ends(text[start:end])]
    first, pos = 0, start
    while first < len(ends):
        last = min(first + budget, len(ends)) - 1
        while True:
            cut = end if last == len(ends) - 1 else ends[last]
            if cut < end:
                space = text.rfind(" ", pos, cut)
                if space > pos and bisect_right(ends, space) - first >= budget // 2:
                    cut = space
            a, b = _trim(text, pos, cut)
            # Re-tokenising a cut span can add word pieces at its edge: re-count.
            if last == first or count_tokens([text[a:b]])[0] <= budget:
                break
            last -= max(1, (last - first) // 10)
        taken = max(1, bisect_right(ends, cut) - first)
        if a < b:
            yield a, b, count_tokens([text[a:b]])[0]
        first += taken
        pos = max(cut, ends[first - 1])


def _sections(text: str, markdown: bool):
    """(start, end, heading trail) for each stretch of text under the same headings."""
    if not markdown:
        yield 0, len(text), ""
        return
    trail: list[tuple[int, str]] = []
    pos = 0
    fences = [m.span() for m in _MD_FENCE.finditer(text)]
    for m in _MD_HEADING.finditer(text):
        if any(a <= m.start() < b for a, b in fences):  # a "# comment" inside a code block
            continue
        yield pos, m.start(), " > ".join(t for _, t in trail)
        level = len(m.group(1))
        # `fs.readFile(path)`: a heading's code span reads as its name in the trail.
        trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, m.group(2).strip().replace("`", ""))]
        pos = m.end()
    yield pos, len(text), " > ".join(t for _, t in trail)


def without_markup(text: str, markup: Sequence[tuple[int, int]], start: int, end: int) -> str | None:
    """text[start:end] without the markup spans in it (None when it has none): what is
    embedded and BM25-indexed. Blank lines left behind are folded. (The chunker asks this
    of every sentence it sizes: it builds no map of where characters came from.)"""
    pieces = _kept_pieces(text, markup, start, end)
    if pieces is None:
        return None
    return _BLANK_LINES.sub("\n\n", "".join(piece for _, piece in pieces)).strip()


def _kept_pieces(text: str, markup: Sequence[tuple[int, int]], start: int, end: int
                 ) -> list[tuple[int, str]] | None:
    """(offset in text, string) of the stretches of text[start:end] between its markup
    spans; None when no markup span falls in it."""
    if not markup:
        return None
    pieces, pos = [], start
    for s, e in markup[max(0, bisect_right(markup, (start, start)) - 1):]:
        if s >= end:
            break
        if e <= pos:
            continue
        pieces.append((pos, text[pos:max(s, pos)]))
        pos = min(e, end)
    if pos == start:
        return None
    pieces.append((pos, text[pos:end]))
    return pieces


def markup_free(text: str, markup: Sequence[tuple[int, int]], start: int, end: int
                ) -> tuple[str, tuple[tuple[int, int], ...]] | None:
    """As without_markup, with where each character of the clean text came from: runs of
    (offset in the clean text, offset in text[start:end]), each starting a stretch copied
    verbatim, the last (empty) where the clean text ends. A sentence of the text is then
    found in what the model reads (indexed_offset), so its vector pools the model's tokens
    of that sentence, not of the text beside it."""
    pieces = _kept_pieces(text, markup, start, end)
    if pieces is None:
        return None
    joined = "".join(piece for _, piece in pieces)
    # Where each piece starts in the joined string, and in the text.
    starts, origins, at = [], [], 0
    for origin, piece in pieces:
        if piece:
            starts.append(at)
            origins.append(origin - start)
            at += len(piece)
    # Kept stretches of the joined string: a run of blank lines keeps its first and last
    # newline (as _BLANK_LINES.sub("\n\n") does), then the whole is stripped.
    kept, at = [], 0
    for m in _BLANK_LINES.finditer(joined):
        kept.append((at, m.start() + 1))
        at = m.end() - 1
    kept.append((at, len(joined)))
    clean = "".join(joined[a:b] for a, b in kept)
    lead, trail = len(clean) - len(clean.lstrip()), len(clean) - len(clean.rstrip())
    runs, out = [], 0
    for a, b in kept:
        for n, piece_start in enumerate(starts):  # split the stretch where pieces meet
            piece_end = starts[n + 1] if n + 1 < len(starts) else len(joined)
            x, y = max(a, piece_start), min(b, piece_end)
            if x < y:
                runs.append((out, origins[n] + x - piece_start, y - x))
                out += y - x
    # Strip: drop `lead` characters from the front and `trail` from the back.
    total = out
    trimmed = []
    for c, o, n in runs:
        x, y = max(c, lead), min(c + n, total - trail)
        if x < y:
            trimmed.append((x - lead, o + x - c))
            after = (y - lead, o + y - c)
    clean = clean.strip()
    # A last run, empty, where the clean text ends: offsets past it map to its end.
    return clean, tuple(trimmed) + (after,) if trimmed else ()


def indexed_offset(runs: Sequence[tuple[int, int]], offset: int) -> int:
    """The offset in the clean text (markup_free) of the character at `offset` of the
    original: the clean text's position where it is, or would be had it been kept."""
    n = bisect_right([origin for _, origin in runs], offset) - 1
    if n < 0:
        return 0
    clean, origin = runs[n]
    if n + 1 == len(runs):  # at or past the end
        return clean
    return min(clean + offset - origin, runs[n + 1][0])


def _indexed(text, markup, start, end) -> str:
    clean = without_markup(text, markup, start, end)
    return text[start:end] if clean is None else clean


def only_markup(text: str, markup: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether every non-blank character of text[start:end] lies in a markup span."""
    pos = start
    for s, e in markup[max(0, bisect_right(markup, (start, start)) - 1):]:
        if s >= end:
            break
        if e <= pos:
            continue
        if s > pos and text[pos:s].strip():
            return False
        pos = e
    return pos >= end or not text[pos:end].strip()


def _is_abbreviation(text: str, sentence_start: int, dot: int) -> bool:
    if text[dot] != ".":
        return False
    word_start = dot
    while word_start > sentence_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:dot].lower().lstrip("(\"'“‘")
    # Single letters ("J. Smith") and listed abbreviations do not end sentences.
    return len(word) == 1 and word.isalpha() or word in _ABBREVIATIONS


def _line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl < 0 else nl
        spans.append((pos, stop))
        pos = stop + 1
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
