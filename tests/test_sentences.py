"""Sentence vectors: pooled from the passage's own model run at index time, stored beside its
vector, carried along by vector reuse, and read (never computed) at question time."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from kb import KnowledgeBase
from kb.ingest.chunking import sentence_spans
from kb.query.search import PROXIMITY_WEIGHT, SENTENCE_WEIGHT
from kb.store.sentence_vectors import pack, unpack

from .test_search import QUESTIONS

TEXTS = {
    "kettle.txt": "Descale the kettle monthly with white vinegar. Limescale builds up fast in hard water areas. "
                  "Rinse twice before boiling again.",
    "garden.md": "# Garden\n\nWater tomatoes in the early morning. Never water them in the midday sun. "
                 "Feed them weekly once the first fruits set.",
    "bikes.txt": "Oil the bicycle chain every few hundred kilometres. Wipe off the excess with a rag. "
                 "A dry chain wears the cassette out quickly.",
}


class Counting:
    """The real ONNX embedder, counting its calls and the texts each call embeds."""

    def __init__(self, inner):
        self.inner, self.model, self.dimension = inner, inner.model, inner.dimension
        self.calls: list[tuple[str, int]] = []

    def embed(self, texts, *, progress=None):
        self.calls.append(("embed", len(texts)))
        return self.inner.embed(texts, progress=progress)

    def embed_with_sentences(self, texts, spans, *, progress=None):
        self.calls.append(("embed_with_sentences", len(texts)))
        return self.inner.embed_with_sentences(texts, spans, progress=progress)


@pytest.fixture
def onnx(model):
    from kb.embed.embedding import load_embedder
    from kb.embed.onnx_embedder import OnnxEmbedder

    embedder = load_embedder(model, for_indexing=True)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TEXTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


def stored(index_dir) -> dict[str, bytes]:
    """file name -> its (one) passage's packed sentence vectors, from the SQLite file."""
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        rows = conn.execute("SELECT d.abspath, s.data FROM passages p JOIN documents d ON d.id = p.document_id"
                            " JOIN sentences s ON s.key = p.vector_key").fetchall()
    return {os.path.basename(a): data for a, data in rows}


def test_pack_keeps_spans_and_directions():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    spans = [(0, 10), (11, 40), (41, 41), (42, 90), (91, 200)]
    got_spans, got = unpack(pack(spans, vectors))
    assert got_spans.tolist() == [list(s) for s in spans]
    assert np.min(np.sum(got * vectors, axis=1) / np.linalg.norm(got, axis=1)) > 0.999
    assert len(pack(spans, vectors)) == 8 + 5 * (8 + 4 + 384)  # 8-bit rows: a quarter of float32


def test_pooled_vectors_are_the_mean_of_the_spans_token_vectors(onnx):
    text = "Junior doctors voted to strike. The turnout was 76 per cent! Talks broke down."
    spans = sentence_spans(text)
    vectors, (sentences,) = onnx.embed_with_sentences([text], [spans])
    np.testing.assert_allclose(vectors, onnx.embed([text]), atol=1e-6)  # the same run, the same vector
    # The reference: the run's token vectors, averaged by hand over each sentence's word pieces.
    encoding = onnx._tokenizer.encode(text)
    ids = np.array([encoding.ids])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    tokens = onnx._session.run(["token_embeddings"], {n: feed[n] for n in onnx._inputs})[0][0]
    for (a, b), got in zip(spans, sentences):
        inside = [n for n, (s, e) in enumerate(encoding.offsets) if not encoding.special_tokens_mask[n]
                  and a <= s and e <= b and e > s]
        mean = tokens[inside].mean(axis=0)
        assert float(got @ mean / np.linalg.norm(mean)) > 0.9999


def test_sentence_vectors_are_stored_at_index_time_and_agree_with_a_fresh_run(article_index, onnx):
    with sqlite3.connect(article_index / "kb.sqlite") as conn:
        rows = conn.execute("SELECT p.text, p.context, s.data FROM passages p"
                            " LEFT JOIN sentences s ON s.key = p.vector_key").fetchall()
    assert rows and all(data is not None for text, _, data in rows if len(sentence_spans(text)) > 1)
    for text, context, data in rows:
        spans, vectors = unpack(data)
        assert spans.tolist() == [list(s) for s in sentence_spans(text)]
        shift = len(context) + 1 if context else 0
        embedded = f"{context}\n{text}" if context else text
        _, (fresh,) = onnx.embed_with_sentences([embedded], [[(a + shift, b + shift) for a, b in spans.tolist()]])
        cosines = np.sum(vectors * fresh, axis=1) / np.linalg.norm(vectors, axis=1)
        assert cosines.min() > 0.999


