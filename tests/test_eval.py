"""`kb eval` on a tiny BEIR fixture, and JSONL records as documents."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import BadInput
from kb.evaluate import evaluate, load_dataset

TINY = Path(__file__).parent / "fixtures" / "beir-tiny"


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory, embedder):
    cache = tmp_path_factory.mktemp("eval-cache")
    return evaluate(TINY, cache=cache, modes=["dense", "lexical", "hybrid"]), cache


def test_dataset_reads_only_judged_queries():
    ds = load_dataset(TINY, "test")
    assert sorted(ds.queries) == ["q1", "q2", "q3", "q4", "q5", "q7"]  # q6 has no qrels
    assert ds.qrels["q5"] == {"d6": 1}
    assert ds.answers["q1"] == ["white vinegar"]
    with pytest.raises(BadInput, match="qrels/train.tsv"):
        load_dataset(TINY, "train")


def test_eval_reports_every_metric_per_mode(tiny_result):
    result, _ = tiny_result
    assert result["queries"] == 6
    assert set(result["modes"]) == {"dense", "lexical", "hybrid"}
    for row in result["modes"].values():
        for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1", "hit@5",
                       "answer_hit@1", "answer_hit@5", "queries_per_second"):
            assert metric in row
        assert all(0.0 <= row[m] <= 1.0 for m in row if m != "queries_per_second")
    # q7's judged record (sourdough) is not the best answer to its question (bread storage),
    # so no mode is perfect: the hand-scored test below then checks real ranks.
    assert all(row["mrr@10"] < 1.0 for row in result["modes"].values())
    # Each question has one relevant record, and the corpus is small: hybrid finds all in the top 10.
    assert result["modes"]["hybrid"]["recall@10"] == 1.0
    assert result["modes"]["hybrid"]["answer_hit@5"] == 1.0


def test_metrics_match_a_run_scored_by_hand(tiny_result):
    # Rebuild the hybrid run through the public API and score nDCG@10 / MRR@10 by hand
    # (one relevant document per query: nDCG = 1/log2(rank+1), MRR = 1/rank).
    import math

    result, cache = tiny_result
    ds = load_dataset(TINY)
    kb = KnowledgeBase(cache / "index")
    ndcg = mrr = 0.0
    for qid, text in ds.queries.items():
        records = list(dict.fromkeys(h.record for h in kb.ask(text, k=30, best_sentence=False)))[:10]
        (gold,) = ds.qrels[qid]
        if gold in records:
            rank = records.index(gold) + 1
            ndcg += 1 / math.log2(rank + 1)
            mrr += 1 / rank
    assert result["modes"]["hybrid"]["ndcg@10"] == pytest.approx(ndcg / len(ds.queries), abs=1e-4)
    assert result["modes"]["hybrid"]["mrr@10"] == pytest.approx(mrr / len(ds.queries), abs=1e-4)


def test_eval_reuses_its_cached_index(tiny_result):
    result, cache = tiny_result
    assert result["passages_embedded"] == result["passages"] == 8
    again = evaluate(TINY, cache=cache, modes=["lexical"])
    assert again["passages_embedded"] == 0
    assert again["modes"]["lexical"] == {**result["modes"]["lexical"],
                                         "queries_per_second": again["modes"]["lexical"]["queries_per_second"]}


def test_eval_reads_gzipped_corpus_and_cli_json(tmp_path, embedder):
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    with open(data / "corpus.jsonl", "rb") as src, gzip.open(data / "corpus.jsonl.gz", "wb") as dst:
        dst.write(src.read())
    (data / "corpus.jsonl").unlink()
    result = CliRunner().invoke(cli, ["eval", str(data), "--mode", "lexical", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # BM25 finds the five records that share words with their questions; q7's judged
    # record shares none with it (keep/loaf/fresh vs kept/flour/warm).
    assert out["modes"]["lexical"]["recall@10"] == pytest.approx(5 / 6, abs=1e-4)
    assert (data / ".kb-eval" / "index" / "kb.sqlite").is_file()  # cached beside the data
    text = CliRunner().invoke(cli, ["eval", str(data), "--mode", "lexical"])
    assert text.exit_code == 0 and "ndcg@10" in text.stdout and "lexical" in text.stdout


def test_eval_bad_dataset_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(tmp_path)])
    assert result.exit_code == 2
    assert "no corpus.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_jsonl_records_are_cited_by_id_and_line(tmp_path, embedder):
    records = tmp_path / "records.jsonl"
    records.write_text(
        json.dumps({"id": "faq-1", "title": "Returns", "text": "Items can be returned within 30 days."}) + "\n"
        + json.dumps({"note": "no text field: not a document"}) + "\n"
        + json.dumps({"_id": "faq-2", "title": "Shipping", "text": "Orders ship within two working days."}) + "\n",
        encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index")
    report = kb.index([records])
    assert report.passages == 2
    hit = kb.ask("how long does delivery take", k=1)[0]
    assert hit.record == "faq-2" and hit.line_start == 3 and hit.context == "Shipping"
    assert hit.citation.endswith("records.jsonl:3 #faq-2")


def test_jsonl_invalid_line_skips_the_file_with_a_reason(tmp_path, embedder):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n', encoding="utf-8")
    report = KnowledgeBase(tmp_path / "index").index([bad])
    assert [s.reason for s in report.skipped] == ["line 2 is not valid JSON"]
