"""Every error path: one line on stderr, a documented exit code, no traceback."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from kb.cli import cli
from kb.errors import EXIT_SKIPPED_FILES

from .conftest import one_line_error


def run(*args, input=None):
    result = CliRunner().invoke(cli, list(args), input=input)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def test_ask_without_an_index(in_tmp):
    one_line_error(run("ask", "anything"), 3, "no index at index", "kb index")


def test_info_without_an_index(in_tmp):
    one_line_error(run("info", "--index", "nowhere"), 3, "no index at nowhere")


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question(article_index, question):
    one_line_error(run("ask", question, "--index", str(article_index)), 2, "question is empty")


def test_empty_stdin_batch(article_index):
    one_line_error(run("ask", "-", "--index", str(article_index), input="\n\n"), 2, "no questions")


def test_bad_k(article_index):
    result = run("ask", "q", "-k", "0", "--index", str(article_index))
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_index_missing_path(in_tmp):
    one_line_error(run("index", "no/such/dir"), 2, "no such file or directory: no/such/dir")
    assert not (in_tmp / "index" / "kb.sqlite").exists()


def test_index_built_by_another_model(article_index, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    with sqlite3.connect(index_dir / "kb.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '\"0000aaaa\"' WHERE key = 'weights_sha256'")
    one_line_error(run("ask", "who?", "--index", str(index_dir)), 4, "built with", "--rebuild")


def test_corrupt_database(tmp_path):
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "kb.sqlite").write_bytes(b"this is not a database" * 100)
    one_line_error(run("ask", "who?", "--index", str(index_dir)), 5, "unreadable", "--rebuild")
    one_line_error(run("info", "--index", str(index_dir)), 5, "unreadable")


def test_corrupt_vector_file(article_index, tmp_path, monkeypatch):
    import kb.store.vector_index

    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    for path in index_dir.glob("vectors.*.faiss"):
        path.write_bytes(b"garbage")
    # A small exact index is searched from SQLite's vectors and never opens the file:
    # the right answers, from the truth.
    assert run("ask", "who?", "--index", str(index_dir)).exit_code == 0
    monkeypatch.setattr(kb.store.vector_index, "SMALL_MAX", 0)  # as any index past 2,000 passages
    # Derived from SQLite: plain `kb index` writes it again, nothing re-embedded.
    one_line_error(run("ask", "who?", "--index", str(index_dir)), 5, "damaged", "run `kb index`")


def test_unreadable_file_is_skipped_and_named(in_tmp):
    docs = in_tmp / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("Kettles boil water quickly when full of water.", encoding="utf-8")
    (docs / "bad.txt").write_bytes(b"\xff\xfe\x00 not text \x00\x81")
    result = run("index", "docs")
    assert result.exit_code == EXIT_SKIPPED_FILES
    assert "kb: skipped docs/bad.txt:" in result.stderr
    assert "1 files" in result.stdout and "1 skipped" in result.stdout
    # the good file is indexed and answerable
    asked = run("ask", "boiling water", "--json")
    assert asked.exit_code == 0 and "good.txt" in asked.stdout


def test_explicit_unsupported_file_is_skipped(in_tmp):
    (in_tmp / "a.txt").write_text("Some text about tea.", encoding="utf-8")
    (in_tmp / "image.psd").write_bytes(b"8BPS....")
    result = run("index", "a.txt", "image.psd")
    assert result.exit_code == EXIT_SKIPPED_FILES
    assert "image.psd: unsupported file type" in result.stderr


def test_second_writer_is_refused(article_index, tmp_path):
    import fcntl
    import os

    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    fd = os.open(index_dir / ".kb.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        (tmp_path / "x.txt").write_text("hello there", encoding="utf-8")
        one_line_error(run("index", str(tmp_path / "x.txt"), "--index", str(index_dir)), 6, "another `kb index`")
    finally:
        os.close(fd)


def test_help_documents_exit_codes():
    result = run("--help")
    assert result.exit_code == 0
    for code in range(9):
        assert f"  {code}  " in result.output


def test_undecodable_bytes_in_questions_are_not_fatal(article_index, article_kb):
    result = run("ask", "-", "--json", "-k", "1", "--index", str(article_index),
                 input=b"\xff\xfe strike ballot\n\x01\x02\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # the control-character line is skipped like a blank one
    # What Python makes of bad bytes in argv: lone surrogates; and control characters alone.
    assert len(article_kb.ask("\udcff\udcfe strike ballot", k=1)) == 1
    with pytest.raises(Exception, match="question is empty"):
        article_kb.ask("\x00\x01\x7f", k=1)


def test_index_folder_that_cannot_be_created(in_tmp):
    (in_tmp / "afile").write_text("not a folder", encoding="utf-8")
    (in_tmp / "doc.txt").write_text("Some text about tea.", encoding="utf-8")
    one_line_error(run("index", "doc.txt", "--index", "afile"), 2, "cannot use afile as the index folder")
    one_line_error(run("index", "doc.txt", "--index", "afile/sub"), 2, "cannot use afile/sub")


def test_os_errors_on_the_index_folder_are_one_line(article_index, tmp_path, monkeypatch):
    import kb.store.vector_index

    def disk_full(index, path):
        raise OSError(28, "No space left on device", str(path))

    index_dir = tmp_path / "index"
    shutil.copytree(article_index, index_dir)
    (tmp_path / "new.txt").write_text("A new note about teapots.", encoding="utf-8")
    monkeypatch.setattr(kb.store.vector_index, "write", disk_full)
    one_line_error(run("index", str(tmp_path / "new.txt"), "--index", str(index_dir)), 8, "No space left on device")
    monkeypatch.undo()
    # the failed run changed nothing: the article is still indexed, the new file is not
    asked = run("ask", "teapots", "--json", "-k", "9", "--index", str(index_dir))
    sources = {r["source"].rsplit("/", 1)[-1] for r in json.loads(asked.stdout)["results"]}
    assert sources == {"junior-doctors-strike.txt"}