def test_the_model_runs_once_per_question_batch_and_never_per_sentence(article_index, onnx):
    counting = Counting(onnx)
    kb = KnowledgeBase(article_index, embedder=counting)
    questions = [q for q, _ in QUESTIONS[:6]]
    results = kb.ask_many(questions, k=5)
    assert counting.calls == [("embed", len(questions))]
    for hits in results:
        for h in hits:
            assert h.sentence_score is not None and h.char_start <= h.sentence_start < h.sentence_end <= h.char_end
            assert h.score == pytest.approx((1 - PROXIMITY_WEIGHT) * ((1 - SENTENCE_WEIGHT) * h.fused
                                            + SENTENCE_WEIGHT * h.sentence_score) + PROXIMITY_WEIGHT * h.proximity,
                                            abs=2e-6)
    counting.calls.clear()
    kb.ask(questions[0], k=3)
    kb.ask(questions[1], k=3, best_sentence=False)
    assert counting.calls == [("embed", 1), ("embed", 1)]


def test_highlight_holds_the_answer_for_article_questions(article_kb):
    # Questions whose answer the words-only highlight missed, and the sentence vectors find
    # (bench/sentences.py, "now_right").
    chosen = ["What percentage of balloted medics backed industrial action?", "What date is the walkout scheduled for?",
              "Which local authority does the writer sit on?", "Which part of the row matters less, according to the writer?",
              "Do medics put in extra unpaid time?"]
    needles = dict(QUESTIONS)
    for question in chosen:
        hit = next(h for h in article_kb.ask(question, k=5) if needles[question] in h.text)
        assert needles[question] in hit.sentence, (question, hit.sentence)


def test_sentence_vectors_survive_reindexing_renames_and_go_with_their_passage(folder, tmp_path, onnx):
    counting = Counting(onnx)
    index_dir = tmp_path / "index"
    kb = KnowledgeBase(index_dir, embedder=counting)
    kb.index([folder])
    assert [c for c, _ in counting.calls] == ["embed_with_sentences"]  # passages and sentences: one run
    first = stored(index_dir)
    assert sorted(first) == sorted(TEXTS)
    assert all(len(unpack(data)[0]) == 3 for data in first.values())

    # A renamed file and an unchanged one: nothing embedded, the same sentence vectors.
    os.rename(folder / "kettle.txt", folder / "descaling.txt")
    (folder / "garden.md").write_text(TEXTS["garden.md"] + " Pinch out the side shoots.", encoding="utf-8")
    (folder / "bikes.txt").unlink()
    counting.calls.clear()
    report = kb.index([folder])
    assert report.passages_embedded == 1 and counting.calls == [("embed_with_sentences", 1)]
    second = stored(index_dir)
    assert sorted(second) == ["descaling.txt", "garden.md"]
    assert second["descaling.txt"] == first["kettle.txt"]
    assert len(unpack(second["garden.md"])[0]) == 4
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:  # the removed and the changed file's are gone
        assert conn.execute("SELECT COUNT(*) FROM sentences").fetchone()[0] == 2

    hit = kb.ask("what removes limescale from a kettle?", k=1)[0]
    assert hit.source.endswith("descaling.txt") and "vinegar" in hit.sentence or "Limescale" in hit.sentence


def test_a_format_2_index_is_read_and_upgraded(folder, tmp_path, onnx):
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=onnx).index([folder])
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:  # what kb wrote before sentence vectors
        conn.execute("DROP TRIGGER embeddings_removed")
        conn.execute("DROP TABLE sentences")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    hits = KnowledgeBase(index_dir).ask("when should tomatoes be watered?", k=2)
    assert hits[0].source.endswith("garden.md") and hits[0].sentence_start is not None
    assert hits[0].sentence_score == hits[0].dense  # no sentence vectors: the passage's own cosine

    (folder / "ovens.txt").write_text("Clean the oven with baking soda. Leave the paste overnight.", encoding="utf-8")
    KnowledgeBase(index_dir, embedder=onnx).index([folder])
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    assert list(stored(index_dir)) == ["ovens.txt"]  # new passages get them; a --rebuild gives them all


