"""Ranking and highlighting alternatives, scored offline on every development set at once.

    .venv/bin/python bench/ranking_probe.py [--part scores|selector|latency ...] [--scifact DIR]
        [--xquad DIR] [--docs-work DIR] [--docs-index DIR] [--index DIR]

Reads each index once (question vectors, both retrievers' top candidates, every
candidate's dense cosine, normalised BM25 and best-sentence cosine), then scores
alternatives without asking kb again, so dozens of variants cost seconds:

scores    hybrid-score variants against kb's (0.95 x (0.425 dense + 0.425 BM25 + 0.15
          best sentence) + 0.05 term proximity; the other variants change the score
          before proximity): proximity's share, the sentence share, three-way splits
          keeping BM25 at half, the sentence as a bonus over the passage cosine, dense
          pseudo-relevance feedback (the question vector moved toward its top m
          candidates' vectors), and a file's best passage lifting its others. On
          SciFact **train** (nDCG@10; test is the check), XQuAD (hit@1 by qrels), the
          shipped article (the needle in hit 1, 36 questions) and the development
          documentation (entry hit@1 / hit@5 / MRR@5, bench/docs_questions.jsonl;
          merging of overlapping hits is left out, which changes none of these figures
          for kb's own score).
selector  the best sentence picked by a logistic model over 20 features per sentence
          (the cosines, the word matches, their gaps to the passage's best, the
          neighbours', position, length, answer-type cues: a number for "how many",
          a name for "who", ...), fitted on XQuAD and cross-validated by Wikipedia
          article (6 folds), against kb's 0.45 x cosine + 0.55 x soft word match; the
          fitted model is then read on the article's 35 questions.
latency   warm hybrid ms per question on --index (e.g. bench/scale.py's), with term
          proximity and without, interleaved in one process.

Indexes: SciFact and XQuAD as `kb eval` builds them (--scifact/--xquad; --scifact-cache/
--xquad-cache: the cache folders, default kb's eval cache); the documentation index as
bench/docs_quality.py builds it (--docs-work: its --work folder holding docs/;
--docs-index: the index to read, default DOCS_WORK/index-after). The article is indexed into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from kb import KnowledgeBase  # noqa: E402
from kb.evaluate import build_index, default_cache, load_dataset  # noqa: E402
from kb.query.highlight import WordPieces, _Query  # noqa: E402
from kb.store import sentence_vectors  # noqa: E402
from kb.query.proximity import pairs, proximity  # noqa: E402
from kb.query.search import PROXIMITY_DEPTH  # noqa: E402
from kb.store.lexical import query_terms  # noqa: E402
from kb.store.lexical import terms as passage_terms  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


# -- reading an index once ----------------------------------------------------------------
def candidates(kb: KnowledgeBase, questions: list[str], pool: int) -> list[dict]:
    """Per question: candidate ids and their dense, BM25 share, best-sentence cosine, vectors."""
    reader = kb._open_reader()
    store, vectors, lexical = reader.store, reader.vectors, reader.lexical
    query_vectors = kb._get_embedder().embed(questions)
    rows = []
    for question, qv in zip(questions, query_vectors):
        terms = query_terms(question)
        scores, ids = vectors.search(qv[None, :].astype(np.float32), pool, None)
        found = [int(i) for i in ids[0] if i >= 0] + [i for i, _ in lexical.search(terms, pool, documents=None)]
        found = list(dict.fromkeys(found))
        v = vectors.vectors(found)
        ceiling = lexical.ceiling(terms)
        raw = lexical.score(terms, found)
        stored = store.sentences(found)
        dense = v @ qv
        best = dense.copy()  # a passage without sentence vectors is its own best sentence
        for n, i in enumerate(found):
            if i in stored:
                _, scales, rows_ = sentence_vectors.read(stored[i])
                best[n] = float(((rows_.astype(np.float32) @ qv) * scales).max())
        row = {"ids": found, "dense": dense, "best": best, "vectors": v,
               "lex": np.array([raw.get(i, 0.0) / ceiling if ceiling > 0 else 0.0 for i in found])}
        # Term proximity for the best candidates before it, as kb.query.search scores it.
        row["near"] = np.zeros(len(found))
        if pairs(terms):
            top = np.argsort(-BEFORE_PROXIMITY(row), kind="stable")[:PROXIMITY_DEPTH]
            texts = store.lexical_texts([found[n] for n in top])
            for n in top:
                row["near"][n] = proximity(terms, passage_terms(texts[found[n]]), lexical.idf)
        rows.append(row)
    return rows


def attach_spans(kb: KnowledgeBase, rows: list[dict]) -> None:
    store = kb._open_reader().store
    for row in rows:
        spans = store.spans(row["ids"])
        row["spans"] = [spans[i] for i in row["ids"]]


# -- the development sets -------------------------------------------------------------------
class BeirSet:
    def __init__(self, root: Path, split: str, cache: str | None, pool: int = 300):
        self.dataset = load_dataset(root, split)
        index, _ = build_index(self.dataset, Path(cache) if cache else default_cache(self.dataset))
        kb = KnowledgeBase(index)
        self.qids = sorted(self.dataset.queries)
        self.rows = candidates(kb, [self.dataset.queries[q] for q in self.qids], pool)
        attach_spans(kb, self.rows)

    def ndcg(self, score) -> float:
        from ranx import Qrels, Run, evaluate

        run = {}
        for qid, row in zip(self.qids, self.rows):
            ranking: dict[str, float] = {}
            s = score(row)
            for n in np.argsort(-s, kind="stable"):
                record = row["spans"][n].record
                if record not in ranking:
                    ranking[record] = float(s[n])
                if len(ranking) == 100:
                    break
            run[qid] = ranking
        qrels = Qrels({q: self.dataset.qrels[q] for q in self.qids})
        return float(evaluate(qrels, Run(run), "ndcg@10"))

    def hit1(self, score) -> float:
        return float(np.mean([row["spans"][int(np.argmax(score(row)))].record in self.dataset.qrels[q]
                              for q, row in zip(self.qids, self.rows)]))


class Article:
    def __init__(self):
        from tests.test_search import QUESTIONS

        self.questions = QUESTIONS
        self.folder = tempfile.TemporaryDirectory(prefix="kb-probe-article-")
        self.kb = KnowledgeBase(Path(self.folder.name) / "index")
        self.kb.index([ROOT / "corpus"])
        store = self.kb._open_reader().store
        ids = sorted(store.spans(range(1, 10_000)))
        texts = store.texts(ids)
        self.rows = candidates(self.kb, [q for q, _ in QUESTIONS], len(ids))
        for row, (_, needle) in zip(self.rows, QUESTIONS):
            row["ok"] = np.array([needle in texts[i][0] for i in row["ids"]])

    def hit1(self, score) -> float:
        return float(np.mean([row["ok"][int(np.argmax(score(row)))] for row in self.rows]))


class Docs:
    def __init__(self, work: Path, index: Path):
        import docs_quality

        questions = [json.loads(line) for line in docs_quality.QUESTIONS.read_text().splitlines() if line.strip()]
        gold = [[(q["file"], *lines) for e in q["entries"] for lines in docs_quality.entry_lines(work / "docs" / q["file"], e)]
                for q in questions]
        kb = KnowledgeBase(index)
        self.rows = candidates(kb, [q["question"] for q in questions], 100)
        attach_spans(kb, self.rows)
        store = kb._open_reader().store
        documents = store.documents_by_id({s.document_id for row in self.rows for s in row["spans"]})
        for row, entries in zip(self.rows, gold):
            hits = [{"source": documents[s.document_id].source, "line_start": s.line_start, "line_end": s.line_end}
                    for s in row["spans"]]
            row["ok"] = np.array([any(docs_quality._inside(h, e) for e in entries) for h in hits])
            row["document"] = np.array([s.document_id for s in row["spans"]])

    def entry(self, score) -> tuple[float, float, float]:
        ranks = []
        for row in self.rows:
            order = np.argsort(-score(row), kind="stable")[:5]
            ranks.append(next((r for r, n in enumerate(order, 1) if row["ok"][n]), None))
        n = len(ranks)
        return (sum(r == 1 for r in ranks) / n, sum(r is not None for r in ranks) / n,
                sum(1 / r for r in ranks if r) / n)


# -- the variants -------------------------------------------------------------------------
def split(dense: float, sentence: float, lexical: float):
    return lambda r: dense * r["dense"] + sentence * r["best"] + lexical * r["lex"]


BEFORE_PROXIMITY = split(0.425, 0.15, 0.425)


def with_proximity(share: float, base=BEFORE_PROXIMITY):
    """(1 - share) x the score + share x term proximity (kb.query.proximity)."""
    return lambda r: (1 - share) * base(r) + share * r["near"]


KB = with_proximity(0.05)


def bonus(share: float):
    """Half dense, half BM25, plus the best sentence only where it beats the passage."""
    return lambda r: 0.5 * r["dense"] + 0.5 * r["lex"] + share * np.maximum(r["best"] - r["dense"], 0)


def feedback(beta: float, m: int):
    """Dense pseudo-relevance feedback: cosine with the question moved toward its top m."""
    def score(r):
        top = np.argsort(-BEFORE_PROXIMITY(r))[:m]
        centre = r["vectors"][top].mean(axis=0)
        moved = (r["dense"] + beta * (r["vectors"] @ centre)) / (1 + beta)
        return 0.425 * moved + 0.15 * r["best"] + 0.425 * r["lex"]
    return score


def file_lift(share: float):
    """A passage gains share x the best score among its file's candidates (documents only)."""
    def score(r):
        s = BEFORE_PROXIMITY(r)
        if "document" not in r:
            return s
        best = {d: s[r["document"] == d].max() for d in set(r["document"].tolist())}
        return s + share * np.array([best[d] for d in r["document"].tolist()])
    return score


