"""Questions -> hits: dense and lexical candidates, fusion, clean-up, best sentence.

    dense (FAISS cosine) ----+
                             +--> fuse --> drop gone files --> merge overlapping passages
    lexical (tantivy BM25) --+        --> --min-score --> MMR (optional) --> top k --> best sentence

Scores (Hit.score is the one the mode ranks by):
- dense: cosine similarity of question and passage embeddings, in [-1, 1];
- lexical: BM25 divided by the most the question's terms allow (kb.store.lexical), in [0, 1);
- hybrid (default): 0.95 x (0.85 x fused + 0.15 x sentence) + 0.05 x proximity, where
  fused = weight * dense + (1 - weight) * lexical; sentence is the cosine of the question
  with the passage's best-matching sentence (its sentence vectors were pooled from the
  model's token vectors at index time, kb.store.sentence_vectors; a passage of one
  sentence, or one stored without them, counts its dense cosine); proximity is the share
  of the question's neighbouring term pairs found near each other (kb.query.proximity),
  scored for the PROXIMITY_DEPTH best candidates (0 for the rest, which it could not lift
  past them). Every part is absolute, not rescaled per question, so a score means the
  same thing for every question and --min-score is one threshold for all. Dense, lexical
  and sentence are computed exactly for every candidate, including those only one
  retriever found. (rrf and minmax fusions rank by the fused value alone.)
Path filters restrict both retrievers before their top-k, so k hits still come back.
"""

from __future__ import annotations

import heapq
import json
import math

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from . import fusion
from ..store.background import alongside
from ..errors import BadInput, CorruptIndex
from .highlight import Sentences, best_sentences
from .hits import Hit
from .proximity import pairs, proximity
from ..store.lexical import LexicalIndex, query_terms
from ..store.lexical import terms as passage_terms
from ..store.database import PassageSpan, Store, StoredDocument
from ..store import sentence_vectors
from ..store.vector_index import VectorIndex

MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("convex", "minmax", "rrf")
DEFAULT_MODE = "hybrid"
# What a score can be, with float32 rounding: a score outside is damage (_in_range).
COSINE_RANGE = (-1.01, 1.01)
BM25_SHARE_RANGE = (0.0, 1.1)  # [0, 1) by construction (kb.store.lexical); a margin for tantivy's own idf
DEFAULT_FUSION = "convex"
DEFAULT_WEIGHT = 0.5  # share of the dense part in convex fusion
SENTENCE_WEIGHT = 0.15  # share of the best sentence's cosine in a hybrid score (docs/benchmarks.md)
PROXIMITY_WEIGHT = 0.05  # share of term proximity in a hybrid score (kb.query.proximity)
PROXIMITY_DEPTH = 20  # the best candidates of a question it is scored for (40 ranked the same)

Embed = Callable[[Sequence[str]], np.ndarray]
Freshness = Callable[[StoredDocument], str]  # -> "fresh" | "stale" | "gone"


