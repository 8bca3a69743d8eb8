"""Best-sentence highlighting: how often the highlighted sentence holds the answer, per method.

    .venv/bin/python bench/highlight.py [--xquad DIR] [--cache DIR]

For every XQuAD question, kb answers it (hybrid, top 5, no highlighting); in the first hit
that contains a gold answer string, each method picks a sentence, and scores a point if
that sentence contains a gold answer. The same on the shipped article's 36 paraphrased
questions (tests/test_search.py), where the needle is a phrase of the answering paragraph.

Methods:
- model: kb 0.1's method: every sentence embedded with the model, 0.5 x cosine with the
  question + 0.5 x term evidence (what the default has to match within 0.01);
- terms: term evidence only;
- static-mean: 0.5 x term evidence + 0.5 x cosine of the mean static word-piece vectors
  of question and sentence (the model's input embedding table: no model call);
- default (kb.query.highlight): 0.5 x term evidence + 0.5 x, for each word piece of the
  question (stopwords dropped), its best cosine with the sentence's pieces, averaged.

XQuAD is at https://github.com/google-deepmind/xquad (English split, BEIR layout built
from it); the default path is ../shared/data/xquad-en.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from kb import KnowledgeBase  # noqa: E402
from kb.ingest.chunking import sentence_spans  # noqa: E402
from kb.evaluate import build_index, load_dataset  # noqa: E402
from kb.query.highlight import _STOP_PREFIXES, WordPieces, _prefixes, _Query  # noqa: E402
from kb.store.lexical import STOPWORDS, WORD, query_terms  # noqa: E402
from kb.embed.model import cache_dir, packaged_model  # noqa: E402


def pick(method, question, text, spans, lexical, pieces, embedder, question_vector):
    if len(spans) == 1:
        return 0
    if method == "default":
        return _Query(question, pieces, lexical.idf).best([text], [spans])[0]
    sentences = [text[a:b] for a, b in spans]
    evidence = _evidence(question, sentences, lexical)
    if method == "terms":
        values = evidence
    elif method == "model":
        cosines = embedder.embed(sentences) @ question_vector
        values = [(0.5 * c + 0.5 * e[0], e[1]) for c, e in zip(cosines, _old_evidence(question, sentences, lexical))]
    else:  # static-mean
        q = _mean(pieces, pieces.tokenizer.encode(question, add_special_tokens=False).ids)
        cosines = [float(_mean(pieces, e.ids) @ q)
                   for e in pieces.tokenizer.encode_batch(sentences, add_special_tokens=False)]
        values = [(0.5 * c + 0.5 * e[0], e[1]) for c, e in zip(cosines, evidence)]
    return max(range(len(spans)), key=lambda i: (values[i], -i))


def _mean(pieces, ids):
    if not len(ids):
        return np.zeros(pieces.table.shape[1], np.float32)
    v = pieces.vectors(ids).mean(axis=0)
    return v / (np.linalg.norm(v) or 1.0)


def _evidence(question, sentences, lexical):
    """kb.query.highlight's term evidence and prefix tie-break, alone."""
    from kb.store.lexical import terms

    wanted = query_terms(question)
    prefixes = _prefixes(question) - _STOP_PREFIXES
    weights = {t: lexical.idf(t) for t in wanted}
    total = sum(weights.values()) or 1.0
    return [(sum(w for t, w in weights.items() if t in set(terms(s))) / total, len(prefixes & _prefixes(s)))
            for s in sentences]


def _old_evidence(question, sentences, lexical):
    """kb 0.1's term evidence: five-letter prefixes of the question's words, idf-weighted."""
    words = [w for w in dict.fromkeys(WORD.findall(question.lower())) if w not in STOPWORDS]
    idf = {w[:5]: lexical.idf(t) for w in words for t in query_terms(w)[:1]}
    total = sum(idf.values()) or 1.0
    return [(sum(v for s, v in idf.items() if s in {x[:5] for x in WORD.findall(sentence.lower())}) / total, 0)
            for sentence in sentences]


def run(kb, questions, golds, methods, pieces, embedder):
    """(answer in highlighted sentence, per method; questions judged; ms per question, per method)."""
    reader_hits = kb.ask_many(questions, 5, best_sentence=False)
    lexical = kb._open_reader().lexical
    right = {m: 0 for m in methods}
    spent = {m: 0.0 for m in methods}
    judged = 0
    vectors = embedder.embed(questions)
    for question, gold, hits, qv in zip(questions, golds, reader_hits, vectors):
        hit = next((h for h in hits if any(g.casefold() in h.text.casefold() for g in gold)), None)
        if hit is None:
            continue
        spans = sentence_spans(hit.text)
        judged += 1
        for m in methods:
            started = time.perf_counter()
            a, b = spans[pick(m, question, hit.text, spans, lexical, pieces, embedder, qv)]
            spent[m] += time.perf_counter() - started
            right[m] += any(g.casefold() in hit.text[a:b].casefold() for g in gold)
    return ({m: round(right[m] / judged, 4) for m in methods}, judged,
            {m: round(1000 * spent[m] / judged, 2) for m in methods})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xquad", default=str(ROOT.parent / "shared" / "data" / "xquad-en"))
    parser.add_argument("--cache", default=str(cache_dir() / "bench"), help="where built indexes are kept")
    parser.add_argument("--method", action="append", help="methods (default: all)")
    args = parser.parse_args()
    methods = args.method or ["model", "terms", "static-mean", "default"]
    print(machine.line())
    from kb.embed.embedding import load_embedder

    embedder = load_embedder(packaged_model())
    pieces = WordPieces.load()

    dataset = load_dataset(args.xquad, "test")
    index_dir, _ = build_index(dataset, Path(args.cache) / "xquad")
    qids = sorted(q for q in dataset.queries if q in dataset.answers)
    scores, judged, ms = run(KnowledgeBase(index_dir), [dataset.queries[q] for q in qids],
                             [dataset.answers[q] for q in qids], methods, pieces, embedder)
    print(json.dumps({"dataset": "xquad", "judged": judged, "answer_in_sentence": scores, "ms_per_question": ms}))

    sys.path.insert(0, str(ROOT))
    from tests.test_search import QUESTIONS

    article_index = Path(args.cache) / "article" / "index"
    kb = KnowledgeBase(article_index)
    kb.index([ROOT / "corpus"])
    scores, judged, ms = run(kb, [q for q, _ in QUESTIONS], [[n] for _, n in QUESTIONS], methods, pieces, embedder)
    print(json.dumps({"dataset": "article", "judged": judged, "answer_in_sentence": scores, "ms_per_question": ms}))


if __name__ == "__main__":
    main()
