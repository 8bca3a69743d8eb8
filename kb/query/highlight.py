"""The sentence of each hit that best answers the question, without running the model on it.

With the index's sentence vectors (kb.store.sentence_vectors: pooled from the passage's
own token vectors when it was embedded), a sentence scores
    MODEL_WEIGHT x cosine of its vector with the question's + (1 - MODEL_WEIGHT) x soft word match.
Without them (a passage stored by an embedder that cannot pool, or by kb before they
existed), by its words alone: 0.5 x term evidence + 0.5 x soft word match.
- term evidence: the idf-weighted share of the question's terms (stemmed, stopwords
  dropped, as BM25 sees them) that occur in the sentence;
- soft word match: for each word piece of the question (stopwords dropped), its best
  cosine with any word piece of the sentence, averaged. Word-piece vectors are the
  packaged model's own input embeddings, a table lookup: "medics" sits near "doctors",
  which the stemmer cannot see.
Ties go to the sentence with more of the question's words by prefix, then the earlier one.

The question's vector is the one the search already made: no model call here. On the
article's paraphrased questions the sentence vectors put the answer in the highlighted
sentence 29 times in 35 where words alone did 24; on XQuAD, whose questions reuse their
passage's words, the two are level (bench/sentences.py). Embedding every sentence at
question time, as kb 0.1 did, cost 0.1-0.7 s per question.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..ingest.chunking import sentence_spans
from .hits import Hit
from ..store.lexical import STOPWORDS, WORD, query_terms, terms
from ..embed.model import ModelFiles, cache_dir, packaged_model
from ..embed.partial_tokenizer import shared_tokenizer

WEIGHT = 0.5  # share of the soft word match; XQuAD was flat from 0.2 to 0.65 (bench/highlight.py)
# With sentence vectors, a sentence scores MODEL_WEIGHT x its vector's cosine with the
# question + the rest x soft word match; term evidence then only hurt (bench/sentences.py).
MODEL_WEIGHT = 0.45
STATIC_FILE = "word_pieces.npy"
CHUNK_CACHE_MAX = 200_000  # whitespace chunks remembered (a few tens of MB at most)

Idf = Callable[[str], float]


class Sentences(NamedTuple):
    """Sentences of a text with their cosines to the question, from stored sentence vectors."""

    spans: np.ndarray  # int n x 2: character offsets into the text
    cosines: np.ndarray  # float n


def best_sentences(questions: Sequence[str], hits: Sequence[Sequence[Hit]], lexical,
                   evidence: Sequence[Sequence[Sentences | None]] | None = None) -> list[list[Hit]]:
    """The hits with sentence_start/sentence_end set (lexical: anything with .idf(term)).

    evidence: per question, per hit, its sentences and their cosines with the question
    (kb.query.search reads them from the index); a hit without them has its sentences
    found here and judged by their words alone."""
    pieces = WordPieces.load()
    pieces.learn([h.text for row in hits for h in row])
    out = []
    for n, (question, row) in enumerate(zip(questions, hits)):
        query = _Query(question, pieces, lexical.idf)
        found = [None] * len(row) if evidence is None else evidence[n]
        spans = [sentence_spans(h.text) if e is None else [tuple(x) for x in e.spans.tolist()]
                 for h, e in zip(row, found)]
        best = []
        for words, e in zip(query.scores([h.text for h in row], spans, only_several=True), found):
            if e is None:
                best.append(_pick([(WEIGHT * soft + (1 - WEIGHT) * term, shared) for term, soft, shared in words]))
            else:
                best.append(_pick([(MODEL_WEIGHT * cosine + (1 - MODEL_WEIGHT) * soft, shared)
                                   for cosine, (_, soft, shared) in zip(e.cosines.tolist(), words)]))
        out.append([h if not s else replace(h, sentence_start=h.char_start + s[i][0], sentence_end=h.char_start + s[i][1])
                    for h, s, i in zip(row, spans, best)])
    return out


class _Query:
    def __init__(self, question: str, pieces: "WordPieces", idf: Idf):
        terms = query_terms(question)
        self.weights = {t: idf(t) for t in terms}
        self.prefixes = _prefixes(question) - _STOP_PREFIXES
        self.pieces = pieces
        self.vectors = pieces.vectors(pieces.content_ids(question))

    def best(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> list[int]:
        """Per text, the index of its best-answering sentence among its spans (0 if it has
        none or one), by words alone. All the texts' sentences are compared at once."""
        return [_pick([(WEIGHT * soft + (1 - WEIGHT) * term, shared) for term, soft, shared in row])
                for row in self.scores(texts, spans, only_several=True)]

    def scores(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
               only_several: bool = False) -> list[list[tuple[float, float, int]]]:
        """Per text, per sentence: (term evidence, soft word match, question words it shares
        by prefix). With only_several, texts of fewer than two sentences get none (there is
        nothing to choose)."""
        several = [n for n, s in enumerate(spans) if len(s) > 1 or (s and not only_several)]
        sentences = [[self.pieces.words(texts[n][a:b]) for a, b in spans[n]] for n in several]
        soft = iter(self.pieces.max_similarity(self.vectors, [s.ids for row in sentences for s in row]))
        total = sum(self.weights.values()) or 1.0
        out: list[list[tuple[float, float, int]]] = [[] for _ in texts]
        for n, row in zip(several, sentences):
            for sentence, similarity in zip(row, soft):
                evidence = sum(w for t, w in self.weights.items() if t in sentence.terms) / total
                out[n].append((evidence, similarity, len(self.prefixes & sentence.prefixes)))
        return out