@dataclass(frozen=True)
class SearchOptions:
    """How to search; the defaults are what won on SciFact train and XQuAD."""

    mode: str = DEFAULT_MODE
    fusion: str = DEFAULT_FUSION
    weight: float = DEFAULT_WEIGHT
    sentence_weight: float = SENTENCE_WEIGHT  # share of the best sentence's cosine in a hybrid score
    proximity_weight: float = PROXIMITY_WEIGHT  # share of term proximity in a hybrid score
    min_score: float | None = None  # drop hits scoring below this
    paths: tuple[str, ...] = ()  # globs on the cited or absolute path; any may match
    mmr: float | None = None  # MMR lambda in [0, 1] (1 = relevance only); None = off
    merge_overlaps: bool = True
    best_sentence: bool = True
    pool: int = 50  # candidates each retriever contributes, at least 3k

    def check(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise BadInput(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if not 0.0 <= self.weight <= 1.0:
            raise BadInput("the dense weight must be between 0 and 1")
        if not 0.0 <= self.sentence_weight <= 1.0:
            raise BadInput("the sentence weight must be between 0 and 1")
        if not 0.0 <= self.proximity_weight <= 1.0:
            raise BadInput("the proximity weight must be between 0 and 1")
        if self.mmr is not None and not 0.0 <= self.mmr <= 1.0:
            raise BadInput("--mmr must be between 0 and 1")
        score = self.min_score
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                                  or not math.isfinite(score)):
            # NaN would drop every hit (every comparison is false), inf too: a typo, not a wish.
            raise BadInput(f"--min-score must be a finite number, not {self.min_score!r}")


@dataclass
class _Candidate:
    passage: PassageSpan  # the best-ranked passage of the candidate; its span may grow by merging
    score: float
    dense: float | None
    lexical: float | None
    fused: float | None
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    parts: tuple[int, ...] = ()  # passage ids merged into this one, in merge order (itself first)
    sentence: float | None = None  # cosine of the question with the passage's best sentence
    proximity: float | None = None  # share of the question's term pairs near each other (hybrid)


def search(
    store: Store,
    vectors: VectorIndex,
    lexical: LexicalIndex,
    questions: Sequence[str],
    k: int,
    options: SearchOptions,
    *,
    embed: Embed | None,
    freshness: Freshness,
) -> list[list[Hit]]:
    """The k best hits for each question (an empty list when nothing qualifies)."""
    options.check()
    use_dense = options.mode != "lexical"
    if use_dense and embed is None:
        raise BadInput(f"{options.mode} mode needs the embedding model")
    allowed_docs, allowed = _allowed(store, options.paths) if options.paths else (None, None)
    if allowed is not None and not len(allowed):
        return [[] for _ in questions]
    pool = max(options.pool, 3 * k)

    terms = [query_terms(q) for q in questions]
    query_vectors, dense_lists, lexical_lists = _retrieve(vectors, lexical, questions, terms, pool, options,
                                                          embed, allowed, allowed_docs)
    ids = [_candidate_ids(options.mode, d, l) for d, l in zip(dense_lists, lexical_lists)]
    # BM25 of the candidates the lexical top k did not hold, beside SQLite reading the spans.
    unscored = [[i for i in row if i not in held] for row, held in zip(ids, (dict(top) for top in lexical_lists))]

    def lexical_rest() -> list[dict[int, float]]:
        return [lexical.score(t, row) for t, row in zip(terms, unscored)]

    lexical_rest_done = alongside(lexical_rest) if any(unscored) else lexical_rest
    # Candidates are ranked and merged by their spans alone; their documents' rows and
    # their text are read only for those that can still become hits.
    spans = store.spans(sorted({i for row in ids for i in row}))
    # Each candidate's sentences and their cosines with the question (no model call: the
    # sentence vectors were stored at index time).
    sentences = _sentence_cosines(store, ids, query_vectors) if query_vectors is not None else None
    scored = [_score(options, vectors, lexical, terms[n], None if query_vectors is None else query_vectors[n],
                     dense_lists[n], lexical_lists[n], ids[n], rest, sentences and sentences[n])
              for n, rest in enumerate(lexical_rest_done())]
    if options.mode == "hybrid" and options.fusion == "convex":
        scored = _with_proximity(store, lexical, terms, scored, options.proximity_weight)

    documents = _Documents(store)
    results = [_best(scores, spans, documents, freshness, vectors, k, options) for scores in scored]
    texts = store.texts(sorted({i for row in results for c in row for i in c.parts}))
    hits = [[_hit(rank, c, _text(c, spans, texts), documents[c.passage.document_id], texts[c.passage.id][1],
                  documents.freshness(c.passage.document_id, freshness) == "stale")
             for rank, c in enumerate(row, start=1)] for row in results]
    if options.best_sentence:
        evidence = None
        if sentences is not None and store.has_sentences:
            evidence = [[_hit_sentences(c, spans, texts, sentences[n]) for c in row] for n, row in enumerate(results)]
        hits = best_sentences(questions, hits, lexical, evidence)
    return hits


def _retrieve(vectors: VectorIndex, lexical: LexicalIndex, questions: Sequence[str], terms: list[list[str]],
              pool: int, options: SearchOptions, embed: Embed | None, allowed, allowed_docs):
    """(question vectors or None, dense top lists, lexical top lists), one list per question.

    The model and tantivy both let go of the GIL: the lexical top k runs beside the
    embedding, which holds both cores only part of the time (it waits on memory): 0.6 ms
    saved of 6.7 at 186k passages, 1.1 ms of 7.3 at 1M (embedding plus top k, idle machine)."""
    use_dense = options.mode != "lexical"

    def lexical_top() -> list[list[tuple[int, float]]]:
        if options.mode == "dense":
            return [[] for _ in questions]
        return [lexical.search(t, pool, documents=allowed_docs) for t in terms]

    if use_dense:
        vectors.prefetch()
    lexical_top_done = alongside(lexical_top) if use_dense and options.mode != "dense" else lexical_top
    query_vectors = embed(questions) if use_dense and embed is not None else None
    dense_lists = _dense_search(vectors, query_vectors, pool, allowed) if use_dense else [[] for _ in questions]
    return query_vectors, dense_lists, lexical_top_done()


def _best(scores: dict[int, tuple], spans: dict[int, PassageSpan], documents: "_Documents", freshness: Freshness,
          vectors: VectorIndex, k: int, options: SearchOptions) -> list[_Candidate]:
    """One question's hits, best first: ranked, merged, --min-score, present files, MMR, top k."""
    candidates = []
    for pid, score in fusion.ranked({i: p[0] for i, p in scores.items()}):
        p = spans.get(pid)
        if p is None:
            continue
        _, dense, lex, fused, sentence, near = scores[pid]
        candidates.append(_Candidate(p, score, dense, lex, fused, p.char_start, p.char_end, p.line_start,
                                     p.line_end, (p.id,), sentence, near))
    if options.merge_overlaps:
        candidates = merge_overlaps(candidates)
    if options.min_score is not None:
        candidates = [c for c in candidates if c.score >= options.min_score]
    # Files deleted since indexing drop out here, after merging: a file is gone or not as
    # a whole, and only passages of one file merge, so the order does not matter, and
    # only the candidates that can still be answers cost a stat() call.
    wanted = k if options.mmr is None else _mmr_pool(k)
    documents.read(c.passage.document_id for c in candidates[:wanted])
    candidates = _present(candidates, lambda c: documents.freshness(c.passage.document_id, freshness), wanted)
    if options.mmr is not None and len(candidates) > 1:
        candidates = _mmr(vectors, candidates, options.mmr, k)
    return candidates[:k]


# -- retrieval and scoring --------------------------------------------------------------
def _dense_search(vectors: VectorIndex, queries: np.ndarray, pool: int, allowed: np.ndarray | None
                  ) -> list[list[tuple[int, float]]]:
    scores, ids = vectors.search(queries, pool, allowed)
    return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0] for row_ids, row_scores in zip(ids, scores)]


