"""Crashes, concurrent readers, damaged index files and garbage input never lose the last good index."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from kb import KnowledgeBase
from kb.cli import cli
from kb.ingest.readers import READERS

from .conftest import one_line_error

KB = Path(sys.executable).parent / "kb"
QUESTION = "how do I descale a kettle?"
FIRST = {
    "kettle.txt": "Descale the kettle monthly with white vinegar so limescale does not build up.",
    "bikes.txt": "Oil the bicycle chain every few hundred kilometres and wipe off the excess.",
}


def run(*args, input=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output + result.stderr
    return result


def answers(index_dir, embedder, question=QUESTION):
    """(file name, text, stale) of every passage the index can return for the question."""
    return sorted((os.path.basename(h.source), h.text, h.stale)
                  for h in KnowledgeBase(index_dir, embedder=embedder).ask(question, k=10, mode="dense"))


@pytest.fixture
def built(tmp_path, embedder):
    """A complete index of FIRST, and the folder edited so the next run has work to do."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in FIRST.items():
        (docs / name).write_text(text, encoding="utf-8")
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=embedder).index([docs])
    (docs / "kettle.txt").write_text("Kettles switch off by themselves once the water boils.", encoding="utf-8")
    (docs / "bikes.txt").unlink()
    (docs / "ovens.txt").write_text("Clean an oven with baking soda paste left overnight.", encoding="utf-8")
    return docs, index_dir


# -- kill -9 ------------------------------------------------------------------------
# Where a real `kb index` process is killed: after a batch of vectors is committed, after
# embedding, mid-transaction (rows written, not committed), after the next generation's
# lexical folder and FAISS file are written but before the commit, and after the commit
# but before old files are cleaned up.
@pytest.mark.parametrize("point, committed", [("batch-committed", False), ("embedded", False), ("writing", False),
                                              ("derived-written", False), ("committed", True)])
def test_kill_9_leaves_a_usable_index(built, embedder, point, committed):
    docs, index_dir = built
    before = answers(index_dir, embedder)
    generation = KnowledgeBase(index_dir).info()["generation"]

    killed = subprocess.run([str(KB), "index", str(docs), "--index", str(index_dir)], capture_output=True, text=True,
                            env={**os.environ, "KB_CRASH_AT": point}, timeout=300)
    assert killed.returncode == -9, killed.stderr

    info = KnowledgeBase(index_dir).info()
    if committed:
        assert info["generation"] == generation + 1
        assert {name for name, *_ in answers(index_dir, embedder)} == {"kettle.txt", "ovens.txt"}
    else:  # the previous index, exactly as it was (its kettle passage now flagged stale)
        assert info["generation"] == generation and info["documents"] == 2
        assert answers(index_dir, embedder) == before
        assert ("kettle.txt", FIRST["kettle.txt"], True) in before

    # The next run completes the work and leaves no debris of the killed one.
    report = KnowledgeBase(index_dir, embedder=embedder).index([docs])
    assert (report.documents, report.passages) == (2, 2)
    info = KnowledgeBase(index_dir).info()
    derived = {p.name for p in index_dir.iterdir() if p.name.startswith(("vectors", "lexical", ".vectors"))}
    assert derived == {info["vector_index"]["file"], info["lexical_index"]["folder"]}
    assert info["staged_documents"] == 0 and info["vector_cache"] == {"vectors": 2, "unused": 0}
    assert {name for name, *_ in answers(index_dir, embedder)} == {"kettle.txt", "ovens.txt"}


def test_ask_during_an_index_run_answers_from_the_last_complete_index(built, embedder, monkeypatch):
    """A reader that asks while the writer's transaction is open sees the previous state."""
    from kb.store import vector_index

    docs, index_dir = built
    before = answers(index_dir, embedder)
    seen_mid_run = []
    write = vector_index.write

    def write_then_ask(index, path):
        write(index, path)
        seen_mid_run.append(answers(index_dir, embedder))  # a separate KnowledgeBase and connection

    monkeypatch.setattr(vector_index, "write", write_then_ask)
    KnowledgeBase(index_dir, embedder=embedder).index([docs])
    assert seen_mid_run == [before]
    assert {name for name, *_ in answers(index_dir, embedder)} == {"kettle.txt", "ovens.txt"}


