"""Shared fixtures: one real model per test session, real FAISS, real files on disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
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
    from kb.embed.model import packaged_model

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

    def embed_with_sentences(self, texts, spans, *, progress=None):
        """The vectors and the sentence vectors pooled in the same run (kb.ingest.prepare)."""
        import numpy as np

        keys = [(t, tuple(map(tuple, s))) for t, s in zip(texts, spans)]
        new = [k for k in dict.fromkeys(keys) if k not in self._seen]
        if new:
            vectors, sentences = self.inner.embed_with_sentences([t for t, _ in new], [list(s) for _, s in new])
            self._seen.update(zip(new, zip(vectors, sentences)))
        if progress:
            progress(len(texts))
        vectors = np.array([self._seen[k][0] for k in keys], dtype=np.float32).reshape(len(texts), self.dimension)
        return vectors, [self._seen[k][1] for k in keys]


@pytest.fixture(scope="session")
def embedder(model):
    """The real packaged model, loaded once for the whole session."""
    from kb.embed.embedding import load_embedder

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


# -- a real `kb serve` -------------------------------------------------------------------------
KB = Path(sys.executable).parent / "kb"


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def request(self, path: str, *, method: str = "GET", body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one real HTTP request; errors are answers too."""
        req = urllib.request.Request(self.url.rstrip("/") + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str, **kwargs) -> tuple[int, object]:
        status, _, body = self.request(path, **kwargs)
        return status, json.loads(body)


@contextmanager
def running_server(index_dir, *args: str, env: dict | None = None):
    """`kb serve` as a real process on a free port, until the block ends.

    Port 0 lets the server pick a free port and announce it: no race for ports.
    """
    process = subprocess.Popen([str(KB), "serve", "--index", str(index_dir), "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    try:
        ready = _read_line(process, timeout=180)
        match = re.search(r"at (http://\S+?/)", ready or "")
        if not match:
            process.kill()
            raise AssertionError(f"kb serve did not start: {ready!r} {process.stderr.read()[-2000:]}")
        yield Server(match.group(1), process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read_line(process: subprocess.Popen, timeout: float) -> str | None:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else None


@pytest.fixture(scope="session")
def server(article_index):
    """One `kb serve` over the article index for the whole session; tests must not modify it."""
    with running_server(article_index) as running:
        yield running


# -- a real Ray cluster ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster():
    """Two local Ray nodes of one CPU each, shared by every Ray test, with this process
    connected. Under CI a missing `ray` fails these tests instead of skipping them."""
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed, and CI must run the Ray tests: pip install -e '.[test,ray]'")
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    import logging
    import secrets

    # A token for this session's cluster, inherited by its nodes and by `kb` subprocesses:
    # nothing is written to ~/.ray.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    from kb.ingest.prepare_ray import _reload_ray_config

    _reload_ray_config()
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
