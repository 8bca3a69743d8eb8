"""Shared fixtures: one real model per test session, real FAISS, real files on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "corpus" / "junior-doctors-strike.txt"


def one_line_error(result, code, *phrases):
    """A CLI failure as users must see it: the exit code and one `kb: ` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kb: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """kb's per-user cache goes to a temp dir, so tests never touch ~/.cache."""
    os.environ["KB_CACHE_DIR"] = str(tmp_path_factory.mktemp("kb-cache"))
    yield


@pytest.fixture(scope="session")
def model():
    from kb.model import packaged_model

    return packaged_model()


class _Remembering:
    """The real model, remembering each text's vector: tests that index the same corpus
    again (to compare kinds of index, or kill and resume a run) embed it only once."""

    def __init__(self, inner):
        self.inner, self.model, self.dimension = inner, inner.model, inner.dimension
        self._seen: dict[str, object] = {}

    def embed(self, texts, *, progress=None):
        import numpy as np

        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if new:
            self._seen.update(zip(new, self.inner.embed(new)))
        if progress:
            progress(len(texts))
        return np.array([self._seen[t] for t in texts], dtype=np.float32).reshape(len(texts), self.dimension)


@pytest.fixture(scope="session")
def embedder(model):
    """The real packaged model, loaded once for the whole session."""
    from kb.embedding import load_embedder

    return _Remembering(load_embedder(model, for_indexing=True))


@pytest.fixture(scope="session")
def article_index(tmp_path_factory, embedder):
    """An index of the shipped article, built once; tests must not modify it."""
    from kb import KnowledgeBase

    work = tmp_path_factory.mktemp("article")
    corpus = work / "corpus"
    corpus.mkdir()
    shutil.copy(ARTICLE, corpus / ARTICLE.name)
    index_dir = work / "index"
    KnowledgeBase(index_dir).index([corpus])
    return index_dir


@pytest.fixture
def article_kb(article_index):
    from kb import KnowledgeBase

    return KnowledgeBase(article_index)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh directory, as a user would in their own folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KB_INDEX", raising=False)
    return tmp_path
