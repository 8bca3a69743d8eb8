"""Term proximity: the share of a question's neighbouring term pairs a passage holds near each other."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.query.proximity import WINDOW, pairs, proximity
from kb.query.search import PROXIMITY_WEIGHT, SENTENCE_WEIGHT
from kb.store.lexical import query_terms, terms


def flat(term: str) -> float:
    return 1.0


def test_pairs_are_the_question_neighbours_in_order():
    assert pairs(query_terms("How do I set the exit code of a process?")) == [("set", "exit"), ("exit", "code"),
                                                                             ("code", "process")]
    assert pairs(["kettl"]) == [] and proximity(["kettl"], ["kettl"], flat) == 0.0


def test_near_pairs_count_in_either_order_and_far_ones_do_not():
    question = query_terms("exit code")
    assert proximity(question, terms("The exit code is 3."), flat) == 1.0
    assert proximity(question, terms("A code to exit with."), flat) == 1.0  # either order
    far = "exit " + "word " * (WINDOW + 1) + "code"
    near = "exit " + "word " * (WINDOW - 1) + "code"
    assert proximity(question, terms(far), flat) == 0.0 and proximity(question, terms(near), flat) == 1.0


def test_pairs_weigh_by_their_terms_idf():
    question = ["rare", "common", "other"]
    idf = {"rare": 5.0, "common": 1.0, "other": 1.0}.get
    # (rare, common) found, (common, other) not: (5 + 1) / ((5 + 1) + (1 + 1))
    assert proximity(question, ["rare", "common"] + ["x"] * 20 + ["other"], idf) == pytest.approx(6 / 8)
    assert proximity(question, ["rare"] + ["x"] * 20 + ["common", "other"], idf) == pytest.approx(2 / 8)


def test_a_hybrid_score_counts_the_pairs_a_passage_holds_together(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "near.txt").write_text("When the program stops, its exit code tells the shell what happened. "
                                   "Scripts read it to decide what runs next.", encoding="utf-8")
    (docs / "far.txt").write_text("Exit the editor before committing. The build logs go to a file; "
                                  "every line of generated code is checked there.", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    kb.index([docs])
    hits = {h.source.rsplit("/", 1)[-1]: h for h in kb.ask("what is the exit code of a program", k=2)}
    assert hits["near.txt"].proximity > hits["far.txt"].proximity == 0.0
    for h in hits.values():
        parts = (1 - SENTENCE_WEIGHT) * h.fused + SENTENCE_WEIGHT * h.sentence_score
        assert h.score == pytest.approx((1 - PROXIMITY_WEIGHT) * parts + PROXIMITY_WEIGHT * h.proximity, abs=2e-6)
    assert all(h.proximity is None for h in kb.ask("exit code", k=2, mode="lexical"))
    assert all(h.proximity is None for h in kb.ask("exit code", k=2, mode="dense"))