def _candidate_ids(mode: str, dense_list, lexical_list) -> list[int]:
    """The passages a question's mode ranks: each retriever's top k, or both, dense first."""
    if mode == "dense":
        return [i for i, _ in dense_list]
    if mode == "lexical":
        return [i for i, _ in lexical_list]
    return list(dict.fromkeys([*(i for i, _ in dense_list), *(i for i, _ in lexical_list)]))


def _score(options, vectors: VectorIndex, lexical: LexicalIndex, terms, query_vector, dense_list, lexical_list,
           ids: list[int], lexical_rest: dict[int, float], sentences: dict[int, Sentences] | None
           ) -> dict[int, tuple]:
    """passage id -> (score, dense, lexical, fused, sentence) for this question's candidates
    (ids); lexical_rest: raw BM25 of those the lexical top k did not hold; sentences: the
    cosines of the candidates' stored sentences (None: no question vector)."""
    dense = dict(dense_list)
    raw = {**dict(lexical_list), **lexical_rest}
    if query_vector is not None:
        missing = [i for i in ids if i not in dense]
        if missing:
            # einsum, not BLAS: a small product must not wake a pool of BLAS threads.
            dense.update(zip(missing, np.einsum("ij,j->i", vectors.vectors(missing), query_vector).tolist()))
    ceiling = lexical.ceiling(terms)
    lex = {i: (raw.get(i, 0.0) / ceiling if ceiling > 0 else 0.0) for i in ids}
    _in_range(dense, COSINE_RANGE, "vector")
    _in_range(lex, BM25_SHARE_RANGE, "lexical")

    # A passage without stored sentences (one sentence long) is its own best sentence.
    best = {} if sentences is None else {i: (float(sentences[i].cosines.max()) if i in sentences else dense[i])
                                         for i in ids}
    if options.mode == "dense":
        return {i: (dense[i], dense[i], lex[i], None, best.get(i), None) for i in ids}
    if options.mode == "lexical":
        return {i: (lex[i], None, lex[i], None, None, None) for i in ids}
    if options.fusion == "rrf":
        fused = fusion.rrf([[i for i, _ in dense_list], [i for i, _ in lexical_list]])
    elif options.fusion == "minmax":
        fused = fusion.convex(fusion.min_max({i: dense[i] for i in ids}), fusion.min_max(lex), options.weight)
    else:
        fused = fusion.convex({i: dense[i] for i in ids}, lex, options.weight)
        share = options.sentence_weight
        return {i: ((1 - share) * fused.get(i, 0.0) + share * best[i], dense[i], lex[i],
                    fused.get(i, 0.0), best[i], None) for i in ids}
    return {i: (fused.get(i, 0.0), dense[i], lex[i], fused.get(i, 0.0), best.get(i), None) for i in ids}


