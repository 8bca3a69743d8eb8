"""Re-indexing a living folder: only new or changed files are embedded, nothing stale or lost."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli

TEXTS = {
    "kettle.txt": "Descale the kettle monthly with white vinegar so limescale does not build up.",
    "garden.md": "# Garden\n\nWater tomatoes in the early morning, never in the midday sun.",
    "bikes.txt": "Oil the bicycle chain every few hundred kilometres and wipe off the excess.",
}


class CountingEmbedder:
    """The real model, recording every text it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.model, self.dimension = inner, inner.model, inner.dimension
        self.texts: list[str] = []

    def embed(self, texts, *, progress=None):
        self.texts.extend(texts)
        return self.inner.embed(texts, progress=progress)

    def embed_with_sentences(self, texts, spans, *, progress=None):
        self.texts.extend(texts)
        return self.inner.embed_with_sentences(texts, spans, progress=progress)


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TEXTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


@pytest.fixture
def counting(embedder):
    return CountingEmbedder(embedder)


def passage_ids(index_dir, name):
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        return conn.execute("SELECT p.id FROM passages p JOIN documents d ON d.id = p.document_id"
                            " WHERE d.abspath LIKE ? ORDER BY p.id", (f"%{name}",)).fetchall()


def bump_mtime(path, seconds=5):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_reindex_embeds_only_new_and_changed_files(folder, tmp_path, counting):
    kb = KnowledgeBase(tmp_path / "index", embedder=counting)
    first = kb.index([folder])
    assert sorted(os.path.basename(s) for s in first.added) == sorted(TEXTS)
    assert first.passages_embedded == len(counting.texts) == first.passages == 3
    kettle_ids = passage_ids(kb.index_dir, "kettle.txt")
    before = kb.ask("how do I remove limescale from a kettle?", k=1, mode="dense")[0]

    (folder / "garden.md").write_text("# Garden\n\nPrune roses in late winter, just above a bud.", encoding="utf-8")
    (folder / "bikes.txt").unlink()
    (folder / "ovens.txt").write_text("Clean the oven with baking soda paste left overnight.", encoding="utf-8")
    bump_mtime(folder / "kettle.txt")  # touched, same bytes: must not be re-embedded
    counting.texts.clear()
    second = kb.index([folder])

    assert [os.path.basename(s) for s in second.added] == ["ovens.txt"]
    assert [os.path.basename(s) for s in second.changed] == ["garden.md"]
    assert [os.path.basename(s) for s in second.removed] == ["bikes.txt"]
    assert second.unchanged == 1 and (second.documents, second.passages) == (3, 3)
    assert second.passages_embedded == 2
    assert sorted(counting.texts) == sorted(["Garden\nPrune roses in late winter, just above a bud.",
                                             "Clean the oven with baking soda paste left overnight."])
    # The unchanged file's passages and vectors were kept, not re-created.
    assert passage_ids(kb.index_dir, "kettle.txt") == kettle_ids
    after = kb.ask("how do I remove limescale from a kettle?", k=1, mode="dense")[0]
    assert (after.passage_id, after.score, after.stale) == (before.passage_id, before.score, False)
    assert all("bicycle" not in h.text for h in kb.ask("bicycle chain oil", k=5))

    counting.texts.clear()
    third = kb.index([folder])
    assert (third.unchanged, third.added, third.changed, third.removed, counting.texts) == (3, [], [], [], [])