# -- passages with markup: each sentence's vector pools that sentence's own tokens -----------
ROLES_RST = """Shell helpers
=============

.. function:: run_all(commands)

   Run :func:`first`, :func:`second`, :func:`third`, :func:`fourth`, :func:`fifth`,
   :func:`sixth`, :meth:`Runner.seventh`, :meth:`Runner.eighth` and :class:`Ninth` in order.
   Bananas ripen faster beside apples in a paper bag.
   The orchestra tuned to the oboe before the symphony.
"""


def _passages(path):
    from kb.embed.model import TokenCounter, packaged_model
    from kb.ingest.documents import _source_file, read_document
    from kb.ingest.passages import ChunkSettings, make_passages

    document = read_document(_source_file(str(path), []))
    return make_passages(document, TokenCounter(packaged_model().tokenizer_file), ChunkSettings())


def test_a_sentence_is_found_in_what_the_model_reads_when_markup_was_removed(tmp_path):
    path = tmp_path / "helpers.rst"
    path.write_text(ROLES_RST, encoding="utf-8")
    (p,) = [p for p in _passages(path) if "Bananas" in p.text]
    assert p.indexed is not None and ":func:" not in p.indexed  # the roles' markup is not read
    for a, b in sentence_spans(p.text):
        x, y = p.embedded_span(a, b)
        # What the model read there is the sentence, less its markup (and nothing of another).
        assert p.embedding_text[x:y] == p.text[a:b].replace(":func:", "").replace(":meth:", "").replace(":class:", "")


def test_sentence_vectors_of_a_passage_with_markup_are_its_sentences(tmp_path, onnx):
    """Before: spans into the text were applied to the text less its markup, so after the
    roles each vector pooled tokens of the next sentence. Each stored vector must be
    nearest the same sentence embedded alone."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "helpers.rst").write_text(ROLES_RST, encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index", embedder=onnx)
    kb.index([docs])
    with sqlite3.connect(tmp_path / "index" / "kb.sqlite") as conn:
        ((text, data),) = conn.execute("SELECT p.text, s.data FROM passages p JOIN sentences s ON s.key = p.vector_key"
                                       " WHERE p.indexed IS NOT NULL AND p.text LIKE '%Bananas%'").fetchall()
    spans, vectors = unpack(data)
    alone = onnx.embed([text[a:b] for a, b in spans.tolist()])
    similarity = vectors @ alone.T
    assert len(spans) == 3 and similarity.argmax(axis=1).tolist() == [0, 1, 2]


def test_an_index_from_before_the_alignment_embeds_again_only_its_passages_with_markup(tmp_path, onnx):
    """An index built before held misaligned sentence vectors for exactly the passages with
    markup: its next `kb index` re-reads every file (the reading's version changed) and
    embeds those passages again, under keys of their own; every other vector is reused."""
    from kb.embed.model import packaged_model
    from kb.store.database import vector_key

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "helpers.rst").write_text(ROLES_RST, encoding="utf-8")
    (docs / "plain.txt").write_text("A plain note. It has no markup at all.", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "index", embedder=onnx)
    first = kb.index([docs])
    # Make it an index of before: the reading's old version, and the passages with markup
    # under the key that reading gave them (the model's id and the text it read, nothing more).
    with sqlite3.connect(tmp_path / "index" / "kb.sqlite") as conn:
        rows = conn.execute("SELECT id, context, COALESCE(indexed, text), vector_key, indexed IS NOT NULL"
                            " FROM passages").fetchall()
        marked = 0
        for pid, context, text, key, has_markup in rows:
            if has_markup:
                marked += 1
                old = vector_key(packaged_model().vector_id + "\0" + (f"{context}\n{text}" if context else text))
                for table, column in (("embeddings", "key"), ("sentences", "key")):
                    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (old, key))
                conn.execute("UPDATE passages SET vector_key = ? WHERE id = ?", (old, pid))
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'reading'")
    assert 0 < marked < first.passages
    again = kb.index([docs])
    assert again.passages == first.passages and again.passages_embedded == marked
    assert kb.index([docs]).passages_embedded == 0  # and then it is settled