VARIANTS = [
    ("kb: 0.95 x (0.425 dense + 0.15 sentence + 0.425 BM25) + 0.05 proximity", KB),
    ("before proximity: 0.425 dense + 0.15 sentence + 0.425 BM25", BEFORE_PROXIMITY),
    ("proximity 0.1", with_proximity(0.1)),
    ("no sentence: 0.5 dense + 0.5 BM25", split(0.5, 0.0, 0.5)),
    ("sentence share 0.25 (of 0.85/0.15 form)", split(0.375, 0.25, 0.375)),
    ("BM25 half: 0.35 dense + 0.15 sentence", split(0.35, 0.15, 0.5)),
    ("BM25 half: 0.2 dense + 0.3 sentence", split(0.2, 0.3, 0.5)),
    ("dense 0.6 of fused", split(0.51, 0.15, 0.34)),
    ("dense 0.4 of fused", split(0.34, 0.15, 0.51)),
    ("sentence as bonus over passage, 0.3", bonus(0.3)),
    ("dense feedback, beta 0.25, top 3", feedback(0.25, 3)),
    ("dense feedback, beta 0.5, top 5", feedback(0.5, 5)),
    ("file's best lifts its passages, 0.1", file_lift(0.1)),
]


def part_scores(args) -> None:
    scifact = BeirSet(Path(args.scifact), "train", args.scifact_cache)
    xquad = BeirSet(Path(args.xquad), "test", args.xquad_cache)
    article = Article()
    docs = Docs(Path(args.docs_work), Path(args.docs_index or Path(args.docs_work) / "index-after")) \
        if args.docs_work else None
    print("| variant | SciFact train nDCG@10 | XQuAD hit@1 | article hit@1 | docs entry hit@1 / hit@5 / MRR@5 |")
    print("|---|---|---|---|---|")
    for name, score in VARIANTS:
        entry = " / ".join(f"{x:.3f}" for x in docs.entry(score)) if docs else "-"
        print(f"| {name} | {scifact.ndcg(score):.4f} | {xquad.hit1(score):.4f} | {article.hit1(score):.3f} | {entry} |",
              flush=True)


