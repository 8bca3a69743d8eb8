"""Sentence vectors: which kind, how to use them, and what they cost.

    .venv/bin/python bench/sentences.py [--xquad DIR] [--cache DIR] [--part methods|kb|cost ...]

methods  Given the passage that holds the answer (the first of kb's top 5 that does, as
         bench/highlight.py), how often each way of picking a sentence picks one holding
         it, on XQuAD and on the shipped article's 35 paraphrased questions:
           words    kb.query.highlight's words-only score (term evidence + word-piece match)
           pooled   cosine of the question with the sentence's vector pooled from the
                    passage's own token vectors (one run per passage: what kb stores)
           alone    cosine with the sentence embedded on its own (one run per sentence)
           X+words  w x cosine + (1 - w) x words, for w in 0.3, 0.45, 0.6
           X+soft   w x cosine + (1 - w) x soft word match (no term evidence): kb's choice
kb       kb end to end on indexes with stored sentence vectors, per highlight weight
         (kb.query.highlight.MODEL_WEIGHT) and ranking weight (SearchOptions.sentence_weight):
         XQuAD hit@1 by qrels and answer in the highlighted sentence (first gold hit of the
         top 5); the article's hit@1 (the needle in hit 1) and answer in the highlighted
         sentence, and the article questions the words-only highlight missed and this one gets.
latency  Warm hybrid ms per question on --index, with and without reading sentence vectors.
cost     Model throughput, passages/s, round-robin over repeats in one run: embed(passages);
         embed_with_sentences (the pooled vectors kb stores); embed + each sentence alone.
         And the index's size on disk with and without sentence vectors, same passages.

XQuAD: https://github.com/google-deepmind/xquad (English, BEIR layout, see
bench/xquad_to_beir.py); default path ../shared/data/xquad-en.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from kb import KnowledgeBase  # noqa: E402
from kb.embed.embedding import load_embedder  # noqa: E402
from kb.embed.model import cache_dir, packaged_model  # noqa: E402
from kb.evaluate import build_index, load_dataset  # noqa: E402
from kb.ingest.chunking import sentence_spans  # noqa: E402
from kb.query import highlight  # noqa: E402
from kb.query.highlight import WordPieces, _Query  # noqa: E402


def contains(text: str, golds) -> bool:
    return any(g.casefold() in text.casefold() for g in golds)


def first_gold_hits(kb, questions, golds):
    """(question, golds, hit) for each question whose top 5 holds an answer, words-only highlight off."""
    rows = kb.ask_many(questions, 5, best_sentence=False)
    return [(q, g, next(h for h in hits if contains(h.text, g)))
            for q, g, hits in zip(questions, golds, rows) if any(contains(h.text, g) for h in hits)]


def methods(kb, cases, embedder, pieces) -> dict:
    lexical = kb._open_reader().lexical
    questions = embedder.embed([q for q, _, _ in cases])
    spans = [sentence_spans(h.text) for _, _, h in cases]
    texts = [f"{h.context}\n{h.text}" if h.context else h.text for _, _, h in cases]
    shifts = [len(h.context) + 1 if h.context else 0 for _, _, h in cases]
    _, pooled = embedder.embed_with_sentences(texts, [[(a + d, b + d) for a, b in s] for s, d in zip(spans, shifts)])
    flat = embedder.embed([h.text[a:b] for (_, _, h), s in zip(cases, spans) for a, b in s])
    alone, at = [], 0
    for s in spans:
        alone.append(flat[at : at + len(s)])
        at += len(s)
    words = [_Query(q, pieces, lexical.idf).scores([h.text], [s])[0] for (q, _, h), s in zip(cases, spans)]
    cosines = {"pooled": [p @ v for p, v in zip(pooled, questions)], "alone": [a @ v for a, v in zip(alone, questions)]}

    def share(values) -> float:
        right = 0
        for (_, golds, h), s, row in zip(cases, spans, values):
            i = max(range(len(s)), key=lambda i: (row[i], -i))
            right += contains(h.text[s[i][0] : s[i][1]], golds)
        return round(right / len(cases), 4)

    W = highlight.WEIGHT
    out = {"words": share([[(W * soft + (1 - W) * term, shared) for term, soft, shared in row] for row in words])}
    for name, cos in cosines.items():
        out[name] = share([list(c) for c in cos])
        for w in (0.3, 0.45, 0.6):
            out[f"{name}{w}+words"] = share([[(w * c + (1 - w) * (W * soft + (1 - W) * term), shared)
                                              for c, (term, soft, shared) in zip(cs, ws)] for cs, ws in zip(cos, words)])
            out[f"{name}{w}+soft"] = share([[(w * c + (1 - w) * soft, shared) for c, (_, soft, shared) in zip(cs, ws)]
                                            for cs, ws in zip(cos, words)])
    return {"judged": len(cases), "answer_in_sentence": out}


def end_to_end(kb, questions, golds, relevant, weights, sentence_weights) -> list[dict]:
    rows = []
    for sw in sentence_weights:
        for w in weights:
            highlight.MODEL_WEIGHT = w
            hits = kb.ask_many(questions, 5, sentence_weight=sw)
            judged = right = first = 0
            for g, rel, row in zip(golds, relevant, hits):
                first += bool(row) and rel(row[0])
                h = next((h for h in row if contains(h.text, g)), None)
                if h is not None:
                    judged += 1
                    right += contains(h.sentence, g)
            rows.append({"sentence_weight": sw, "highlight_model_weight": w, "hit@1": round(first / len(questions), 4),
                         "answer_in_sentence": round(right / max(judged, 1), 4), "right": right, "judged": judged})
    return rows


def score_scale(kb, answerable, off_topic) -> dict:
    """5th percentile / median / 95th of the best hit's score: answerable questions, and
    questions from another corpus (SciFact claims asked of XQuAD's Wikipedia paragraphs)."""
    out = {}
    for name, questions in (("answerable", answerable), ("off-topic", off_topic)):
        hits = [row[0] for row in kb.ask_many(questions, 1, best_sentence=False) if row]
        for part in ("score", "fused"):
            values = [getattr(h, part) for h in hits]
            out[f"{name} {part}"] = [round(float(np.percentile(values, p)), 3) for p in (5, 50, 95)]
    return out


def article_flips(kb, questions, needles) -> list[str]:
    """Article questions the words-only highlight got wrong and the default gets right."""
    before = kb.ask_many(questions, 5, best_sentence=False)
    highlight_words = highlight.best_sentences(questions, before, kb._open_reader().lexical)
    now = kb.ask_many(questions, 5)
    flips = []
    for q, n, old, new in zip(questions, needles, highlight_words, now):
        a = next((h for h in old if n in h.text), None)
        b = next((h for h in new if n in h.text), None)
        if a and b and n not in a.sentence and n in b.sentence:
            flips.append(q)
    return flips


class WordsOnly:
    """The real embedder without embed_with_sentences: an index with no sentence vectors."""

    def __init__(self, inner):
        self.inner, self.model, self.dimension = inner, inner.model, inner.dimension

    def embed(self, texts, *, progress=None):
        return self.inner.embed(texts, progress=progress)


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cost(dataset, cache: Path, embedder, repeats: int, count: int) -> dict:
    from kb.ingest.prepare import embed_passages
    from kb.ingest.passages import Passage

    index_dir, _ = build_index(dataset, cache / "xquad")
    kb = KnowledgeBase(index_dir)
    store = kb._open_reader().store
    rows = store.conn.execute("SELECT text, context FROM passages ORDER BY id LIMIT ?", (count,)).fetchall()
    passages = [Passage(t, c, 0, len(t), 1, 1) for t, c in rows]
    texts = [p.embedding_text for p in passages]
    sentences = [p.text[a:b] for p in passages for a, b in sentence_spans(p.text)]
    runs = {"embed": lambda: embedder.embed(texts),
            "embed_with_sentences (pooled)": lambda: embed_passages(embedder, passages),
            "embed + each sentence alone": lambda: (embedder.embed(texts), embedder.embed(sentences))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    embedder.embed(texts[:64])
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    rates = {name: round(len(texts) / statistics.median(t), 1) for name, t in times.items()}
    plain = cache / "xquad-no-sentences"
    if not plain.exists():
        plain.mkdir(parents=True)
    plain_index, _ = build_index(dataset, plain, embedder=WordsOnly(embedder))
    return {"passages": len(texts), "sentences": len(sentences), "passages_per_second": rates,
            "index_bytes": {"with sentence vectors": size(index_dir), "without": size(plain_index)}}


def latency(index_dir: Path, questions: list[str], repeats: int) -> dict:
    """Warm ms per question (p50, p95), hybrid with highlight: with the stored sentence
    vectors, and with them ignored (the words-only highlight and no sentence reads: what
    kb did before), the two interleaved question by question in one process."""
    from kb.query import search

    kb = KnowledgeBase(index_dir)
    kb.ask(questions[0], k=5)
    store = kb._open_reader().store
    real = search._sentence_cosines

    def without(store, ids, query_vectors):
        return [{} for _ in ids]

    times: dict[str, list[float]] = {"with sentence vectors": [], "without": []}
    for repeat in range(repeats):
        for n, q in enumerate(questions):
            # Each question is asked both ways in turn, who goes first alternating: the
            # second ask of a question finds its pages and word pieces cached.
            for name in (list(times) if (n + repeat) % 2 else list(times)[::-1]):
                search._sentence_cosines = real if name.startswith("with ") else without
                store.has_sentences = name.startswith("with ")
                started = time.perf_counter()
                kb.ask(q, k=5)
                times[name].append(1000 * (time.perf_counter() - started))
    search._sentence_cosines, store.has_sentences = real, True
    passages = kb.info()["passages"]
    return {"passages": passages, **{name: [round(statistics.median(t), 2), round(sorted(t)[int(0.95 * len(t))], 2)]
                                     for name, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xquad", default=str(ROOT.parent / "shared" / "data" / "xquad-en"))
    parser.add_argument("--scifact", default=str(ROOT.parent / "shared" / "data" / "scifact"),
                        help="its test questions are the off-topic ones asked of XQuAD (kb part)")
    parser.add_argument("--cache", default=str(cache_dir() / "bench-sentences"), help="where built indexes are kept")
    parser.add_argument("--part", action="append", choices=["methods", "kb", "cost", "latency"])
    parser.add_argument("--index", help="latency part: an index to ask (e.g. one bench/scale.py built)")
    parser.add_argument("--weights", default="0.3,0.45,0.6,1", help="highlight model weights (kb part)")
    parser.add_argument("--sentence-weights", default="0,0.25", help="ranking weights (kb part)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", type=int, default=600, help="passages timed (cost part)")
    args = parser.parse_args()
    parts = args.part or ["methods", "kb", "cost"]
    print(machine.line(), flush=True)
    if "latency" in parts:
        from scale import QUESTIONS as SCALE_QUESTIONS

        print(json.dumps({"part": "latency", **latency(Path(args.index), SCALE_QUESTIONS, args.repeats)}), flush=True)
        parts.remove("latency")
        if not parts:
            return
    cache = Path(args.cache)
    embedder = load_embedder(packaged_model(), for_indexing=True)
    pieces = WordPieces.load()
    from tests.test_search import QUESTIONS

    dataset = load_dataset(args.xquad, "test")
    index_dir, _ = build_index(dataset, cache / "xquad")
    xquad = KnowledgeBase(index_dir)
    qids = sorted(q for q in dataset.queries if q in dataset.answers)
    questions, golds = [dataset.queries[q] for q in qids], [dataset.answers[q] for q in qids]
    relevant = [lambda h, rel=dataset.qrels.get(q, {}): rel.get(h.record, 0) > 0 for q in qids]
    article_index = cache / "article" / "index"
    article = KnowledgeBase(article_index)
    article.index([ROOT / "corpus"])
    a_questions, a_needles = [q for q, _ in QUESTIONS], [n for _, n in QUESTIONS]

    if "methods" in parts:
        for name, kb, qs, gs in (("xquad", xquad, questions, golds),
                                 ("article", article, a_questions, [[n] for n in a_needles])):
            result = methods(kb, first_gold_hits(kb, qs, gs), embedder, pieces)
            print(json.dumps({"part": "methods", "dataset": name, **result}), flush=True)
    if "kb" in parts:
        weights = [float(x) for x in args.weights.split(",")]
        sentence_weights = [float(x) for x in args.sentence_weights.split(",")]
        default = highlight.MODEL_WEIGHT
        for row in end_to_end(xquad, questions, golds, relevant, weights, sentence_weights):
            print(json.dumps({"part": "kb", "dataset": "xquad", **row}), flush=True)
        for row in end_to_end(article, a_questions, [[n] for n in a_needles],
                              [lambda h, n=n: n in h.text for n in a_needles], weights, sentence_weights):
            print(json.dumps({"part": "kb", "dataset": "article", **row}), flush=True)
        highlight.MODEL_WEIGHT = default
        scifact = load_dataset(args.scifact, "test")
        off_topic = [scifact.queries[q] for q in sorted(scifact.queries)]
        print(json.dumps({"part": "kb", "dataset": "xquad", "score_scale": score_scale(xquad, questions, off_topic)}))
        print(json.dumps({"part": "kb", "dataset": "article", "now_right": article_flips(article, a_questions, a_needles)}))
    if "cost" in parts:
        print(json.dumps({"part": "cost", **cost(dataset, cache, embedder, args.repeats, args.count)}), flush=True)


if __name__ == "__main__":
    main()
