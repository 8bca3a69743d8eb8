"""The ONNX backend gives sentence-transformers' vectors and answers, and refuses broken files."""

from __future__ import annotations

import os
import random
import re
import shutil
import time

import numpy as np
import pytest

from .conftest import ARTICLE

DATA_FILE = "model.onnx.data"

QUESTIONS = [
    "Why did junior doctors vote to strike?",
    "What did the BMA say about the contract?",
    "How will the strike affect patients?",
    "What is Jeremy Hunt's position?",
    "Are junior doctors militant?",
    "What happens to weekend working and pay?",
    "Who negotiates on behalf of the NHS employers?",
    "Will emergency care be provided during the walkout?",
    "what do doctors think of the media coverage",
    "government reputation damage",
]


def varied_texts() -> list[str]:
    """A few hundred texts unlike each other: sentences, shuffles, long ones, odd ones."""
    rng = random.Random(7)
    article = ARTICLE.read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", article) if len(s.strip()) > 3]
    words = article.split()
    texts = list(QUESTIONS) + sentences[:120]
    texts += [" ".join(rng.sample(words, rng.randint(3, 60))) for _ in range(150)]
    # Long ones: well past the model's 256 word pieces, so truncation is exercised.
    for _ in range(30):
        start = rng.randrange(len(words) - 400)
        texts.append(" ".join(words[start : start + rng.randint(260, 400)]))
    texts.append(article)
    texts += [
        "", " ", "a", "?", "42", "3.14159 2.71828 1.41421", "NHS " * 300,
        "def embed(texts):\n    return model.encode(texts)  # code, not prose",
        "Les médecins en formation font grève à Londres.", "Ärzte streiken: 24 Stunden, ab 08:00 Uhr.",
        "研修医がストライキを行った", "врачи бастуют", "🩺💉🏥 strike!!!", "e-mail: bma@example.org, tel. +44 20 7387 4499",
        "UPPERCASE HEADLINE ABOUT THE STRIKE", "x" * 3000, "word " * 600,
    ]
    return texts


@pytest.fixture(scope="module")
def reference(model):
    """sentence-transformers itself: what every backend must agree with."""
    from kb.embed.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model)


@pytest.fixture(scope="module")
def onnx(model, embedder):
    """The exported model as `kb` uses it (the session fixture exported it to the cache)."""
    from kb.embed.onnx_embedder import OnnxEmbedder

    assert isinstance(embedder.inner, OnnxEmbedder), "indexing should use the ONNX backend once exported"
    return OnnxEmbedder(model, recheck=True)