# -- a learned sentence picker ------------------------------------------------------------
_WORD = re.compile(r"\w+")
_STOP = set("a an the of in on at to for by with from and or is are was were be been did do does what which who "
            "whom whose when where why how many much that this it its as into than".split())
_NUMBER_QUESTION = re.compile(r"\b(how (many|much|long|old|far|large|big|often|high|fast)|what (year|percentage|percent|"
                              r"number|amount|age|date))\b", re.I)
_DATE = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|december|"
                   r"\d{3,4}s?|century)\b", re.I)
FEATURES = ("cosine soft terms shared cosine-gap soft-gap terms-gap previous-cosine next-cosine previous-soft "
            "next-soft previous-terms first length number-question-with-digit number-question-without "
            "when-with-date who-with-name novel-words names").split()


def sentence_features(c: dict) -> np.ndarray:
    question, text, n = c["question"], c["text"], len(c["spans"])
    asked = {w.lower() for w in _WORD.findall(question)}
    cos, soft, terms = c["cos"], c["soft"], c["terms"]
    shared = c["shared"] / max(1, c["shared"].max())
    number = bool(_NUMBER_QUESTION.search(question))
    when = bool(re.search(r"\bwhen\b|what (year|century|decade)", question, re.I))
    who = bool(re.search(r"\bwhom?\b", question, re.I))
    out = []
    for i, (a, b) in enumerate(c["spans"]):
        s = text[a:b]
        words = _WORD.findall(s)
        content = [w.lower() for w in words if w.lower() not in _STOP]
        names = [w for w in words[1:] if w[0].isupper() and w.lower() not in asked]
        digit = bool(re.search(r"\d", s))
        out.append([cos[i], soft[i], terms[i], shared[i], cos[i] - cos.max(), soft[i] - soft.max(),
                    terms[i] - terms.max(), cos[i - 1] if i else 0, cos[i + 1] if i + 1 < n else 0,
                    soft[i - 1] if i else 0, soft[i + 1] if i + 1 < n else 0, terms[i - 1] if i else 0,
                    i == 0, np.log1p(len(s)) / 6, number and digit, number and not digit,
                    when and bool(_DATE.search(s) or digit), who and bool(names),
                    np.mean([w not in asked for w in content]) if content else 0, len(names) / (1 + len(words))])
    return np.array(out, dtype=float)


