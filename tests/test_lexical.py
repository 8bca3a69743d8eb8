"""BM25 with tantivy: analysis, ranking equal to a reference BM25, normalised scores,
generation folders that follow re-indexing."""

from __future__ import annotations

import hashlib
import math

import pytest

from kb import KnowledgeBase
import kb.store.lexical as kb_lexical
import kb.ingest.pipeline as kb_pipeline
from kb.store.lexical import IDF_POWER, K1, LexicalIndex, LexicalWriter, query_terms, terms

from .conftest import ARTICLE


def test_query_terms_are_stemmed_without_stopwords_or_repeats():
    assert query_terms("What is the BMA's position on the ACAS talks, and the BMA?") == ["bma", "posit", "aca", "talk"]
    assert query_terms("Striking doctors strike") == ["strike", "doctor"]
    assert query_terms("the of and") == []
    assert terms("Naïve Doctors") == ["naiv", "doctor"]  # passages keep every word, accents folded


def build(path, texts):
    writer = LexicalWriter(path, None)
    writer.add((i + 1, 1, t) for i, t in enumerate(texts))
    writer.commit()
    return LexicalIndex(path)


def test_bm25_ranks_and_normalises(tmp_path):
    lex = build(tmp_path / "lexical.1", [
        "the strike ballot closed on thursday",
        "doctors voted to strike, and the strike ballot result was clear",
        "a recipe for sourdough bread",
        "weekend care in hospitals",
    ])
    wanted = query_terms("Did doctors strike after the ballot?")
    found = lex.search(wanted, 10)
    assert [pid for pid, _ in found] == [2, 1]  # more of the terms, more often; the recipe never
    ceiling = lex.ceiling(wanted)
    assert all(0 < score / ceiling < 1 for _, score in found)
    assert lex.score(wanted, [1, 3]) == pytest.approx({1: dict(found)[1]})
    assert lex.search(query_terms("the of and"), 5) == []
    assert lex.search(['"; DROP TABLE passages; --'], 5) == []
    assert lex.search(wanted, 10, documents=[2]) == [] and lex.search(wanted, 10, documents=[1]) == found


def test_top_k_equals_a_reference_bm25(tmp_path, monkeypatch):
    """bm25s, an independent BM25 (Lucene's formula, same constants), over the same terms,
    each term's part weighted by idf ** (IDF_POWER - 1) with bm25s's own idf."""
    import bm25s

    sentences = [s.strip() for s in ARTICLE.read_text(encoding="utf-8").replace("\n", " ").split(". ") if s.strip()]
    lex = build(tmp_path / "lexical.1", sentences)
    reference = bm25s.BM25(method="lucene", k1=K1, b=0.75)
    reference.index([terms(s) for s in sentences], show_progress=False)
    questions = ["junior doctors strike ballot", "Jeremy Hunt weekend contract", "ACAS negotiations BMA",
                 "patients safety at weekends", "locum cover costs trusts", "doctors move abroad to Australia"]
    for question in questions:
        wanted = query_terms(question)
        n = len(sentences)
        expected = 0
        for term in wanted:
            df = sum(term in terms(s) for s in sentences)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            # Lucene 8+ dropped the constant (k1 + 1)
            expected = expected + reference.get_scores([term]) * (K1 + 1) * (idf ** (IDF_POWER - 1) if df else 0)
        ours = dict(lex.search(wanted, 10))
        top = [i for i in sorted(range(len(sentences)), key=lambda i: -expected[i])[:10] if expected[i] > 0]
        # The same ranking, up to passages whose reference scores tie exactly (tantivy orders
        # ties by its own document order, which its two indexing threads may vary).
        assert [expected[pid - 1] for pid in ours] == [expected[i] for i in top], question
        for pid, score in ours.items():
            assert score == pytest.approx(expected[pid - 1], rel=0.02), question  # tantivy stores lengths in a byte
        # Candidate scores, by either form of id filter, are the reference's too.
        every = list(range(1, n + 1))
        for limit in (kb_lexical.TERM_QUERIES_MAX, 0):  # OR-ed term queries; a term-set query
            monkeypatch.setattr(kb_lexical, "TERM_QUERIES_MAX", limit)
            scored = lex.score(wanted, every)
            assert sorted(scored) == [i + 1 for i in range(n) if expected[i] > 0], question
            assert all(scored[pid] == pytest.approx(expected[pid - 1], rel=0.02) for pid in scored), question


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
    [folder] = [p for p in (tmp_path / "index").iterdir() if p.name.startswith("lexical.")]
    assert folder.name == f"lexical.{kb.info()['generation']}"
    assert LexicalIndex(folder).search(query_terms("axolotl survey"), 5) == []


