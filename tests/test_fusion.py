"""Fusion on hand-made rankings, and RRF against ranx's implementation."""

from __future__ import annotations

import pytest

from kb.query import fusion


def test_rrf_by_hand():
    fused = fusion.rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    # an item both lists rank well beats one list's winner
    assert [i for i, _ in fusion.ranked(fused)] == ["a", "c", "b"]


def test_rrf_matches_ranx():
    from ranx import Run, fuse

    dense = {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.1}
    lexical = {"d3": 12.0, "d5": 7.0, "d1": 3.0}
    ours = fusion.rrf([[i for i, _ in fusion.ranked(dense)], [i for i, _ in fusion.ranked(lexical)]])
    theirs = fuse([Run({"q": dense}), Run({"q": lexical})], method="rrf", params={"k": 60}).to_dict()["q"]
    assert set(ours) == set(theirs)
    for doc, score in theirs.items():
        assert ours[doc] == pytest.approx(score)


def test_min_max_and_convex():
    assert fusion.min_max({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert fusion.min_max({"a": 5.0, "b": 5.0}) == {"a": 1.0, "b": 1.0}
    assert fusion.min_max({}) == {}
    fused = fusion.convex({"a": 1.0, "b": 0.5}, {"b": 1.0, "c": 0.2}, 0.25)
    assert fused == pytest.approx({"a": 0.25, "b": 0.875, "c": 0.15})
    with pytest.raises(ValueError):
        fusion.convex({}, {}, 1.5)


def test_convex_weight_ends_reproduce_each_list():
    dense = {"a": 0.9, "b": 0.1}
    lexical = {"a": 0.0, "b": 0.7}
    assert fusion.ranked(fusion.convex(dense, lexical, 1.0))[0][0] == "a"
    assert fusion.ranked(fusion.convex(dense, lexical, 0.0))[0][0] == "b"


def test_ranked_breaks_ties_by_id():
    assert fusion.ranked({3: 1.0, 1: 1.0, 2: 2.0}) == [(2, 2.0), (1, 1.0), (3, 1.0)]