def fit(data, l2: float = 1e-3) -> np.ndarray:
    """Conditional logit: softmax over a passage's sentences, the answering ones as targets."""
    from scipy.optimize import minimize

    def loss(w):
        total, grad = 0.0, np.zeros_like(w)
        for x, y in data:
            z = x @ w
            p = np.exp(z - z.max())
            p /= p.sum()
            q = p * y
            total -= np.log(q.sum() + 1e-12)
            grad -= x.T @ (q / (q.sum() + 1e-12) - p)
        return total / len(data) + l2 * w @ w, grad / len(data) + 2 * l2 * w

    return minimize(loss, np.zeros(data[0][0].shape[1]), jac=True, method="L-BFGS-B").x


def picked(values: np.ndarray, shared: np.ndarray) -> int:
    return max(range(len(values)), key=lambda i: (round(float(values[i]), 9), shared[i], -i))


def gold_passage_sentences(kb: KnowledgeBase, questions, golds, groups) -> list[dict]:
    """For each question: kb's first top-5 hit holding an answer, its sentences and their
    cosines (as kb stored them), word matches and which sentences hold the answer."""
    import kb.query.search as search

    seen = {}
    real = search.best_sentences

    def spy(qs, hits, lexical, evidence=None):
        seen["last"] = (hits, evidence, lexical)
        return real(qs, hits, lexical, evidence)

    search.best_sentences = spy
    pieces, out = WordPieces.load(), []
    try:
        for at in range(0, len(questions), 64):
            kb.ask_many(questions[at:at + 64], 5)
            hits, evidence, lexical = seen["last"]
            for n, (row, found) in enumerate(zip(hits, evidence)):
                question, gold, group = questions[at + n], golds[at + n], groups[at + n]
                k = next((k for k, h in enumerate(row) if any(g.casefold() in h.text.casefold() for g in gold)), None)
                if k is None or found[k] is None:
                    continue
                text, spans = row[k].text, [tuple(s) for s in found[k].spans.tolist()]
                words = _Query(question, pieces, lexical.idf).scores([text], [spans])[0]
                out.append({"question": question, "text": text, "spans": spans, "group": group,
                            "cos": np.asarray(found[k].cosines), "terms": np.array([w[0] for w in words]),
                            "soft": np.array([w[1] for w in words]), "shared": np.array([w[2] for w in words]),
                            "ok": np.array([any(g.casefold() in text[a:b].casefold() for g in gold)
                                            for a, b in spans], dtype=float)})
    finally:
        search.best_sentences = real
    return out


