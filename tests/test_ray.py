"""`kb index --ray`: a real two-node Ray cluster (tests/conftest.py) builds the same index
as a local run, survives a killed worker, and resumes after a killed driver."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import BadInput, KbError

from .conftest import one_line_error
from .test_incremental import CountingEmbedder
from .test_resume import TOPICS, paragraph

KB = Path(sys.executable).parent / "kb"
QUESTIONS = [f"how often to check the {t}?" for t in TOPICS] + ["what does the guide say about kettles?"]


@pytest.fixture
def shelf(tmp_path):
    """Eight text files of five paragraphs (40 passages), a Markdown file with headings, a
    file repeating another's paragraph (one key, two documents) and one kb cannot read."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    for topic in TOPICS:
        (folder / f"{topic}.txt").write_text("\n\n".join(paragraph(topic, n) for n in range(5)), encoding="utf-8")
    (folder / "guide.md").write_text("# Guide\n\n## Kettles\n\n" + paragraph("kettles", 9) +
                                     "\n\n## Ovens\n\n" + paragraph("ovens", 9), encoding="utf-8")
    (folder / "copy.txt").write_text(paragraph("lamps", 3), encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF")
    return folder


def ray_executor(**options):
    from kb.ingest.prepare_ray import RayExecutor

    return RayExecutor(**{"workers": 2, "local_below": 0, **options})


def rows(index_dir: Path) -> list[tuple]:
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        return conn.execute(
            "SELECT d.source, d.sha256, p.ordinal, p.text, p.context, p.char_start, p.char_end, p.line_start,"
            " p.line_end, p.page, p.record, p.vector_key FROM passages p JOIN documents d ON d.id = p.document_id"
            " ORDER BY 1, 3").fetchall()


def vectors(index_dir: Path) -> dict[bytes, np.ndarray]:
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        return {k: np.frombuffer(v, dtype=np.float32) for k, v in conn.execute("SELECT key, vector FROM embeddings")}


def answers(index_dir: Path, mode: str = "hybrid") -> list[list[tuple]]:
    """Each question's top 5; hits with equal scores (copy.txt repeats a passage of
    lamps.txt) in citation order, as their rank depends on the order files were published."""
    hits = KnowledgeBase(index_dir).ask_many(QUESTIONS, k=5, mode=mode, best_sentence=False)
    return [sorted(((h.source, h.char_start, h.char_end, h.score) for h in row),
                   key=lambda h: (-round(h[3], 4), h[:3])) for row in hits]


def assert_same_index(index_dir: Path, reference: Path, mode: str = "hybrid") -> None:
    """Same passages (text, offsets, citations, vector keys), vectors at cosine >= 0.9999,
    and the same top 5 for every question."""
    assert rows(index_dir) == rows(reference)
    ours, theirs = vectors(index_dir), vectors(reference)
    assert ours.keys() == theirs.keys()
    assert min(float(ours[k] @ theirs[k]) for k in ours) >= 0.9999
    for got, expected in zip(answers(index_dir, mode), answers(reference, mode)):
        assert [h[:3] for h in got] == [h[:3] for h in expected]
        assert np.allclose([h[3] for h in got], [h[3] for h in expected], atol=1e-4)


def test_a_ray_build_equals_a_local_build(shelf, tmp_path, embedder, ray_cluster):
    local = KnowledgeBase(tmp_path / "local", embedder=embedder).index([shelf])
    executor = ray_executor()
    report = KnowledgeBase(tmp_path / "ray").index([shelf], executor=executor)
    assert executor.used_ray and len({w["node"] for w in executor.identities}) == 2  # both nodes worked
    assert (report.documents, report.passages) == (local.documents, local.passages) == (10, 43)
    assert sorted(report.added) == sorted(local.added)
    assert [s.source for s in report.skipped] == [s.source for s in local.skipped] == [str(shelf / "broken.pdf")]
    assert report.passages_embedded == 42  # copy.txt's paragraph is lamps.txt's: one vector for both
    assert_same_index(tmp_path / "ray", tmp_path / "local")

    # The index is an ordinary kb index: a local re-index finds nothing to do.
    counting = CountingEmbedder(embedder)
    again = KnowledgeBase(tmp_path / "ray", embedder=counting).index([shelf])
    assert counting.texts == [] and again.unchanged == 10 and not again.added + again.changed


def test_workers_can_read_shared_storage_instead_of_being_sent_bytes(shelf, tmp_path, embedder, ray_cluster):
    KnowledgeBase(tmp_path / "local", embedder=embedder).index([shelf])
    KnowledgeBase(tmp_path / "ray").index([shelf], executor=ray_executor(ship_bytes=False))
    assert_same_index(tmp_path / "ray", tmp_path / "local")


def test_a_ray_re_index_embeds_only_edits(shelf, tmp_path, embedder, ray_cluster):
    """Touched, moved and edited files on a cluster: the same reuse as a local run, and the
    same index as a local re-index. Answers are compared in dense mode: after deletions,
    BM25 statistics depend on the lexical index's segment history, which differs with the
    order documents were published (hybrid scores moved by ~0.0015 between two local-vs-Ray
    runs), not on Ray."""
    kb = KnowledgeBase(tmp_path / "ray")
    kb.index([shelf], executor=ray_executor())
    local = KnowledgeBase(tmp_path / "local", embedder=embedder)
    local.index([shelf])
    os.utime(shelf / "ovens.txt", ns=(1, 1))  # same bytes, new mtime
    (shelf / "boats.txt").rename(shelf / "ships.txt")
    clocks = shelf / "clocks.txt"
    edited = paragraph("clocks", 2).replace("check the clocks", "wind the clocks on Sunday")
    clocks.write_text(clocks.read_text(encoding="utf-8").replace(paragraph("clocks", 2), edited), encoding="utf-8")
    report = kb.index([shelf], executor=ray_executor())
    assert report.passages_embedded == 1 and report.passages_reused == 5 + 4
    assert report.changed == [str(clocks)] and report.added == [str(shelf / "ships.txt")]
    assert report.unchanged == 8 and report.removed == [str(shelf / "boats.txt")]
    assert "Sunday" in kb.ask("when to wind the clocks?", k=1)[0].text
    local.index([shelf])
    assert_same_index(tmp_path / "ray", tmp_path / "local", mode="dense")


def test_killing_a_worker_mid_run_still_completes_the_build(shelf, tmp_path, embedder, ray_cluster, monkeypatch):
    monkeypatch.setenv("KB_BATCH", "8")
    executor = ray_executor(texts_per_call=4)  # many small calls: the kill lands mid-call
    killed = []

    def kill_a_worker(progress):
        if not killed and progress.embedded and progress.files_done < progress.files_total:
            pid = executor.identities[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, progress.files_done))

    report = KnowledgeBase(tmp_path / "ray").index([shelf], executor=executor, progress=kill_a_worker)
    assert killed, "the run ended before a worker could be killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0][0], 0)  # it really is gone
    assert report.passages == 43 and report.passages_embedded >= 42
    KnowledgeBase(tmp_path / "local", embedder=embedder).index([shelf])
    assert_same_index(tmp_path / "ray", tmp_path / "local")