def test_stale_hits_are_flagged_and_gone_files_dropped(folder, tmp_path, counting):
    index_dir = tmp_path / "index"
    kb = KnowledgeBase(index_dir, embedder=counting)
    kb.index([folder])
    question = "how often should a bicycle chain be oiled?"
    assert kb.ask(question, k=1)[0].stale is False

    with open(folder / "bikes.txt", "a", encoding="utf-8") as f:
        f.write(" Also check the tyre pressure.")
    hit = KnowledgeBase(index_dir, embedder=counting).ask(question, k=1)[0]
    assert hit.source.endswith("bikes.txt") and hit.stale is True

    result = CliRunner().invoke(cli, ["ask", question, "--json", "-k", "1", "--index", str(index_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["stale"] is True
    assert "bikes.txt changed since it was indexed; run `kb index`" in result.stderr

    (folder / "bikes.txt").unlink()
    hits = KnowledgeBase(index_dir, embedder=counting).ask(question, k=5)
    assert hits and all(not h.source.endswith("bikes.txt") for h in hits)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    # Gone passages make room: k hits still come back when the other files have them,
    # with MMR too (which picks from a pool of the first 3k present candidates).
    for mmr in (None, 0.5):
        hits = KnowledgeBase(index_dir, embedder=counting).ask(question, k=2, mmr=mmr, mode="dense")
        assert len(hits) == 2 and all(not h.source.endswith("bikes.txt") for h in hits), mmr


def test_rebuild_starts_clean(folder, tmp_path, counting):
    kb = KnowledgeBase(tmp_path / "index", embedder=counting)
    kb.index([folder])
    counting.texts.clear()
    report = kb.index([folder], rebuild=True)
    assert report.rebuilt and report.passages_embedded == 3 and len(counting.texts) == 3
    assert sorted(os.path.basename(s) for s in report.added) == sorted(TEXTS)
    assert (report.documents, report.passages) == (3, 3)


def test_summary_names_all_four_counts(folder, tmp_path, embedder):
    index_dir = str(tmp_path / "index")
    runner = CliRunner()
    first = runner.invoke(cli, ["index", str(folder), "--index", index_dir])
    assert first.exit_code == 0 and "3 added, 0 changed, 0 removed, 0 unchanged" in first.stdout
    (folder / "kettle.txt").write_text("Kettles switch off automatically when the water boils.", encoding="utf-8")
    (folder / "bikes.txt").rename(folder / "cycling.txt")
    second = runner.invoke(cli, ["index", str(folder), "--index", index_dir])
    assert second.exit_code == 0, second.output
    assert "3 files, 3 passages" in second.stdout
    assert "1 added, 1 changed, 1 removed, 1 unchanged" in second.stdout


def test_deleting_most_documents_frees_disk_space(tmp_path):
    from kb.store.database import Store, vector_key

    path = tmp_path / "kb.sqlite"
    store = Store(path, create=True)
    rng = np.random.default_rng(0)
    with store.transaction():
        for n in range(200):
            row = {"abspath": f"/d/{n}.txt", "source": f"{n}.txt", "kind": "text", "size": 1, "mtime_ns": 1,
                   "sha256": str(n)}
            passages = [{"text": f"word {n} {i} " * 100, "context": "", "char_start": 0, "char_end": 1000,
                         "line_start": 1, "line_end": 1, "page": None, "record": None,
                         "vector_key": vector_key(f"{n} {i}")} for i in range(5)]
            store.add_embeddings([p["vector_key"] for p in passages], rng.random((5, 384), dtype=np.float32), run=1)
            store.stage_document(row, {}, passages)
        store.publish_staged([f"/d/{n}.txt" for n in range(200)], {}, "now")
        store.unstage()
    store.close()
    full = path.stat().st_size

    store = Store(path, create=True)
    ids = sorted(d.id for d in store.documents().values())
    with store.transaction():
        keys = store.vector_keys_of(ids[:190])
        store.delete_documents(ids[:190])
        assert store.prune_embeddings(keys) == 950
    assert store.reclaim_space() is True
    assert store.counts() == (10, 50) and store.embedding_counts() == (50, 0)
    store.close()
    assert path.stat().st_size < full * 0.2


def test_a_long_lived_knowledge_base_answers_from_each_new_generation(folder, tmp_path, counting):
    """A server or script keeps one KnowledgeBase; a `kb index` elsewhere must reach it."""
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=counting).index([folder])
    reader = KnowledgeBase(index_dir, embedder=counting)
    assert "kettle" in reader.ask("How do I descale a kettle?", k=1)[0].text
    (folder / "kettle.txt").unlink()
    (folder / "bread.txt").write_text("Proof the sourdough overnight in the fridge for a sour loaf.", encoding="utf-8")
    KnowledgeBase(index_dir, embedder=counting).index([folder])  # another writer, another connection
    for mode in ("dense", "hybrid"):  # the vector index too, not only the SQLite tables
        assert "sourdough" in reader.ask("How long should bread dough rise?", k=1, mode=mode)[0].text
    assert not any("kettle" in h.source for h in reader.ask("kettle limescale vinegar", k=5, mode="lexical"))


def a_reader_and_one_pending_run(folder, tmp_path, counting):
    """A long-lived reader that has answered from an index, kettle.txt changed since, and
    run(): another writer's `kb index`, done the first time it is called (its report in runs)."""
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=counting).index([folder])
    reader = KnowledgeBase(index_dir, embedder=counting)
    assert "vinegar" in reader.ask("How do I descale a kettle?", k=1)[0].text
    (folder / "kettle.txt").write_text("Kettles switch off by themselves once the water boils.", encoding="utf-8")
    runs = []

    def run():
        if not runs:
            runs.append(KnowledgeBase(index_dir, embedder=counting).index([folder]))

    return reader, runs, run


def test_a_question_reads_one_generation_even_when_a_run_commits_during_it(folder, tmp_path, counting, monkeypatch):
    """The vector and lexical files of generation N and SQLite rows of N+1 never mix."""
    from kb.store.lexical import LexicalIndex

    reader, runs, run = a_reader_and_one_pending_run(folder, tmp_path, counting)
    search = LexicalIndex.search

    def search_while_a_run_commits(self, *args, **kwargs):
        run()
        return search(self, *args, **kwargs)

    monkeypatch.setattr(LexicalIndex, "search", search_while_a_run_commits)
    hits = reader.ask("How do I descale a kettle?", k=1)
    assert runs and runs[0].changed  # the run did commit, in the middle of the question
    assert hits and "vinegar" in hits[0].text  # answered wholly from the generation it started on
    assert "boils" in reader.ask("When does a kettle switch off?", k=1)[0].text  # the next one: the new one


def test_a_run_committing_between_the_reader_check_and_the_question_is_answered_from_it(
        folder, tmp_path, counting, monkeypatch):
    """The window a hammered server hit: a commit lands after the reader was found current
    and before the question's snapshot begins. The question must retry on the new
    generation, not fail (it once closed the connection its own snapshot still held)."""
    reader, runs, run = a_reader_and_one_pending_run(folder, tmp_path, counting)
    open_reader = KnowledgeBase._open_reader

    def open_then_a_run_commits(self):
        opened = open_reader(self)
        run()
        return opened

    monkeypatch.setattr(KnowledgeBase, "_open_reader", open_then_a_run_commits)
    hits = reader.ask("When does a kettle switch off?", k=1)
    assert runs and runs[0].changed
    assert hits and "boils" in hits[0].text  # the generation committed before the snapshot
    assert "boils" in reader.ask("When does a kettle switch off?", k=1)[0].text
