"""What a search returns: one passage with its exact citation and score."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float  # cosine similarity of question and passage, in [-1, 1]
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

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def citation(self) -> str:
        lines = f"{self.line_start}" if self.line_start == self.line_end else f"{self.line_start}-{self.line_end}"
        where = f"{self.source}:{lines}"
        if self.record is not None:
            where += f" #{self.record}"
        if self.page is not None:
            where += f" (page {self.page})"
        return where