def test_a_killed_driver_resumes_embedding_only_what_was_left(shelf, tmp_path, embedder, ray_cluster):
    """`kb index --ray-address` killed after two batches: the next run embeds what was
    left, plus at most the batch in flight, and builds the same index."""
    index_dir = tmp_path / "ray"
    env = {**os.environ, "KB_BATCH": "8", "KB_CRASH_AT": "batch-committed:2", "KB_RAY_LOCAL_BELOW": "0"}
    killed = subprocess.run([str(KB), "index", str(shelf), "--index", str(index_dir),
                             "--ray-address", ray_cluster.address], capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    info = KnowledgeBase(index_dir).info()
    done = info["vector_cache"]["vectors"]
    assert info["passages"] == 0 and done >= 8

    report = KnowledgeBase(index_dir).index([shelf], executor=ray_executor())
    assert report.passages == 43
    assert report.passages_embedded <= 42 - done + 8
    KnowledgeBase(tmp_path / "local", embedder=embedder).index([shelf])
    assert_same_index(index_dir, tmp_path / "local")
    assert KnowledgeBase(index_dir).info()["staged_documents"] == 0


def test_more_workers_than_the_cluster_holds_is_an_error(shelf, tmp_path, ray_cluster):
    with pytest.raises(BadInput, match="has 2 CPUs"):
        KnowledgeBase(tmp_path / "ray").index([shelf], executor=ray_executor(workers=3))


# -- the command line ------------------------------------------------------------------------
def test_ray_is_a_flag_so_a_path_after_it_is_a_path(shelf, in_tmp):
    """`kb index --ray DIR` indexes DIR; this small a run stays local and says so."""
    result = CliRunner().invoke(cli, ["index", "--ray", str(shelf), "--json"])
    assert result.exit_code == 7, result.output  # broken.pdf is skipped
    assert "small run: indexing here, not on Ray" in result.stderr
    assert KnowledgeBase(in_tmp / "index").info()["documents"] == 10


def test_ray_workers_alone_is_an_error(shelf, in_tmp):
    one_line_error(CliRunner().invoke(cli, ["index", str(shelf), "--ray-workers", "2"]), 2, "needs --ray")


def test_an_unreachable_cluster_is_one_line(shelf, in_tmp, monkeypatch):
    monkeypatch.setenv("KB_RAY_LOCAL_BELOW", "0")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        result = CliRunner().invoke(cli, ["index", str(shelf), "--ray-address", address])
        one_line_error(result, 2, "cannot reach the Ray cluster", address)
    one_line_error(CliRunner().invoke(cli, ["index", str(shelf), "--ray-address", "no-port"]), 2, "cannot read")
    assert not (in_tmp / "index" / "kb.sqlite").exists() or KnowledgeBase(in_tmp / "index").info()["passages"] == 0


def test_without_ray_installed_ray_is_one_line(shelf, in_tmp, monkeypatch):
    monkeypatch.setenv("KB_RAY_LOCAL_BELOW", "0")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    one_line_error(CliRunner().invoke(cli, ["index", str(shelf), "--ray"]), 2, "pip install 'kb[ray]'")


# -- workers' embedders ---------------------------------------------------------------------
def test_a_gpu_worker_must_agree_with_onnx(embedder):
    """What a GPU worker checks before embedding: its vectors for the probes against ONNX's."""
    from kb.ingest.ray_worker import check_agrees

    class Off:
        def embed(self, texts):
            vectors = embedder.embed(texts)
            vectors[:, 0] += 0.05
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    assert check_agrees(embedder, embedder) >= 0.9999
    with pytest.raises(KbError, match="disagree with the ONNX embedder"):
        check_agrees(Off(), embedder)


def test_a_worker_embedder_uses_the_threads_it_was_given():
    from kb.ingest.ray_worker import worker_embedder

    one = worker_embedder(1, gpu=False)
    assert one._session.get_session_options().intra_op_num_threads == 1