def test_onnx_vectors_match_sentence_transformers(model, reference, onnx):
    from kb.embed.model import TokenCounter

    texts = varied_texts()
    lengths = TokenCounter(model.tokenizer_file).count(texts)
    assert len(texts) >= 250
    assert sum(n > 300 for n in lengths) >= 30  # beyond 256, and beyond tokenizer.json's 128
    expected = reference.st_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    got = onnx.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(got * expected, axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= 0.9999, f"cosine {cosines[worst]:.6f} for {texts[worst][:60]!r}"


def test_order_and_batching_do_not_change_vectors(model, onnx):
    from kb.embed.onnx_embedder import OnnxEmbedder

    texts = varied_texts()[:80]
    whole = onnx.embed(texts)
    one_by_one = np.vstack([onnx.embed([t]) for t in reversed(texts)])[::-1]
    assert np.min(np.sum(whole * one_by_one, axis=1)) >= 0.99999
    # Batches spread over workers, or layers over intra-op threads: the same vectors.
    for settings in ({"threads": 1, "workers": 3, "batch_size": 7}, {"threads": 2, "workers": 1},
                     {"batch_size": 32, "tokens_per_run": None}):
        other = OnnxEmbedder(model, onnx.path, **settings).embed(texts)
        assert np.min(np.sum(whole * other, axis=1)) >= 0.99999, settings
    # A query embedder prepacks its weights at its second call: a new session, same vectors.
    lazy = OnnxEmbedder(model, onnx.path, prepack=None)
    sessions = []
    for _ in range(3):
        assert np.min(np.sum(whole * lazy.embed(texts), axis=1)) >= 0.99999
        sessions.append(lazy._session)
    assert sessions[0] is not sessions[1] is sessions[2]


def test_many_questions_get_the_same_kernels_from_the_first(model, onnx, article_index, monkeypatch):
    """Prepacked and unprepacked kernels sum in different orders (vectors differ by ~1e-7,
    enough to move a rounded score): a server or a stream of questions prepacks before its
    first answer, so a question's scores never depend on whether it came first."""
    import kb.knowledge_base
    import kb.embed.onnx_embedder
    from kb import KnowledgeBase
    from kb.embed.onnx_embedder import OnnxEmbedder

    texts = ["When is the first strike?", "Who is Jeremy Hunt?"]
    packed = OnnxEmbedder(model, onnx.path, prepack=True, threads=2, workers=1).embed(texts)
    lazy = OnnxEmbedder(model, onnx.path, prepack=None, threads=2, workers=1)
    lazy.expect_many()
    assert np.array_equal(lazy.embed(texts), packed)

    # The knowledge base asks for such a model, loaded prepacked (one session, not two).
    load_embedder = kb.knowledge_base.load_embedder
    asked = []
    monkeypatch.setattr(kb.knowledge_base, "load_embedder", lambda m, **kw: asked.append(kw) or load_embedder(m, **kw))
    KnowledgeBase(article_index, many_questions=True).ask(texts[0], k=1)
    KnowledgeBase(article_index).ask(texts[0], k=1)
    assert [kw["many_questions"] for kw in asked] == [True, False]
    sessions = []
    session = kb.embed.onnx_embedder._session
    monkeypatch.setattr(kb.embed.onnx_embedder, "_session", lambda *a, **kw: sessions.append(a) or session(*a, **kw))
    many = OnnxEmbedder(model, onnx.path, prepack=True, threads=2, workers=1)  # what many_questions loads
    assert np.array_equal(many.embed(texts), packed) and len(sessions) == 1
    from kb.embed.embedding import _prepack

    assert (_prepack(False, True), _prepack(True, False), _prepack(False, False)) == (True, True, None)


def test_progress_counts_every_text(model, onnx):
    from kb.embed.onnx_embedder import OnnxEmbedder

    for workers in (1, 2):
        seen: list[int] = []
        OnnxEmbedder(model, onnx.path, workers=workers).embed(varied_texts()[:70], progress=seen.append)
        assert sum(seen) == 70 and len(seen) > 1, (workers, seen)  # once per run of the model


def test_runs_hold_at_most_their_share_of_word_pieces(model, onnx):
    """Long texts go a few at a time (cache-sized runs), short ones many at a time."""
    from kb.embed.onnx_embedder import OnnxEmbedder

    embedder = OnnxEmbedder(model, onnx.path, workers=1, batch_size=64, tokens_per_run=1024)
    runs: list[int] = []
    long_texts = [" ".join(["word"] * 240)] * 12  # 242 word pieces with [CLS] and [SEP]
    embedder.embed(long_texts, progress=runs.append)
    assert runs == [4, 4, 4]
    runs.clear()
    embedder.embed(["a question?"] * 100, progress=runs.append)
    assert runs == [64, 36]


@pytest.fixture(scope="module")
def torch_hits(tmp_path_factory, reference):
    """Hits for QUESTIONS from an index built and asked by sentence-transformers alone."""
    from kb import KnowledgeBase

    work = tmp_path_factory.mktemp("torch-built")
    (work / "corpus").mkdir()
    shutil.copy(ARTICLE, work / "corpus" / ARTICLE.name)
    kb = KnowledgeBase(work / "index", embedder=reference)
    kb.index([work / "corpus"])
    return kb.ask_many(QUESTIONS, k=5)


def _spans(hits) -> list[list[tuple[int, int]]]:
    return [[(h.char_start, h.char_end) for h in row] for row in hits]


def test_top_k_identical_under_both_backends(article_index, onnx, torch_hits):
    """The ONNX-built index asked through ONNX gives sentence-transformers' hits."""
    from kb import KnowledgeBase

    onnx_hits = KnowledgeBase(article_index, embedder=onnx).ask_many(QUESTIONS, k=5)
    assert _spans(onnx_hits) == _spans(torch_hits)
    for row_torch, row_onnx in zip(torch_hits, onnx_hits):
        np.testing.assert_allclose([h.score for h in row_torch], [h.score for h in row_onnx], atol=1e-4)


def test_query_path_uses_onnx(model, article_kb):
    from kb.embed.embedding import load_embedder
    from kb.embed.onnx_embedder import OnnxEmbedder

    assert isinstance(load_embedder(model), OnnxEmbedder)
    assert article_kb.ask("Why did junior doctors vote to strike?", k=3)


def _truncate_graph(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncate_weights(path):
    weights = path.with_name(DATA_FILE)
    weights.write_bytes(weights.read_bytes()[:10_000_000])


def _perturb_weights(path):
    """A file that loads and runs but computes other vectors (as another model's would)."""
    import onnx as onnx_lib
    from onnx import numpy_helper

    graph = onnx_lib.load(str(path))
    biggest = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    noisy = weights + np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(weights.dtype)
    biggest.CopyFrom(numpy_helper.from_array(noisy, biggest.name))
    onnx_lib.save(graph, str(path))


@pytest.mark.parametrize("damage", [_truncate_graph, _truncate_weights, _perturb_weights],
                         ids=["truncated-graph", "truncated-weights", "wrong-weights"])
def test_broken_onnx_falls_back_with_a_note_and_right_answers(
    damage, tmp_path, monkeypatch, capsys, model, article_index, onnx, torch_hits
):
    from kb import KnowledgeBase
    from kb.embed.onnx_embedder import OnnxEmbedder, onnx_path

    monkeypatch.setenv("KB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KB_EMBEDDER", raising=False)
    broken = onnx_path(model)
    shutil.copytree(onnx.path.parent, broken.parent)
    damage(broken)

    hits = KnowledgeBase(article_index).ask_many(QUESTIONS, k=5)

    notes = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(notes) == 1 and notes[0].startswith("kb: note: ") and str(broken) in notes[0], notes
    assert _spans(hits) == _spans(torch_hits)
    # ...and the next process finds a good file again.
    assert OnnxEmbedder(model, recheck=True).embed(["x"]).shape == (1, 384)


def test_forced_onnx_backend_fails_loudly_instead_of_falling_back(tmp_path, monkeypatch, model):
    from kb.embed.embedding import load_embedder
    from kb.errors import KbError

    monkeypatch.setenv("KB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KB_EMBEDDER", "onnx")
    monkeypatch.setattr("kb.embed.onnx_embedder.export_onnx", _failing_export)
    with pytest.raises(KbError, match="ONNX embedder is unavailable: disk full"):
        load_embedder(model)


def _failing_export(st_model, dest):
    raise OSError("disk full")


def test_unknown_backend_is_one_clear_error(monkeypatch, article_index):
    from click.testing import CliRunner

    from kb.cli import cli

    monkeypatch.setenv("KB_EMBEDDER", "tensorflow")
    result = CliRunner().invoke(cli, ["ask", "anything", "--index", str(article_index)])
    assert result.exit_code == 2
    assert result.output == "kb: KB_EMBEDDER must be one of auto, onnx, torch, not 'tensorflow'\n"


def test_torch_backend_can_be_forced(monkeypatch, model):
    from kb.embed.embedding import SentenceTransformerEmbedder, load_embedder

    monkeypatch.setenv("KB_EMBEDDER", "torch")
    assert isinstance(load_embedder(model), SentenceTransformerEmbedder)


# -- the parity check is paid once per file, and a changed file is caught --------------
@pytest.fixture
def exported(tmp_path, monkeypatch, onnx):
    """A private copy of the exported files, old enough for a passed check to be recorded."""
    folder = tmp_path / "fp32"
    shutil.copytree(onnx.path.parent, folder, ignore=shutil.ignore_patterns("verified.json"))
    # The real margin is 1 s; 50 ms keeps the suite quick and the rule the same.
    monkeypatch.setattr("kb.embed.onnx_embedder.RACY_NS", 50_000_000)
    time.sleep(0.1)
    return folder / "model.onnx"


def _refuse_to_check(self, reference_file):
    raise AssertionError("the parity check ran although a record covers these files")


def test_a_recorded_check_is_not_run_again(model, exported, monkeypatch):
    from kb.embed.onnx_embedder import OnnxEmbedder

    assert OnnxEmbedder(model, exported).verified_by == "check"
    assert (exported.parent / "verified.json").is_file()
    monkeypatch.setattr(OnnxEmbedder, "_check_reference", _refuse_to_check)
    again = OnnxEmbedder(model, exported)
    assert again.verified_by == "record"
    assert again.embed(["Why did junior doctors vote to strike?"]).shape == (1, 384)


def test_a_check_of_just_written_files_is_not_recorded(model, onnx, tmp_path):
    """Files changed within a clock tick of their check could change again unseen."""
    from kb.embed.onnx_embedder import OnnxEmbedder

    folder = tmp_path / "fresh"
    shutil.copytree(onnx.path.parent, folder, ignore=shutil.ignore_patterns("verified.json"))
    assert OnnxEmbedder(model, folder / "model.onnx").verified_by == "check"
    assert not (folder / "verified.json").exists()
    assert OnnxEmbedder(model, folder / "model.onnx").verified_by == "check"


def _weights_of_one_layer(model_file) -> tuple[int, int]:
    """(offset, length) in the weights file of one encoder matrix, which every text passes
    through (the word-embedding table would not do: the probes use few of its rows)."""
    import onnx as onnx_lib

    graph = onnx_lib.load(str(model_file), load_external_data=False).graph
    external = [t for t in graph.initializer if t.data_location == onnx_lib.TensorProto.EXTERNAL]
    tensor = max((t for t in external if len(t.dims) == 2 and max(t.dims) < 10_000), key=lambda t: np.prod(t.dims))
    where = {entry.key: entry.value for entry in tensor.external_data}
    return int(where.get("offset", 0)), int(where["length"])


def _add_noise(data_file, offset: int, length: int) -> None:
    weights = np.memmap(data_file, dtype=np.float32, mode="r+", offset=offset, shape=(length // 4,))
    weights += np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(np.float32)
    weights.flush()
    del weights


def _keep_mtime(path, st) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_file_replaced_with_same_size_and_mtime_is_checked_and_refused(model, exported):
    from kb.embed.onnx_embedder import OnnxEmbedder, OnnxUnavailable

    OnnxEmbedder(model, exported)  # checked and recorded
    data = exported.with_name(DATA_FILE)
    before = data.stat()
    other = exported.with_name("other.tmp")
    shutil.copy(data, other)
    _add_noise(other, *_weights_of_one_layer(exported))
    _keep_mtime(other, before)
    os.replace(other, data)  # a new inode: size and mtime as before
    after = data.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino

    with pytest.raises(OnnxUnavailable, match="disagrees with sentence-transformers"):
        OnnxEmbedder(model, exported)


def test_a_file_damaged_in_place_with_same_size_and_mtime_is_checked_and_refused(model, exported):
    from kb.embed.onnx_embedder import OnnxEmbedder, OnnxUnavailable

    OnnxEmbedder(model, exported)
    data = exported.with_name(DATA_FILE)
    before = data.stat()
    _add_noise(data, *_weights_of_one_layer(exported))
    _keep_mtime(data, before)
    after = data.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns  # what gives it away: no program can set ctime

    with pytest.raises(OnnxUnavailable, match="disagrees with sentence-transformers"):
        OnnxEmbedder(model, exported)


def test_a_touched_file_or_another_onnxruntime_means_a_new_check(model, exported):
    """The record vouches for exact files under exact conditions, nothing looser."""
    import json

    from kb.embed.onnx_embedder import OnnxEmbedder

    OnnxEmbedder(model, exported)
    os.utime(exported)  # contents unchanged, timestamps not
    time.sleep(0.1)
    assert OnnxEmbedder(model, exported).verified_by == "check"
    assert OnnxEmbedder(model, exported).verified_by == "record"

    record_file = exported.with_name("verified.json")
    record = json.loads(record_file.read_text())
    record["facts"]["onnxruntime"] = "1.0.0"
    record_file.write_text(json.dumps(record))
    assert OnnxEmbedder(model, exported).verified_by == "check"


def test_export_saves_an_optimised_graph_with_its_weights_apart(onnx):
    """What makes a session cheap: no optimisation pass and no 90 MB protobuf to parse."""
    import onnx as onnx_lib

    graph = onnx_lib.load(str(onnx.path), load_external_data=False).graph
    assert onnx.path.stat().st_size < 1_000_000 < onnx.path.with_name(DATA_FILE).stat().st_size
    assert sum(node.op_type == "Attention" for node in graph.node) == 6  # one fused node per layer


def test_a_process_forked_after_a_question_can_ask_again(article_index, model):
    """A script asks, then forks workers that ask too (multiprocessing's default on Linux).
    A worker's second question replaces the inherited session with a prepacked one, and
    destroying an inherited session waits for threads only the parent has: it used to hang."""
    import multiprocessing

    from kb import KnowledgeBase
    from kb.embed.onnx_embedder import OnnxEmbedder

    # As `kb ask` loads it: two threads per run (a pool the child does not have), prepacking at call 2.
    kb = KnowledgeBase(article_index, embedder=OnnxEmbedder(model, threads=2, workers=1, prepack=None))
    question = "Why did junior doctors vote to strike?"
    first = [h.passage_id for h in kb.ask(question, k=3)]

    def worker(results):
        results.put([[h.passage_id for h in kb.ask(question, k=3)] for _ in range(2)])

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=worker, args=(results,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked worker hung")
    assert child.exitcode == 0
    assert results.get(timeout=5) == [first, first]
