"""Long runs: a killed `kb index` keeps its work, passages are embedded once, memory stays bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb import KnowledgeBase

from .test_incremental import CountingEmbedder

KB = Path(sys.executable).parent / "kb"
TOPICS = ["kettles", "bicycles", "gardens", "ovens", "bread", "boats", "clocks", "lamps"]


def paragraph(topic: str, n: int) -> str:
    """About 120 word pieces: two never fit in one passage, so each is a passage."""
    return (f"Note {n} on {topic}: the {topic} manual, section {n}, says to check the {topic} "
            f"every {n + 2} days and to write down what changed since note {n - 1}. " +
            " ".join(f"Step {s} of note {n} for the {topic} is to look at part {s * 3 + n} and clean it."
                     for s in range(6)))


@pytest.fixture
def shelf(tmp_path):
    """Eight files of five paragraphs: 40 passages, so a small batch size means many batches."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    for topic in TOPICS:
        (folder / f"{topic}.txt").write_text("\n\n".join(paragraph(topic, n) for n in range(5)), encoding="utf-8")
    return folder


def contents(index_dir: Path) -> list[tuple]:
    """Every passage with its citation, and the top 3 for a few questions: what a user sees."""
    kb = KnowledgeBase(index_dir)
    hits = kb.ask_many([f"how often to check the {t}?" for t in TOPICS], k=3, best_sentence=False)
    import sqlite3

    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        rows = conn.execute("SELECT d.source, p.ordinal, p.text, p.char_start, p.char_end, p.line_start, p.line_end"
                            " FROM passages p JOIN documents d ON d.id = p.document_id ORDER BY 1, 2").fetchall()
    return [rows, [[(os.path.basename(h.source), h.char_start, round(h.score, 5)) for h in row] for row in hits]]