def test_a_new_generation_never_touches_the_previous_folder(tmp_path):
    """Readers of the last generation keep reading while a run builds the next one."""
    first = build(tmp_path / "lexical.1", ["alpha beta", "beta gamma", "gamma delta"])
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "lexical.1").iterdir()}
    writer = LexicalWriter(tmp_path / "lexical.2", tmp_path / "lexical.1")
    writer.delete_documents([1])
    writer.add([(4, 2, "delta epsilon"), (5, 2, "epsilon zeta")])
    writer.commit()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "lexical.1").iterdir()}
    assert after == before
    assert [pid for pid, _ in first.search(["gamma"], 5)] and LexicalIndex(tmp_path / "lexical.1").passages == 3
    second = LexicalIndex(tmp_path / "lexical.2")
    assert second.passages == 2 and sorted(pid for pid, _ in second.search(["epsilon"], 5)) == [4, 5]


def test_lexical_mode_needs_no_model(article_index, monkeypatch):
    import kb.knowledge_base as kbmod

    def no_model(*args, **kwargs):
        raise AssertionError("lexical mode loaded the model")

    monkeypatch.setattr(kbmod, "load_embedder", no_model)
    hits = KnowledgeBase(article_index).ask("ACAS", k=2, mode="lexical")
    assert hits and "ACAS" in hits[0].text and hits[0].dense is None


def test_an_index_built_with_another_analysis_gets_its_lexical_folder_rebuilt(tmp_path, embedder, monkeypatch):
    doc = tmp_path / "notes.txt"
    doc.write_text("Striking doctors met the health secretary.\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    kb.index([doc])
    info = kb.info()
    assert info["lexical_index"]["analyzer"] == kb_lexical.ANALYZER
    assert kb.index([doc]).passages_embedded == 0 and kb.info()["lexical_index"] == info["lexical_index"]

    # Another analysis (here: no stemming) under another name: the folder is rebuilt, nothing embedded.
    monkeypatch.setattr(kb_lexical, "ANALYZER", "simple|lowercase")
    monkeypatch.setattr(kb_pipeline, "ANALYZER", "simple|lowercase")
    monkeypatch.setattr(kb_lexical, "_analyzer_builder", _unstemmed)
    kb_lexical._analyzer.cache_clear()
    try:
        report = kb.index([doc])
        assert report.passages_embedded == 0 and not report.rebuilt
        now = kb.info()["lexical_index"]
        assert now["analyzer"] == "simple|lowercase" and now["folder"] != info["lexical_index"]["folder"]
        assert query_terms("striking doctors") == ["striking", "doctors"]
        assert kb.ask("striking doctors", k=1, mode="lexical")  # unstemmed terms are in the new folder
        assert kb.index([doc]).passages_embedded == 0 and kb.info()["lexical_index"] == now  # and only once
    finally:
        kb_lexical._analyzer.cache_clear()


def test_an_index_from_before_the_analysis_was_recorded_keeps_its_lexical_folder(tmp_path, embedder):
    doc = tmp_path / "notes.txt"
    doc.write_text("Striking doctors met the health secretary.\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    kb.index([doc])
    folder = kb.info()["lexical_index"]["folder"]
    store = kb._open_store()
    with store.transaction():
        store.set_meta("lexical_analyzer", None)
    store.close()
    assert kb_lexical.UNRECORDED_ANALYZER == kb_lexical.ANALYZER  # until the analysis changes
    kb.index([doc])
    assert kb.info()["lexical_index"] == {"engine": "tantivy", "folder": folder, "analyzer": kb_lexical.ANALYZER}


def _unstemmed(stopwords: bool):
    import tantivy

    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase())
    if stopwords:
        builder = builder.filter(tantivy.Filter.custom_stopword(sorted(kb_lexical.STOPWORDS)))
    return builder
