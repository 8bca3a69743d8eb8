"""What a search returns: one passage with its exact citation and score."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float  # what ranked it: hybrid, 0.95 x (0.85 x fused + 0.15 x sentence_score) + 0.05 x proximity; else `dense` or `lexical` (kb.query.search)
    text: str
    source: str  # path as given to `kb index` (relative to where it ran), or absolute
    line_start: int
    line_end: int
    char_start: int
    char_end: int
    context: str  # headings the passage sits under (Markdown), else ""
    passage_id: int
    stale: bool  # the file changed since it was indexed: the citation may be off
    page: int | None = None  # 1-based page, for PDFs
    record: str | None = None  # record id, for JSONL files
    dense: float | None = None  # cosine similarity of question and passage, in [-1, 1]
    lexical: float | None = None  # BM25 as a share of the most the question's terms allow, in [0, 1)
    fused: float | None = None  # hybrid mode: the weighted sum of dense and lexical
    sentence_start: int | None = None  # the sentence that best answers the question,
    sentence_end: int | None = None  # as char offsets like char_start/char_end
    # Where in the file, for formats whose places are not pages or records: "slide 3",
    # "sheet Budget, rows 2-41", "message 4", "OCR" (text read from an image).
    location: str | None = None
    sentence_score: float | None = None  # cosine of the question with the passage's best-matching sentence
    proximity: float | None = None  # hybrid: share of the question's neighbouring term pairs near each other here

    @property
    def sentence(self) -> str:
        """The best-answering sentence (the whole passage when none was chosen)."""
        if self.sentence_start is None or self.sentence_end is None:
            return self.text
        return self.text[self.sentence_start - self.char_start : self.sentence_end - self.char_start]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Hit":
        """A hit from its JSON (`kb ask --server`); fields a newer server adds are ignored."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @property
    def citation(self) -> str:
        lines = f"{self.line_start}" if self.line_start == self.line_end else f"{self.line_start}-{self.line_end}"
        where = f"{self.source}:{lines}"
        if self.record is not None:
            where += f" #{self.record}"
        places = ([f"page {self.page}"] if self.page is not None else []) + ([self.location] if self.location else [])
        if places:
            where += f" ({', '.join(places)})"
        return where
