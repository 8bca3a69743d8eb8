"""BM25 in SQLite FTS5: query building, normalised scores, kept in step with the index."""

from __future__ import annotations

import sqlite3

import pytest

from kb import KnowledgeBase
from kb.lexical import Lexical, match_expression, query_terms
from kb.store import _SCHEMA


def test_query_terms_drop_stopwords_and_repeats():
    assert query_terms("What is the BMA's position on the ACAS talks, and the BMA?") == ["bma", "position", "acas", "talks"]
    assert query_terms("the of and") == []


def test_match_expression_quotes_every_term():
    # FTS5 syntax in a question (quotes, NOT, NEAR, *, -) is searched for, never executed.
    assert match_expression(['say"what', "not", "near"]) == '"say""what" OR "not" OR "near"'


def _memory_db(texts):
    conn = sqlite3.connect(":memory:")
    conn.executescript(_SCHEMA)
    conn.execute("INSERT INTO documents VALUES (1, '/x', 'x', 'text', 0, 0, '', '')")
    conn.executemany(
        "INSERT INTO passages(id, document_id, ordinal, text, context, char_start, char_end, line_start, line_end)"
        " VALUES (?, 1, ?, ?, '', 0, 0, 1, 1)", [(i + 1, i, t) for i, t in enumerate(texts)])
    return conn


def test_bm25_ranks_and_normalises():
    conn = _memory_db([
        "the strike ballot closed on thursday",
        "doctors voted to strike, and the strike ballot result was clear",
        "a recipe for sourdough bread",
        "weekend care in hospitals",
    ])
    lex = Lexical(conn)
    terms = query_terms("Did doctors strike after the ballot?")
    found = lex.search(terms, 10)
    assert [pid for pid, _ in found] == [2, 1]  # more of the terms, more often; the recipe never
    ceiling = lex.ceiling(terms)
    assert all(0 < score / ceiling < 1 for _, score in found)
    assert lex.score(terms, [1, 3]) == pytest.approx({1: dict(found)[1]})
    assert lex.search(query_terms("the of and"), 5) == []
    assert lex.search(['"; DROP TABLE passages; --'], 5) == []


def test_lexical_index_follows_reindexing(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("The quarterly zebrafish census is due on Friday.\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index")
    kb.index([doc])
    assert kb.ask("zebrafish census", k=1, mode="lexical")[0].lexical > 0
    doc.write_text("The annual axolotl survey moved to Monday.\n", encoding="utf-8")
    kb.index([doc])
    assert kb.ask("zebrafish census", k=1, mode="lexical") == []
    assert "axolotl" in kb.ask("axolotl survey", k=1, mode="lexical")[0].text
    doc.unlink()
    kb.index([])  # the file is gone: its passages and their BM25 entries go too
    conn = sqlite3.connect(tmp_path / "index" / "kb.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM passages_fts WHERE passages_fts MATCH 'axolotl'").fetchone()[0] == 0


def test_lexical_mode_needs_no_model(article_index, monkeypatch):
    import kb.knowledge_base as kbmod

    def no_model(*args, **kwargs):
        raise AssertionError("lexical mode loaded the model")

    monkeypatch.setattr(kbmod, "load_embedder", no_model)
    hits = KnowledgeBase(article_index).ask("ACAS", k=2, mode="lexical")
    assert hits and "ACAS" in hits[0].text and hits[0].dense is None