def _with_proximity(store: Store, lexical: LexicalIndex, terms: list[list[str]], scored: list[dict[int, tuple]],
                    weight: float) -> list[dict[int, tuple]]:
    """Each question's scores with term proximity's share: (1 - weight) x score + weight x
    proximity, proximity read from the terms of its PROXIMITY_DEPTH best candidates (one
    SQLite read for all questions) and 0 for the rest, which it could not lift past them."""
    tops = [heapq.nsmallest(PROXIMITY_DEPTH, scores, key=lambda i: (-scores[i][0], i)) if pairs(t) else []
            for scores, t in zip(scored, terms)]
    # Each passage's terms once, however many of the batch's questions rank it high.
    read = {i: passage_terms(text) for i, text in store.lexical_texts(sorted({i for top in tops for i in top})).items()}
    out = []
    for scores, top, question in zip(scored, tops, terms):
        near = {i: proximity(question, read[i], lexical.idf) for i in top if i in read}
        out.append({i: ((1 - weight) * s[0] + weight * near.get(i, 0.0), *s[1:5], near.get(i, 0.0))
                    for i, s in scores.items()})
    return out


def _sentence_cosines(store: Store, ids: list[list[int]], query_vectors: np.ndarray) -> list[dict[int, Sentences]]:
    """Per question, candidate id -> its stored sentences' spans (into its text) and their
    cosines with the question, for the candidates that have them."""
    stored = {pid: sentence_vectors.read(blob)
              for pid, blob in store.sentences(sorted({i for row in ids for i in row})).items()}
    out = []
    for row, query_vector in zip(ids, query_vectors):
        have = [i for i in row if i in stored]
        values = sentence_vectors.cosines([stored[i] for i in have], query_vector)
        out.append({i: Sentences(stored[i][0], v) for i, v in zip(have, values)})
    return out


def _hit_sentences(c: _Candidate, spans: dict[int, PassageSpan], texts: dict[int, tuple[str, str]],
                   sentences: dict[int, Sentences]) -> Sentences | None:
    """The sentences of a hit (offsets into its text) with their cosines, from its passages'
    stored ones; None when its first passage has none (one sentence, or none stored)."""
    if c.parts[0] not in sentences:
        return None
    found: dict[tuple[int, int], float] = {}
    for pid in c.parts:
        if pid in sentences:
            shift = spans[pid].char_start - c.char_start
            for (a, b), cosine in zip(sentences[pid].spans.tolist(), sentences[pid].cosines.tolist()):
                found[a + shift, b + shift] = max(cosine, found.get((a + shift, b + shift), -1.0))
    ordered = sorted(found)
    return Sentences(np.array(ordered, dtype=np.int64).reshape(-1, 2), np.array([found[s] for s in ordered]))


def _in_range(scores: dict[int, float], bounds: tuple[float, float], index: str) -> None:
    """A score outside its documented range comes from damaged bytes (float32 rows whose
    bytes changed gave "cosines" of 1e18 that won every question): refuse, never rank it."""
    low, high = bounds
    for pid, score in scores.items():
        if not low <= score <= high:  # NaN fails too
            raise CorruptIndex(f"the {index} index gave passage {pid} the score {score:.4g}, outside "
                               f"[{low:g}, {high:g}]: an index file is damaged; run `kb index` to check and repair it")


