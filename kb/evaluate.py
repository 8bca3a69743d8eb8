"""`kb eval`: measure retrieval quality on a BEIR-layout dataset, per mode.

A dataset folder holds `corpus.jsonl` (or `.jsonl.gz`) with `_id,title,text`,
`queries.jsonl`, `qrels/<split>.tsv` and optionally `answers.jsonl` (gold answer
strings). Each corpus record is one document; its score is its best passage's.
Metrics come from ranx (a maintained library) so nobody has to trust a hand-written
nDCG. The built index is cached (next to the data, or in a given folder), so only the
first run embeds anything.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import BadInput

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DEPTH = 100  # documents ranked per query: enough for Recall@100


@dataclass
class Dataset:
    """A BEIR folder, read: judged queries of one split, their qrels and gold answers."""

    root: Path
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    answers: dict[str, list[str]] = field(default_factory=dict)


def load_dataset(root: str | os.PathLike, split: str = "test") -> Dataset:
    """Read the queries judged in `split`; raises BadInput naming what is missing."""
    root = Path(root)
    corpus = next((root / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (root / n).is_file()), None)
    if corpus is None:
        raise BadInput(f"{root} has no corpus.jsonl or corpus.jsonl.gz (BEIR layout expected)")
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise BadInput(f"{root} has no qrels/{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 3 or (number == 1 and not parts[2].strip().lstrip("-").isdigit()):
            continue  # header or blank
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    for record in _jsonl(root / "queries.jsonl"):
        qid = str(record.get("_id"))
        if qid in qrels and record.get("text", "").strip():
            queries[qid] = record["text"]
    qrels = {q: {d: s for d, s in docs.items() if s > 0} for q, docs in qrels.items() if q in queries}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    queries = {q: t for q, t in queries.items() if q in qrels}
    if not queries:
        raise BadInput(f"no judged queries for split {split!r} in {root}")
    answers = {}
    if (root / "answers.jsonl").is_file():
        answers = {str(r["_id"]): [a for a in r.get("answers", []) if a] for r in _jsonl(root / "answers.jsonl")}
        answers = {q: a for q, a in answers.items() if q in queries and a}
    return Dataset(root, corpus, queries, qrels, answers)


def default_cache(dataset: Dataset) -> Path:
    """`.kb-eval/` next to the data when writable, else under kb's user cache."""
    beside = dataset.root / ".kb-eval"
    if os.access(dataset.root, os.W_OK) or beside.is_dir():
        return beside
    from .embed.model import cache_dir

    return cache_dir() / "eval" / dataset.root.resolve().as_posix().strip("/").replace("/", "__")


def build_index(dataset: Dataset, cache: Path, *, progress=None, vector_index: str | None = None,
                variant: str = "fp32", embedder=None):
    """Index the corpus (each record one document) into cache/index: (index dir, report).

    Re-runs find the corpus unchanged and embed nothing. Another model variant gets an
    index of its own (cache/index-int8), so switching back and forth re-embeds nothing."""
    from .knowledge_base import KnowledgeBase

    cache.mkdir(parents=True, exist_ok=True)
    corpus = dataset.corpus
    if corpus.suffix == ".gz":  # kb reads .jsonl: decompress once, beside the index
        plain = cache / "corpus.jsonl"
        if not plain.exists() or plain.stat().st_mtime_ns < corpus.stat().st_mtime_ns:
            tmp = plain.with_suffix(".tmp")
            with gzip.open(corpus, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, plain)
        corpus = plain
    index_dir = cache / ("index" if variant == "fp32" else f"index-{variant}")
    report = KnowledgeBase(index_dir, embedder=embedder).index([corpus], progress=progress,
                                                              vector_index=vector_index, variant=variant)
    return index_dir, report


# Mode name -> KnowledgeBase.ask_many options. The last two exist to compare fusions.
MODES: dict[str, dict] = {
    "dense": {"mode": "dense"},
    "lexical": {"mode": "lexical"},
    "hybrid": {"mode": "hybrid"},
    "hybrid-rrf": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid-minmax": {"mode": "hybrid", "fusion": "minmax"},
}


def evaluate(
    dataset_dir: str | os.PathLike,
    *,
    split: str = "test",
    modes: Sequence[str] = ("dense", "lexical", "hybrid"),
    cache: str | os.PathLike | None = None,
    progress=None,
    batch: int = 64,
    vector_index: str | None = None,
    variant: str = "fp32",
    embedder=None,
    **tuning,
) -> dict:
    """Index the dataset (once), ask every judged query in each mode, and score the runs.

    Returns {"dataset", "split", "queries", "index", "passages", "passages_embedded",
    "modes": {mode: {metric: value}}}:
    nDCG@10, Recall@10/100, MRR@10 and hit@1/5 by qrels (a relevant document first /
    in the top 5); with answers.jsonl also answer_hit@1/5 (a returned passage contains
    a gold answer string, case-insensitive); and queries_per_second.
    variant: the model variant to index and ask with ("fp32" or "int8", kb.embed.model.VARIANTS).
    embedder: an Embedder to use instead of the variant's own (benchmarks of other
    embedders); give it a cache of its own, as the index records the variant's name.
    """
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    from .knowledge_base import KnowledgeBase

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise BadInput(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    dataset = load_dataset(dataset_dir, split)
    cache = Path(cache) if cache else default_cache(dataset)
    index_dir, report = build_index(dataset, cache, progress=progress, vector_index=vector_index,
                                    variant=variant, embedder=embedder)
    kb = KnowledgeBase(index_dir, embedder=embedder)
    qids = sorted(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    qrels = Qrels({q: dataset.qrels[q] for q in qids})
    result = {"dataset": str(dataset.root), "split": split, "queries": len(qids), "index": str(kb.index_dir),
              "model": kb.info()["model"], "vector_index": kb.info()["vector_index"],
              "passages": report.passages,
              "passages_embedded": report.passages_embedded, "modes": {}}
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        answer_hits = {1: 0, 5: 0}
        started = time.perf_counter()
        for at in range(0, len(qids), batch):
            # Passages deep enough for 100 distinct documents; a document's score is its best passage's.
            rows = kb.ask_many(texts[at : at + batch], 3 * DEPTH, pool=3 * DEPTH, best_sentence=False,
                               **{**MODES[mode], **tuning})
            for qid, hits in zip(qids[at : at + batch], rows):
                ranking: dict[str, float] = {}
                for h in hits:
                    if h.record is not None and h.record not in ranking and len(ranking) < DEPTH:
                        ranking[h.record] = h.score
                run[qid] = ranking or {"": 0.0}
                gold = [a.casefold() for a in dataset.answers.get(qid, [])]
                for cut in answer_hits:
                    if gold and any(a in h.text.casefold() for h in hits[:cut] for a in gold):
                        answer_hits[cut] += 1
        seconds = time.perf_counter() - started
        scores = ranx_evaluate(qrels, Run(run), [*METRICS, "hit_rate@1", "hit_rate@5"])
        row = {name: round(float(scores[name]), 4) for name in METRICS}
        row["hit@1"] = round(float(scores["hit_rate@1"]), 4)
        row["hit@5"] = round(float(scores["hit_rate@5"]), 4)
        if dataset.answers:
            judged = sum(1 for q in qids if q in dataset.answers)
            row["answer_hit@1"] = round(answer_hits[1] / judged, 4)
            row["answer_hit@5"] = round(answer_hits[5] / judged, 4)
        row["queries_per_second"] = round(len(qids) / seconds, 1)
        result["modes"][mode] = row
    return result


def _jsonl(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise BadInput(f"{path} is not valid JSON Lines") from None