# -- damaged index files ----------------------------------------------------------------
def test_truncated_vector_file_gives_one_line_and_index_repairs(article_index, tmp_path, monkeypatch):
    import kb.store.vector_index

    monkeypatch.setattr(kb.store.vector_index, "SMALL_MAX", 0)  # small indexes never open the file
    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    [faiss_file] = index_dir.glob("vectors.*.faiss")
    faiss_file.write_bytes(faiss_file.read_bytes()[: faiss_file.stat().st_size // 2])
    one_line_error(run("ask", "who is striking?", "--index", index_dir), 5, "damaged", "run `kb index`")


def test_truncated_database_gives_one_line_and_rebuild_recovers(article_index, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    db = index_dir / "kb.sqlite"
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    one_line_error(run("ask", "who is striking?", "--index", index_dir), 5, "kb index --rebuild")
    one_line_error(run("index", tmp_path / "nothing-here.txt", "--index", index_dir), 2)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("Junior doctors voted to strike over pay.", encoding="utf-8")
    one_line_error(run("index", corpus, "--index", index_dir), 5, "kb index --rebuild")
    rebuilt = run("index", corpus, "--index", index_dir, "--rebuild")
    assert rebuilt.exit_code == 0 and "rebuilt, 1 added" in rebuilt.stdout
    assert "note.txt" in run("ask", "who voted to strike?", "--index", index_dir).stdout


# -- fuzz: garbage through `kb index` and `kb ask` ---------------------------------------
def garbage_files(rng: random.Random, folder: Path, count: int) -> None:
    """Random bytes, odd names, huge lines and mixed encodings under every extension kb reads."""
    words = "alpha beta gamma δέλτα ёлка naïve 東京 ✓ \t tab".split(" ")
    names = ["plain", "with space", "ünïcödé", "-dash", "a.b.c", "emoji 🚀", "quote'\"", "semi;colon", "x" * 120]
    for n in range(count):
        kind = rng.choice(["bytes", "huge-line", "mixed", "empty", "nul", "pdf-ish", "html-ish", "control"])
        ext = rng.choice([".txt", ".md", ".html", ".htm", ".pdf", ".docx", ".jsonl", ".bin", ""])
        if kind == "bytes":
            data = rng.randbytes(rng.randrange(1, 5000))
        elif kind == "huge-line":
            data = " ".join(rng.choice(words) for _ in range(rng.randrange(1000, 4000))).encode("utf-8")
        elif kind == "mixed":
            data = b"\n".join(rng.choice(words).encode(rng.choice(["utf-8", "utf-16", "cp1252", "utf-8"]),
                                                         errors="replace") for _ in range(200))
        elif kind == "empty":
            data = rng.choice([b"", b"\n\n\n", b"   \t  "])
        elif kind == "nul":
            data = b"text" + b"\x00" * rng.randrange(1, 100) + b"more"
        elif kind == "pdf-ish":
            data = b"%PDF-1." + rng.randbytes(rng.randrange(0, 2000))
        elif kind == "html-ish":
            data = ("<html><body>" + "<div><p>" * rng.randrange(1, 400) + "deep text" + "</b>" * 50).encode()
        else:
            data = bytes(rng.randrange(0, 32) for _ in range(rng.randrange(1, 500)))
        sub = folder / rng.choice(["", "deep/er", ".hidden", "ß"])
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{rng.choice(names)}-{n}{ext}").write_bytes(data)


@pytest.mark.parametrize("seed", [7, 20260101])
def test_fuzz_garbage_never_tracebacks_or_loses_data(in_tmp, embedder, seed):
    rng = random.Random(seed)
    corpus = in_tmp / "corpus"
    corpus.mkdir()
    (corpus / "kettle.txt").write_text(FIRST["kettle.txt"], encoding="utf-8")
    first = run("index", "corpus")
    # A name that is not valid UTF-8, as old archives and other OSes leave behind.
    with open(os.path.join(os.fsencode(corpus), b"caf\xe9-\xff.txt"), "wb") as f:
        f.write(b"A file whose name is Latin-1 bytes.")
    assert first.exit_code == 0, first.stderr

    for round in range(2):
        garbage_files(rng, corpus / f"round{round}", 12)
        result = run("index", "corpus", "--json")
        assert result.exit_code in (0, 7), result.output
        assert result.exit_code == 0 or "kb: skipped" in result.stderr
        hits = KnowledgeBase("index", embedder=embedder).ask(QUESTION, k=3, mode="dense")
        assert any(h.source == "corpus/kettle.txt" and h.text == FIRST["kettle.txt"] for h in hits)

    questions = ["", " ", "\x00", "🚀" * 300, "x" * 5000, rng.randbytes(64).decode("latin-1"), "-k", "NEAR(",
                 '"unbalanced', "OR AND NOT *"]
    for question in questions:
        asked = run("ask", question, "--json")
        assert asked.exit_code in (0, 1, 2), asked.output
    batch = run("ask", "-", "--json", input="\n".join(q.replace("\n", " ") for q in questions))
    assert batch.exit_code in (0, 1, 2), batch.output


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.binary(max_size=3000), st.text(max_size=1000).map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.binary(max_size=500).map(lambda b: b"%PDF-1.4\n" + b), st.binary(max_size=500).map(
                          lambda b: b"PK\x03\x04" + b), st.text(max_size=500).map(lambda t: f"<html><p>{t}".encode())),
       extension=st.sampled_from(sorted(READERS)))
def test_readers_refuse_garbage_only_with_a_reason(data, extension):
    """Every reader either returns sections or raises ValueError: never another exception."""
    _, reader = READERS[extension]
    try:
        sections = reader(data, f"fuzz{extension}")
    except ValueError as e:
        assert str(e)
    else:
        assert all(isinstance(s.text, str) for s in sections)