def part_selector(args) -> None:
    dataset = load_dataset(Path(args.xquad), "test")
    index, _ = build_index(dataset, Path(args.xquad_cache) if args.xquad_cache else default_cache(dataset))
    qids = sorted(q for q in dataset.queries if q in dataset.answers)
    xquad = gold_passage_sentences(KnowledgeBase(index), [dataset.queries[q] for q in qids],
                                   [dataset.answers[q] for q in qids],
                                   [next(iter(dataset.qrels[q])).split("#")[0] for q in qids])
    article = Article()
    from tests.test_search import QUESTIONS

    art = gold_passage_sentences(article.kb, [q for q, _ in QUESTIONS], [[needle] for _, needle in QUESTIONS],
                                 ["article"] * len(QUESTIONS))
    data = [(sentence_features(c), c["ok"]) for c in xquad]
    kb_pick = lambda c: picked(0.45 * c["cos"] + 0.55 * c["soft"], c["shared"])  # noqa: E731
    print(f"XQuAD passages of several sentences holding an answer: {len(xquad)}; article: {len(art)}")
    print(f"kb (0.45 cosine + 0.55 soft word match): XQuAD {np.mean([c['ok'][kb_pick(c)] for c in xquad]):.4f}, "
          f"article {np.mean([c['ok'][kb_pick(c)] for c in art]):.4f}")
    groups = sorted({c["group"] for c in xquad})
    for label, mask in (("3 features (cosine, soft, terms)", np.r_[np.ones(3), np.zeros(len(FEATURES) - 3)]),
                        ("all 20 features", np.ones(len(FEATURES)))):
        right = 0
        for fold in range(6):
            held = set(groups[fold::6])
            w = fit([(x * mask, y) for (x, y), c in zip(data, xquad) if c["group"] not in held]) * mask
            right += sum(y[picked(x @ w, c["shared"])] for (x, y), c in zip(data, xquad) if c["group"] in held)
        w = fit([(x * mask, y) for x, y in data]) * mask
        on_article = np.mean([c["ok"][picked(sentence_features(c) @ w, c["shared"])] for c in art])
        print(f"learned, {label}: XQuAD cross-validated by article {right / len(xquad):.4f}; "
              f"fitted on all of XQuAD, on the article {on_article:.4f}")


def part_latency(args) -> None:
    """Warm hybrid ms per question (p50, p95) with term proximity and without (weight 0),
    interleaved question by question in one process, who goes first alternating."""
    import statistics
    import time

    from scale import QUESTIONS

    if not args.index:
        raise SystemExit("--part latency needs --index (e.g. a bench/scale.py index)")
    kb = KnowledgeBase(args.index)
    kb.ask(QUESTIONS[0], k=5)
    times: dict[float, list[float]] = {0.05: [], 0.0: []}
    for repeat in range(args.repeats):
        for n, question in enumerate(QUESTIONS):
            for weight in (list(times) if (n + repeat) % 2 else list(times)[::-1]):
                started = time.perf_counter()
                kb.ask(question, k=5, proximity_weight=weight)
                times[weight].append(1000 * (time.perf_counter() - started))
    print(f"{kb.info()['passages']} passages, {len(QUESTIONS)} questions x {args.repeats}")
    for weight, t in times.items():
        print(f"proximity weight {weight}: warm hybrid ms p50 {statistics.median(t):.2f}, "
              f"p95 {sorted(t)[int(0.95 * len(t))]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=["scores", "selector", "latency"])
    parser.add_argument("--scifact", default=str(SHARED / "scifact"))
    parser.add_argument("--xquad", default=str(SHARED / "xquad-en"))
    parser.add_argument("--scifact-cache", help="kb eval's cache folder for SciFact (default: kb's eval cache)")
    parser.add_argument("--xquad-cache", help="kb eval's cache folder for XQuAD (default: kb's eval cache)")
    parser.add_argument("--docs-work", help="bench/docs_quality.py's --work folder (holds docs/)")
    parser.add_argument("--docs-index", help="the documentation index to read (default: DOCS_WORK/index-after)")
    parser.add_argument("--index", help="--part latency: the index to time (e.g. bench/scale.py's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine.line(), flush=True)
    for part in args.part or ["scores", "selector"]:
        {"scores": part_scores, "selector": part_selector, "latency": part_latency}[part](args)


if __name__ == "__main__":
    main()