def _pick(scores: Sequence[tuple]) -> int:
    """The best score's index; ties go to the earlier sentence."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i)) if len(scores) > 1 else 0


class _Words(NamedTuple):
    """A stretch of text as the highlighter reads it."""

    ids: list[int]  # the model's word pieces, in order
    terms: set[str]  # BM25 terms (kb.store.lexical.terms)
    prefixes: set[str]  # five-letter word prefixes (_prefixes)


class WordPieces:
    """The model's input word-piece embeddings, unit length, memory-mapped from kb's cache.

    Written once per model (float32, 47 MB) from the weights file; a process reads only
    the rows its questions touch.
    """

    def __init__(self, model: ModelFiles, table: np.ndarray):
        # The tokenizer the query embedder uses (truncating at the model's window, which no
        # sentence of a passage reaches): building a second one would cost 40-70 ms.
        self.tokenizer = shared_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
        self.table = np.asarray(table)  # a plain view: np.memmap's indexing is slow Python
        ids = (self.tokenizer.token_to_id(w) for w in STOPWORDS)  # a vocabulary lookup each
        self.stop_ids = {i for i in ids if i is not None}
        self._chunks: dict[str, _Words] = {}

    @classmethod
    @lru_cache(maxsize=1)
    def load(cls) -> "WordPieces":
        model = packaged_model()
        path = cache_dir() / "static" / model.weights_sha256 / STATIC_FILE
        try:
            table = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            table = _write_table(model, path)
        return cls(model, table)

    def content_ids(self, text: str) -> list[int]:
        return [i for i in self.tokenizer.encode(text, add_special_tokens=False).ids if i not in self.stop_ids]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        return np.asarray(self.table[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def words(self, text: str) -> _Words:
        """Word pieces, terms and prefixes of a sentence, from a cache of its chunks.

        Neither the tokenizer (WordPiece after BERT's pre-tokenizer) nor tantivy's
        analyzer ever joins text across whitespace, so a sentence reads as the
        concatenation of its whitespace-separated chunks, and a chunk reads the same in
        every sentence. Chunks repeat across hits and questions: looking them up costs a
        fraction of tokenising each sentence again (0.4 vs 1.2-2 ms per question's hits).
        """
        chunks = text.lower().split()
        cache = self._chunks
        try:
            read = [cache[c] for c in chunks]  # all there when learn() saw the text
        except KeyError:
            known = self._read(chunks)
            read = [known[c] for c in chunks]
        ids: list[int] = []
        found: set[str] = set()
        prefixes: set[str] = set()
        for words in read:
            ids += words.ids
            found |= words.terms
            prefixes |= words.prefixes
        return _Words(ids, found, prefixes)

    def learn(self, texts: Sequence[str]) -> None:
        """Read the chunks of these texts not yet in the cache, all in one tokenizer call."""
        self._read([c for t in texts for c in t.lower().split()])

    def _read(self, chunks: Sequence[str]) -> dict[str, _Words]:
        """chunk -> how it reads, for these chunks. Safe across threads (a server's
        workers share this object): a full cache is replaced, never emptied in place."""
        cache = self._chunks
        missing = [c for c in dict.fromkeys(chunks) if c not in cache]
        if not missing:
            return cache  # this reference holds them all, whatever another thread swaps in
        read = {c: cache[c] for c in chunks if c in cache}
        if len(cache) + len(missing) > CHUNK_CACHE_MAX:
            self._chunks = cache = {}
        for chunk, encoding in zip(missing, self.tokenizer.encode_batch(missing, add_special_tokens=False)):
            read[chunk] = cache[chunk] = _Words(encoding.ids, set(terms(chunk)), _prefixes(chunk))
        return read

    def max_similarity(self, query: np.ndarray, sentences: Sequence[Sequence[int]]) -> list[float]:
        """Per sentence (its word-piece ids): the mean over query pieces of their best
        cosine with its pieces."""
        lengths = [len(ids) for ids in sentences]
        if not len(query) or not sum(lengths):
            return [0.0] * len(sentences)
        ids = np.array(list(chain.from_iterable(sentences)), dtype=np.int64)
        # query pieces x each distinct sentence piece (about half of them repeat), then
        # spread to every position; einsum, not BLAS: a small product must not wake a pool
        # of BLAS threads (on a busy machine that cost 40x the product).
        distinct, position = np.unique(ids, return_inverse=True)
        similarity = np.einsum("ij,kj->ik", query, self.vectors(distinct))[:, position]
        filled = [n for n, length in enumerate(lengths) if length]
        starts = np.cumsum([0, *lengths[:-1]])[filled]
        # Each sentence's best match per query piece (one reduction over all sentences), averaged.
        best = np.maximum.reduceat(similarity, starts, axis=1).mean(axis=0)
        out = [0.0] * len(sentences)
        for n, value in zip(filled, best.tolist()):
            out[n] = value
        return out


def _write_table(model: ModelFiles, path: Path) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(model.path / "model.safetensors"), framework="np") as f:
        name = next(k for k in f.keys() if k.endswith("word_embeddings.weight"))
        table = f.get_tensor(name).astype(np.float32)
    table /= np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            np.save(out, table)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs this conversion on every process
    return table


def _prefixes(text: str) -> set[str]:
    # Five-letter prefixes catch what a stemmer misses (strike/striking, organise/organisation).
    return {w[:5] for w in WORD.findall(text.lower()) if len(w) > 2}


_STOP_PREFIXES = {w[:5] for w in STOPWORDS}
