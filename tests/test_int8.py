"""The int8 variant: an opt-in recorded in the index, asked with the same, close to fp32."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from .conftest import ARTICLE, one_line_error
from .test_onnx import QUESTIONS, varied_texts


@pytest.fixture(scope="module")
def int8(embedder):
    """kb's int8 embedder, made from the session's fp32 export (no torch needed)."""
    from kb.embed.embedding import load_embedder
    from kb.embed.model import packaged_model

    return load_embedder(packaged_model("int8"), for_indexing=True)


@pytest.fixture(scope="module")
def int8_index(tmp_path_factory, int8):
    from kb.cli import cli

    work = tmp_path_factory.mktemp("int8")
    (work / "corpus").mkdir()
    shutil.copy(ARTICLE, work / "corpus" / ARTICLE.name)
    result = CliRunner().invoke(cli, ["index", str(work / "corpus"), "--index", str(work / "index"), "--int8"])
    assert result.exit_code == 0, result.output
    return work


def test_int8_vectors_are_close_to_sentence_transformers_and_alone_per_text(int8, embedder):
    from kb.embed.onnx_embedder import OnnxEmbedder

    assert isinstance(int8, OnnxEmbedder) and int8.model.variant == "int8"
    texts = varied_texts()[:120]
    got = int8.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    cosines = np.sum(got * embedder.embed(texts), axis=1)
    assert cosines.min() >= 0.95 and np.median(cosines) >= 0.985, (cosines.min(), np.median(cosines))
    # Its activations are scaled per run, so it runs each text alone: batch-mates change nothing.
    alone = np.vstack([int8.embed([t]) for t in reversed(texts)])[::-1]
    assert np.min(np.sum(got * alone, axis=1)) >= 0.99999


def test_the_index_records_the_variant_and_asks_with_it(int8_index, monkeypatch):
    import kb.knowledge_base as kbmod
    from kb import KnowledgeBase

    kb = KnowledgeBase(int8_index / "index")
    assert kb.info()["model"] == "sentence-transformers/all-MiniLM-L6-v2+int8"
    used = []
    real = kbmod.load_embedder
    monkeypatch.setattr(kbmod, "load_embedder", lambda model, **kw: used.append(model.variant) or real(model, **kw))
    hits = kb.ask(QUESTIONS[0], k=3, mode="dense")
    assert hits and used == ["int8"]
    # A later run without the option keeps the index's variant and re-embeds nothing.
    report = KnowledgeBase(int8_index / "index").index([int8_index / "corpus"])
    assert not report.rebuilt and report.unchanged == 1
    assert KnowledgeBase(int8_index / "index").info()["model"].endswith("+int8")


def test_int8_finds_what_fp32_finds_on_the_article(int8_index, article_index):
    from kb import KnowledgeBase

    fp32 = KnowledgeBase(article_index).ask_many(QUESTIONS, k=3, mode="dense", best_sentence=False)
    int8 = KnowledgeBase(int8_index / "index").ask_many(QUESTIONS, k=3, mode="dense", best_sentence=False)
    same_best = sum(a[0].char_start == b[0].char_start for a, b in zip(fp32, int8))
    assert same_best >= len(QUESTIONS) - 1, same_best


def test_switching_variant_re_embeds_everything(tmp_path, int8):
    from kb import KnowledgeBase

    (tmp_path / "corpus").mkdir()
    shutil.copy(ARTICLE, tmp_path / "corpus" / ARTICLE.name)
    kb = KnowledgeBase(tmp_path / "index")
    kb.index([tmp_path / "corpus"], variant="int8")
    report = kb.index([tmp_path / "corpus"], variant="fp32")
    assert report.rebuilt
    assert kb.info()["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_torch_cannot_stand_in_for_int8(int8_index, monkeypatch):
    from kb.cli import cli

    monkeypatch.setenv("KB_EMBEDDER", "torch")
    result = CliRunner().invoke(cli, ["ask", "strike", "--index", str(int8_index / "index")])
    one_line_error(result, 2, "KB_EMBEDDER=torch", "int8")


def test_a_damaged_int8_file_is_made_again_never_answered_by_fp32(tmp_path, monkeypatch, capsys, model, int8):
    """Quantised again from the fp32 export, with a note; the answers stay int8's."""
    from kb.embed.embedding import load_embedder
    from kb.embed.model import packaged_model
    from kb.embed.onnx_embedder import OnnxEmbedder, onnx_path

    exported = {"fp32": onnx_path(model).parent, "int8": int8.path.parent}
    monkeypatch.setenv("KB_CACHE_DIR", str(tmp_path / "cache"))
    for variant, folder in exported.items():
        shutil.copytree(folder, tmp_path / "cache" / "onnx" / model.weights_sha256 / variant)
    weights = onnx_path(packaged_model("int8")).with_name("model.onnx.data")
    weights.write_bytes(weights.read_bytes()[:1000])

    again = load_embedder(packaged_model("int8"))
    assert isinstance(again, OnnxEmbedder) and again.model.variant == "int8"
    notes = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(notes) == 1 and notes[0].startswith("kb: note: ") and "int8" in notes[0], notes
    texts = QUESTIONS[:4]
    assert np.min(np.sum(again.embed(texts) * int8.embed(texts), axis=1)) >= 0.9999


def test_int8_and_fp32_vectors_never_share_the_cache(tmp_path, int8, embedder):
    """The cache keys a vector on the variant too: switching back re-embeds, never reuses."""
    from kb import KnowledgeBase

    (tmp_path / "corpus").mkdir()
    shutil.copy(ARTICLE, tmp_path / "corpus" / ARTICLE.name)
    kb = KnowledgeBase(tmp_path / "index")
    first = kb.index([tmp_path / "corpus"])
    second = kb.index([tmp_path / "corpus"], variant="int8")
    assert second.rebuilt and second.passages_embedded == first.passages_embedded > 0
    assert second.passages_reused == 0


def test_an_int8_index_is_not_indexed_by_other_executors(int8_index, tmp_path):
    """Ray workers embed with fp32: an int8 index refuses them in one line."""
    from kb import KnowledgeBase
    from kb.errors import BadInput
    from kb.ingest.prepare import LocalExecutor

    index = tmp_path / "index"
    shutil.copytree(int8_index / "index", index)
    (tmp_path / "more.md").write_text("Another note about the junior doctors' contract.\n")
    with pytest.raises(BadInput, match="int8"):
        KnowledgeBase(index).index([int8_index / "corpus", tmp_path / "more.md"],
                                   executor=LocalExecutor(lambda: None, "x", 8))
    assert KnowledgeBase(index).ask("contract", k=1, mode="lexical")
