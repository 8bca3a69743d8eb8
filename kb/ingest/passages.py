"""Documents -> passages: chunk a document and give each chunk its exact citation.

A passage has two texts: `text`, the file's own characters (shown and cited), and
`indexed`, what the model embeds and BM25 indexes: the same text without the spans its
reader marked as markup (table borders, directive options, link targets, comments).
Vectors are stored by the text embedded, so both the vector key and the lexical index
follow `indexed`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import asdict, dataclass

from .chunking import chunk_text, indexed_offset, markup_free
from .documents import Document
from ..embed.model import TokenCounter
from .sections import Section

_NEWLINE = re.compile("\n")


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut; recorded in the index because it shapes every vector.

    max_tokens stays well below the model's 256-token window (which also holds the
    [CLS]/[SEP] tokens and any heading context), so the model sees every passage whole.
    """

    max_tokens: int = 200
    overlap_tokens: int = 40

    @classmethod
    def sized(cls, max_tokens: int) -> "ChunkSettings":
        """Passages of max_tokens word pieces, overlapping by a fifth of that."""
        return cls(max_tokens=max_tokens, overlap_tokens=max_tokens // 5)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Passage:
    text: str  # exactly section.text[char_start:char_end] (for text files: the file's text)
    context: str  # title and heading trail, embedded with the text but not cited
    char_start: int
    char_end: int
    line_start: int  # 1-based, inclusive, in the source file
    line_end: int
    page: int | None = None
    record: str | None = None
    location: str | None = None  # the section's label: "slide 3", "rows 2-41" (kb.ingest.sections)
    indexed: str | None = None  # text without its markup; None: the text itself
    # Where indexed's characters come from in text (kb.ingest.chunking.markup_free): not
    # stored, only read while the passage is embedded, to pool each sentence's own tokens.
    indexed_runs: tuple[tuple[int, int], ...] = ()

    @property
    def indexed_text(self) -> str:
        return self.text if self.indexed is None else self.indexed

    @property
    def embedding_text(self) -> str:
        return f"{self.context}\n{self.indexed_text}" if self.context else self.indexed_text

    def embedded_span(self, start: int, end: int) -> tuple[int, int]:
        """Where text[start:end] lies in embedding_text (a sentence, for its vector)."""
        if self.indexed is not None:
            start, end = indexed_offset(self.indexed_runs, start), indexed_offset(self.indexed_runs, end)
        shift = len(self.context) + 1 if self.context else 0
        return start + shift, end + shift


def make_passages(document: Document, counter: TokenCounter, settings: ChunkSettings) -> list[Passage]:
    return [p for section in document.sections for p in section_passages(section, counter, settings)]


def section_passages(section: Section, counter: TokenCounter, settings: ChunkSettings) -> list[Passage]:
    text = section.text
    chunks = chunk_text(
        text,
        counter.count,
        counter.token_ends,
        max_tokens=settings.max_tokens,
        overlap_tokens=settings.overlap_tokens,
        markdown=section.markdown,
        title=section.title,
        outline=section.outline,
        markup=section.markup,
    )
    # A JSONL record's text may hold newlines, but the record is one line of the file.
    newlines = [] if section.single_line else [m.start() for m in _NEWLINE.finditer(text)]
    first = section.first_line
    passages = []
    for c in chunks:
        clean = markup_free(text, section.markup, c.char_start, c.char_end)
        passages.append(Passage(
            text=text[c.char_start : c.char_end],
            context=c.context,
            char_start=c.char_start,
            char_end=c.char_end,
            line_start=first + bisect_right(newlines, c.char_start - 1),
            line_end=first + bisect_right(newlines, c.char_end - 1),
            page=section.page,
            record=section.record,
            location=section.location,
            indexed=None if clean is None else clean[0],
            indexed_runs=() if clean is None else clean[1],
        ))
    return passages