def _allowed(store: Store, globs: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """(document ids, passage ids) of the files matching any glob (on source or absolute path)."""
    patterns = []
    for g in globs:
        g = g.strip()
        if not g:
            raise BadInput("--path needs a pattern")
        # A plain folder name means everything under it, as a user would expect.
        patterns.append(g + "*" if g.endswith("/") else g)
        if not any(ch in g for ch in "*?["):
            patterns.append(g.rstrip("/") + "/*")
    # The patterns travel as one JSON array, not one `GLOB ?` each: an OR of hundreds of
    # GLOBs overflows SQLite's expression tree ("Expression tree is too large", 1000 deep),
    # while json_each takes any number at one parameter.
    matching = ("SELECT id FROM documents d WHERE EXISTS (SELECT 1 FROM json_each(?) g"
                " WHERE d.source GLOB g.value OR d.abspath GLOB g.value)")
    params = [json.dumps(list(dict.fromkeys(patterns)))]
    documents = [r[0] for r in store.conn.execute(matching, params)]
    passages = np.fromiter((r[0] for r in store.conn.execute(
        f"SELECT p.id FROM passages p WHERE p.document_id IN ({matching})", params)), dtype=np.int64)
    return documents, passages


# -- clean-up -------------------------------------------------------------------------
def merge_overlaps(candidates: list) -> list:
    """Fold each passage into a better-ranked one of the same document that it overlaps.

    The kept hit's span (chars, lines) becomes the union, so its citation covers both, and
    its parts list the passages whose texts make it up (_text joins them for the hits);
    its score stays the better one. Input is best first; so is the output.
    """
    kept: list = []
    by_section: dict[tuple, list[int]] = {}  # (document, page, record, location) -> indexes
    for c in candidates:
        same = by_section.setdefault((c.passage.document_id, c.passage.page, c.passage.record,
                                       c.passage.location), [])
        for i in same:
            if c.char_start < kept[i].char_end and kept[i].char_start < c.char_end:
                kept[i] = _union(kept[i], c)
                break
        else:
            same.append(len(kept))
            kept.append(c)
    return kept


def _union(a, b):
    return replace(a, char_start=min(a.char_start, b.char_start), char_end=max(a.char_end, b.char_end),
                   line_start=min(a.line_start, b.line_start), line_end=max(a.line_end, b.line_end),
                   parts=a.parts + b.parts)


def _join(a: str, a_start: int, a_end: int, b: str, b_start: int, b_end: int) -> str:
    """The text of two overlapping spans of one document, as one span."""
    if b_start < a_start:
        a, a_start, a_end, b, b_start, b_end = b, b_start, b_end, a, a_start, a_end
    return a + b[a_end - b_start:] if b_end > a_end else a


def _text(c: _Candidate, spans: dict[int, PassageSpan], texts: dict[int, tuple[str, str]]) -> str:
    """The candidate's text: its passages' texts joined as merge_overlaps joined their spans."""
    first = spans[c.parts[0]]
    text, start, end = texts[first.id][0], first.char_start, first.char_end
    for pid in c.parts[1:]:
        p = spans[pid]
        text = _join(text, start, end, texts[pid][0], p.char_start, p.char_end)
        start, end = min(start, p.char_start), max(end, p.char_end)
    return text


class _Documents(dict):
    """document id -> its row, read for the candidates that need one, a batch at a time."""

    def __init__(self, store: Store):
        super().__init__()
        self.store = store

    def read(self, ids) -> None:
        missing = set(ids) - self.keys()
        if missing:
            self.update(self.store.documents_by_id(missing))

    def freshness(self, document_id: int, freshness: Freshness) -> str:
        if document_id not in self:
            self.read((document_id,))
        document = self.get(document_id)
        return "gone" if document is None else freshness(document)


def _present(candidates: list, freshness: Callable[[_Candidate], str], wanted: int) -> list:
    """The first `wanted` candidates whose file is not gone, in order."""
    kept = []
    for c in candidates:
        if len(kept) == wanted:
            break
        if freshness(c) != "gone":
            kept.append(c)
    return kept


def _mmr_pool(k: int) -> int:
    return max(3 * k, 10)


def _mmr(index: VectorIndex, candidates: list, lam: float, k: int) -> list:
    """Maximal marginal relevance: trade score against similarity to hits already chosen."""
    pool = candidates[: _mmr_pool(k)]
    vectors = index.vectors([c.passage.id for c in pool])
    similarity = np.einsum("ij,kj->ik", vectors, vectors)
    chosen = [0]
    left = list(range(1, len(pool)))
    while left and len(chosen) < k:
        best = max(left, key=lambda i: lam * pool[i].score - (1 - lam) * float(similarity[i, chosen].max()))
        chosen.append(best)
        left.remove(best)
    return [pool[i] for i in chosen]


def _hit(rank: int, c: _Candidate, text: str, document: StoredDocument, context: str, stale: bool) -> Hit:
    p = c.passage

    def r(x):
        return None if x is None else round(float(x), 6)

    return Hit(rank=rank, score=r(c.score), text=text, source=document.source, line_start=c.line_start,
               line_end=c.line_end, char_start=c.char_start, char_end=c.char_end, context=context,
               passage_id=p.id, stale=stale, page=p.page, record=p.record, location=p.location,
               dense=r(c.dense), lexical=r(c.lexical), fused=r(c.fused), sentence_score=r(c.sentence),
               proximity=r(c.proximity))
