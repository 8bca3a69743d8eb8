"""The sentence of each hit that best answers the question, found without running the model.

A sentence scores 0.5 x term evidence + 0.5 x soft word match:
- term evidence: the idf-weighted share of the question's terms (stemmed, stopwords
  dropped, as BM25 sees them) that occur in the sentence;
- soft word match: for each word piece of the question (stopwords dropped), its best
  cosine with any word piece of the sentence, averaged. Word-piece vectors are the
  packaged model's own input embeddings, a table lookup: "medics" sits near "doctors",
  which the stemmer cannot see.
Ties go to the sentence with more of the question's words by prefix, then the earlier one.

Before, each sentence of every hit was embedded and compared with the question: 0.1-0.7 s
per question, more than everything else a question costs. On XQuAD, given the passage that
holds the answer, this method put the answer in the highlighted sentence more often than
the model did (0.837 vs 0.824; bench/highlight.py has the figures and the methods tried),
at about a millisecond per question.
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
STATIC_FILE = "word_pieces.npy"
CHUNK_CACHE_MAX = 200_000  # whitespace chunks remembered (a few tens of MB at most)

Idf = Callable[[str], float]


def best_sentences(questions: Sequence[str], hits: Sequence[Sequence[Hit]], lexical) -> list[list[Hit]]:
    """The hits with sentence_start/sentence_end set (lexical: anything with .idf(term))."""
    pieces = WordPieces.load()
    pieces.learn([h.text for row in hits for h in row])
    out = []
    for question, row in zip(questions, hits):
        query = _Query(question, pieces, lexical.idf)
        spans = [sentence_spans(h.text) for h in row]
        best = query.best([h.text for h in row], spans)
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
        none or one). All the texts' sentences are compared with the question at once."""
        several = [n for n, s in enumerate(spans) if len(s) > 1]
        sentences = [[self.pieces.words(texts[n][a:b]) for a, b in spans[n]] for n in several]
        soft = iter(self.pieces.max_similarity(self.vectors, [s.ids for row in sentences for s in row]))
        total = sum(self.weights.values()) or 1.0
        best = [0] * len(texts)
        for n, row in zip(several, sentences):
            scores = []
            for sentence, similarity in zip(row, soft):
                evidence = sum(w for t, w in self.weights.items() if t in sentence.terms) / total
                scores.append((WEIGHT * similarity + (1 - WEIGHT) * evidence, len(self.prefixes & sentence.prefixes)))
            best[n] = max(range(len(row)), key=lambda i: (scores[i], -i))
        return best


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