@pytest.mark.parametrize("kill_at", ["batch-committed:1", "batch-committed:3", "embedded"])
def test_a_killed_run_resumes_losing_at_most_one_batch(shelf, tmp_path, embedder, kill_at):
    index_dir = tmp_path / "index"
    env = {**os.environ, "KB_BATCH": "8", "KB_CRASH_AT": kill_at}
    killed = subprocess.run([str(KB), "index", str(shelf), "--index", str(index_dir)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr
    info = KnowledgeBase(index_dir).info()
    done = info["vector_cache"]["vectors"]  # committed by the killed run, not yet in the index
    assert info["passages"] == 0 and done >= 8

    counting = CountingEmbedder(embedder)
    report = KnowledgeBase(index_dir, embedder=counting).index([shelf])
    assert report.passages == 40 and len(counting.texts) == report.passages_embedded
    assert report.passages_embedded <= 40 - done + 8  # what was left, plus at most the batch in flight
    assert sorted(os.path.basename(s) for s in report.added) == sorted(f"{t}.txt" for t in TOPICS)

    clean = tmp_path / "clean"
    KnowledgeBase(clean, embedder=embedder).index([shelf])
    assert contents(index_dir) == contents(clean)
    assert KnowledgeBase(index_dir).info()["staged_documents"] == 0


def test_a_changed_paragraph_re_embeds_only_its_passage(shelf, tmp_path, embedder):
    counting = CountingEmbedder(embedder)
    kb = KnowledgeBase(tmp_path / "index", embedder=counting)
    kb.index([shelf])
    path = shelf / "clocks.txt"
    edited = paragraph("clocks", 2).replace("check the clocks", "wind the clocks on Sunday")
    path.write_text(path.read_text(encoding="utf-8").replace(paragraph("clocks", 2), edited), encoding="utf-8")
    counting.texts.clear()
    report = kb.index([shelf])
    assert report.changed == [str(path)] and counting.texts == [edited]
    assert report.passages_embedded == 1 and report.passages_reused == 4
    assert "Sunday" in kb.ask("when to wind the clocks?", k=1)[0].text


def test_a_moved_file_re_embeds_nothing(shelf, tmp_path, embedder):
    counting = CountingEmbedder(embedder)
    kb = KnowledgeBase(tmp_path / "index", embedder=counting)
    kb.index([shelf])
    (shelf / "archive").mkdir()
    (shelf / "boats.txt").rename(shelf / "archive" / "old-boats.txt")
    counting.texts.clear()
    report = kb.index([shelf])
    assert counting.texts == [] and report.passages_embedded == 0 and report.passages_reused == 5
    assert [os.path.basename(s) for s in report.added] == ["old-boats.txt"]
    assert [os.path.basename(s) for s in report.removed] == ["boats.txt"]
    assert kb.ask("how often to check the boats?", k=1)[0].source.endswith("archive/old-boats.txt")


def test_vectors_nothing_uses_are_pruned(shelf, tmp_path, embedder):
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    kb.index([shelf])
    assert kb.info()["vector_cache"] == {"vectors": 40, "unused": 0}
    (shelf / "lamps.txt").unlink()
    (shelf / "bread.txt").write_text("Bake bread at 220 degrees for forty minutes.", encoding="utf-8")
    kb.index([shelf])
    assert kb.info()["vector_cache"] == {"vectors": 31, "unused": 0}


def test_a_killed_rebuild_resumes_and_still_embeds_everything_once(shelf, tmp_path, embedder):
    """--rebuild distrusts vectors from before it started, not those it embedded itself."""
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=embedder).index([shelf])
    env = {**os.environ, "KB_BATCH": "8", "KB_CRASH_AT": "batch-committed:2"}
    killed = subprocess.run([str(KB), "index", str(shelf), "--rebuild", "--index", str(index_dir)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert KnowledgeBase(index_dir).info()["passages"] == 40  # the old index still answers
    counting = CountingEmbedder(embedder)
    report = KnowledgeBase(index_dir, embedder=counting).index([shelf], rebuild=True)
    assert report.rebuilt and 40 - 16 <= report.passages_embedded <= 40 - 16 + 8


# Peak RSS from /proc: VmHWM belongs to the child's own memory map, where getrusage's
# ru_maxrss survives exec and would report this (model-holding) test process's peak.
STANDIN_BUILD = """
import sys
import numpy as np
from kb import KnowledgeBase
from kb.embed.embedding import HashEmbedder
from kb.embed.model import packaged_model
report = KnowledgeBase(sys.argv[2], embedder=HashEmbedder(packaged_model())).index([sys.argv[1]])
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(report.passages, peak_kb // 1024)
"""


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    """Build ~900 and ~9,700 passages with the stand-in embedder: the run streams, so peak
    RSS grows by far less than the 11x more text (fixed costs such as tantivy's writer
    heap aside, what grows is the vectors: 9.7k x 384 x 4 bytes = 15 MB)."""
    peaks = {}
    for files in (40, 440):
        folder = tmp_path / f"docs{files}"
        folder.mkdir()
        for f in range(files):
            (folder / f"{f}.txt").write_text("\n\n".join(
                f"Paragraph {p} of file {f} talks about topic {f * 7 + p} in some detail, "
                f"with enough words to be a passage of its own, number {p}." for p in range(150)), encoding="utf-8")
        done = subprocess.run([sys.executable, "-c", STANDIN_BUILD, str(folder), str(tmp_path / f"index{files}")],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        passages, peak_mb = map(int, done.stdout.split())
        peaks[passages] = peak_mb
    (small, small_peak), (big, big_peak) = sorted(peaks.items())
    assert big >= 10 * small
    assert 0 < small_peak < 400, peaks  # the child's own memory, not this process's
    assert big_peak - small_peak < 120, peaks


def test_a_killed_runs_vectors_for_files_gone_since_are_pruned(shelf, tmp_path, embedder):
    index_dir = tmp_path / "index"
    env = {**os.environ, "KB_BATCH": "8", "KB_CRASH_AT": "batch-committed:2"}
    killed = subprocess.run([str(KB), "index", str(shelf), "--index", str(index_dir)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr
    for topic in ("bicycles", "boats", "bread"):  # staged or half embedded by the killed run
        (shelf / f"{topic}.txt").unlink()
    kb = KnowledgeBase(index_dir, embedder=embedder)
    assert kb.index([shelf]).passages == 25
    assert kb.info()["vector_cache"] == {"vectors": 25, "unused": 0}


def test_vectors_are_stored_without_overflow_pages(tmp_path, embedder):
    """8 KB pages: a 384-dimension vector fits in its row of the WITHOUT ROWID table (with
    4 KB pages each vector took an overflow page: 4.4 KB on disk instead of ~1.6 KB)."""
    import sqlite3

    folder = tmp_path / "docs"
    folder.mkdir()
    for f in range(40):
        (folder / f"{f}.txt").write_text("\n\n".join(
            f"Note {p} of file {f}: the number {f * 100 + p} and its own words." for p in range(300)),
            encoding="utf-8")
    from kb.embed.embedding import HashEmbedder
    from kb.embed.model import packaged_model

    kb = KnowledgeBase(tmp_path / "index", embedder=HashEmbedder(packaged_model()))
    report = kb.index([folder])
    conn = sqlite3.connect(tmp_path / "index" / "kb.sqlite")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192
    (vectors,) = conn.execute("SELECT count(*) FROM embeddings").fetchone()
    assert vectors == report.passages > 100
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    assert pages["embeddings"] / vectors < 2300, pages  # 2.0 KB: no overflow page (4.4 KB with 4 KB pages)
    # A passage's sentence vectors (kb.store.sentence_vectors: ~12 short sentences each here,
    # 4.8 KB) stay in their row too: at most a page per row, no overflow chain.
    (rows, largest) = conn.execute("SELECT COUNT(*), MAX(LENGTH(data)) FROM sentences").fetchone()
    assert rows > 0.9 * vectors and 4096 < largest < 8000 and pages["sentences"] <= 1.05 * rows * 8192, pages
