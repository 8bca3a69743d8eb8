"""Index the shipped article and ask it questions: library API and CLI (CliRunner)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli

from .conftest import ARTICLE

# Questions a reader would ask, in their own words, and a phrase from the paragraph that
# answers each. (The harder, vocabulary-free set lives with the retrieval-quality tests.)
PARAPHRASES = [
    ("How big was the vote in favour of walking out?", "98 per cent supporting strike action"),
    ("When is the first stoppage planned?", "first industrial action on the 1st December"),
    ("Which specialties could the contract penalise for needing out-of-hours cover?", "such as A&E"),
    ("What is the author's background?", "Andrew Brown is Conservative health"),
    ("Since the ballot, who does the BMA say must be involved in renegotiating?", "only renegotiate with ACAS"),
    ("Why do trusts spend so much on expensive locum doctors?", "over reliance on very expensive locum cover"),
    ("Could doctors leave the country to work elsewhere?", "decide to move abroad"),
    ("Are patients worse off if admitted on Saturday or Sunday?", "admitted at the weekend"),
    ("Does the contract treat parents and researchers unfairly?", "childcare or to take up an academic role"),
]


@pytest.mark.parametrize("question,needle", PARAPHRASES)
def test_paraphrased_questions_find_their_paragraph(article_kb, question, needle):
    hits = article_kb.ask(question, k=3)
    assert any(needle in h.text for h in hits), [h.text[:80] for h in hits]


def test_citations_are_exact(article_kb):
    for question, _ in PARAPHRASES:
        for hit in article_kb.ask(question, k=5):
            content = open(hit.source, encoding="utf-8").read()
            assert content[hit.char_start : hit.char_end] == hit.text
            assert content.count("\n", 0, hit.char_start) + 1 == hit.line_start
            assert content.count("\n", 0, hit.char_end) + 1 == hit.line_end
            assert hit.source.endswith("corpus/junior-doctors-strike.txt")


def test_hits_are_ranked_by_score(article_kb):
    hits = article_kb.ask("Should the government avoid the strike?", k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert all(-1.0 <= h.score <= 1.0 for h in hits)
    assert len({h.passage_id for h in hits}) == 5


def test_ask_many_matches_single_asks(article_kb):
    questions = [q for q, _ in PARAPHRASES[:4]]
    batched = article_kb.ask_many(questions, k=3)
    assert [[h.passage_id for h in hits] for hits in batched] == [
        [h.passage_id for h in article_kb.ask(q, k=3)] for q in questions
    ]


def test_json_output_schema(article_index):
    result = CliRunner().invoke(cli, ["ask", "What did the vote show?", "--json", "-k", "3", "--index", str(article_index)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["question"] == "What did the vote show?"
    assert len(data["results"]) == 3
    types = {"rank": int, "score": float, "text": str, "source": str, "line_start": int, "line_end": int,
             "char_start": int, "char_end": int, "passage_id": int, "stale": bool}
    for r in data["results"]:
        for key, typ in types.items():
            assert isinstance(r[key], typ), key
        assert r["line_start"] <= r["line_end"] and r["char_start"] < r["char_end"]


def test_batch_questions_from_stdin_give_jsonl(article_index):
    stdin = "How big was the vote in favour?\n\nWho wrote this?\nWhat about ACAS?\n"
    result = CliRunner().invoke(cli, ["ask", "-", "--json", "-k", "2", "--index", str(article_index)], input=stdin)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in rows] == ["How big was the vote in favour?", "Who wrote this?", "What about ACAS?"]
    assert all(len(r["results"]) == 2 for r in rows)


def test_human_output_shows_rank_score_citation_and_text(article_index):
    result = CliRunner().invoke(cli, ["ask", "Who wrote this article?", "-k", "2", "--index", str(article_index)])
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0]
    assert first.startswith("1. [0.") and "corpus/junior-doctors-strike.txt:" in first
    assert "2. [" in result.output
    assert "\x1b[" not in result.output, "no colour codes when stdout is not a terminal"


def test_index_dir_from_environment(article_index, monkeypatch):
    monkeypatch.setenv("KB_INDEX", str(article_index))
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["documents"] == 1 and info["passages"] > 5
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["dimension"] == 384
    assert info["chunking"]["max_tokens"] <= 254
    assert info["size_bytes"] > 0


def test_info_text(article_index):
    result = CliRunner().invoke(cli, ["info", "--index", str(article_index)])
    assert result.exit_code == 0
    for label in ("documents", "passages", "model", "dimension", "chunking", "built", "size on disk"):
        assert label in result.output


def test_index_command_summary_and_rerun_is_incremental(in_tmp):
    (in_tmp / "corpus").mkdir()
    shutil.copy(ARTICLE, in_tmp / "corpus" / ARTICLE.name)
    runner = CliRunner()
    first = runner.invoke(cli, ["index", "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["added"] == ["corpus/junior-doctors-strike.txt"]
    assert report["passages"] == report["passages_embedded"] > 5
    again = runner.invoke(cli, ["index"])
    assert again.exit_code == 0
    assert "1 files" in again.output and "1 unchanged" in again.output
    # the default index/ folder was used, and ask finds it without options
    assert (in_tmp / "index" / "kb.sqlite").exists()
    asked = runner.invoke(cli, ["ask", "Who wrote this?", "--json"])
    assert json.loads(asked.stdout)["results"][0]["source"] == "corpus/junior-doctors-strike.txt"


def test_failed_index_run_leaves_previous_index_usable(article_index, tmp_path, embedder):
    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    before = [h.passage_id for h in KnowledgeBase(index_dir).ask("Who wrote this?", k=3)]

    class Exploding:
        model, dimension = embedder.model, embedder.dimension

        def embed(self, texts, *, progress=None):
            raise RuntimeError("disk on fire")

    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "new.txt").write_text("A brand new document about something else entirely.")
    with pytest.raises(RuntimeError):
        KnowledgeBase(index_dir, embedder=Exploding()).index([extra])
    after = KnowledgeBase(index_dir)
    assert [h.passage_id for h in after.ask("Who wrote this?", k=3)] == before
    assert after.info()["documents"] == 1


def test_markdown_headings_are_context_and_cited_lines_are_exact(tmp_path):
    md = tmp_path / "guide.md"
    md.write_text("# Kettle manual\n\n## Descaling\n\nFill with vinegar and boil twice, then rinse.\n\n"
                  "## Warranty\n\nThe warranty lasts two years from purchase.\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index")
    kb.index([md])
    hit = kb.ask("how do I remove limescale from the kettle", k=1)[0]
    assert "vinegar" in hit.text and hit.context == "Kettle manual > Descaling"
    assert hit.line_start == hit.line_end == 5


def test_jsonl_records_cite_their_own_line(tmp_path):
    import json as _json

    records = tmp_path / "notes.jsonl"
    rows = [{"id": "a1", "title": "Kettle", "text": "Descale the kettle\nwith vinegar.\n\nThen rinse it twice."},
            {"id": "b2", "title": "Bike", "text": "Oil the chain every month."}]
    records.write_text("\n".join(_json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index")
    kb.index([records])
    hit = kb.ask("how often should a bicycle chain be lubricated", k=1)[0]
    assert (hit.record, hit.line_start, hit.line_end, hit.context) == ("b2", 2, 2, "Bike")
    kettle = kb.ask("remove limescale with vinegar", k=1)[0]
    assert (kettle.record, kettle.line_start, kettle.line_end) == ("a1", 1, 1)
    assert kettle.citation.endswith("notes.jsonl:1 #a1")


def test_best_sentence_span_and_no_highlight(article_index):
    args = ["ask", "What share of junior doctors supported strike action?", "--json", "-k", "2",
            "--index", str(article_index)]
    results = json.loads(CliRunner().invoke(cli, args).stdout)["results"]
    with_span = next(r for r in results if "98 per cent" in r["text"])
    assert with_span["char_start"] <= with_span["sentence_start"] < with_span["sentence_end"] <= with_span["char_end"]
    sentence = with_span["text"][with_span["sentence_start"] - with_span["char_start"] :
                                 with_span["sentence_end"] - with_span["char_start"]]
    assert "98 per cent" in sentence
    without = json.loads(CliRunner().invoke(cli, [*args, "--no-highlight"]).stdout)["results"]
    assert all(r["sentence_start"] is None and r["sentence_end"] is None for r in without)
    assert [r["passage_id"] for r in without] == [r["passage_id"] for r in results]


def test_passage_size_is_a_recorded_setting(in_tmp):
    (in_tmp / "corpus").mkdir()
    shutil.copy(ARTICLE, in_tmp / "corpus" / ARTICLE.name)
    runner = CliRunner()
    assert runner.invoke(cli, ["index", "--passage-tokens", "64"]).exit_code == 0
    small = json.loads(runner.invoke(cli, ["info", "--json"]).stdout)
    assert small["chunking"] == {"max_tokens": 64, "overlap_tokens": 12}
    # a plain re-run keeps the recorded size and embeds nothing
    again = json.loads(runner.invoke(cli, ["index", "--json"]).stdout)
    assert again["passages_embedded"] == 0 and again["passages"] == small["passages"]
    # another size rebuilds everything with it
    bigger = json.loads(runner.invoke(cli, ["index", "--passage-tokens", "128", "--json"]).stdout)
    assert bigger["rebuilt"] and bigger["passages"] < small["passages"]
    assert runner.invoke(cli, ["index", "--passage-tokens", "300"]).exit_code == 2
