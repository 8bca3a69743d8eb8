"""Only indexed content leaves the server, and the walk keeps to the folders it was given.

At serve time (/source, MCP resources) the bytes read must hash to what kb indexed: a
file swapped for a symlink to a private file, edited in place with its size and mtime
put back, or replaced by a FIFO is refused. At index time, symlinks that leave the
indexed folders are skipped (exit 7) unless --follow-symlinks; links inside them work.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import EXIT_SKIPPED_FILES, NotIndexed
from kb.serve.sources import document_text, find_indexed, source_view

from .conftest import running_server

NOTES = ("The kettle boils water for tea in about three minutes.\n"
         "Descaling it every month keeps the element efficient.\n")
SECRET = "PRIVATE: the launch code is 0000 and nobody may read it.\n"


@pytest.fixture
def indexed(tmp_path, embedder):
    """docs/notes.txt and docs/alias.txt (a link to it inside docs/), indexed; a private
    file of exactly the same size outside docs/."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text(NOTES)
    (docs / "alias.txt").symlink_to("notes.txt")
    private = tmp_path / "private.txt"
    private.write_text(SECRET[: len(NOTES)].ljust(len(NOTES), "!"))
    assert private.stat().st_size == (docs / "notes.txt").stat().st_size
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    kb.index([docs])
    return kb, docs, private


def view(kb, name):
    file = find_indexed(kb, name)
    return source_view(file, line_start=1), document_text(file)


def swap_for_symlink(path, target):
    path.unlink()
    path.symlink_to(target)


def edit_keeping_size_and_mtime(path, target):
    st = path.stat()
    path.write_text(target.read_text())  # same size: the private file was made so
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def swap_for_fifo(path, target):
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("attack", [swap_for_symlink, edit_keeping_size_and_mtime, swap_for_fifo],
                         ids=lambda f: f.__name__)
def test_a_changed_file_is_refused_not_served(indexed, attack):
    kb, docs, private = indexed
    source = find_indexed(kb, str(docs / "notes.txt")).source
    lines, text = view(kb, source)
    assert lines["lines"][0]["text"].startswith("The kettle") and text == NOTES  # served while unchanged
    attack(docs / "notes.txt", private)
    results: list = []

    def attempt():  # a FIFO must not hang the worker: refused without reading
        try:
            view(kb, source)
        except NotIndexed as e:
            results.append(e)
        except BaseException as e:  # noqa: BLE001 - reported below
            results.append(e)
        else:
            results.append("served")

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)
    assert results, "reading the file hung"
    assert isinstance(results[0], NotIndexed) and "changed since it was indexed" in str(results[0]), results


def test_a_symlink_inside_the_folder_is_served_when_it_holds_the_indexed_bytes(indexed):
    kb, docs, private = indexed
    alias = find_indexed(kb, str(docs / "alias.txt"))
    assert document_text(alias) == NOTES
    swap_for_symlink(docs / "alias.txt", private)  # now pointing outside: refused
    with pytest.raises(NotIndexed, match="changed since it was indexed"):
        document_text(alias)


def test_a_deleted_file_is_reported_gone(indexed):
    kb, docs, _ = indexed
    (docs / "notes.txt").unlink()
    with pytest.raises(NotIndexed, match="no longer on disk"):
        view(kb, str(docs / "notes.txt"))


def test_http_and_mcp_refuse_a_file_swapped_for_a_symlink(indexed):
    from .test_hostile import RawMcp

    kb, docs, private = indexed
    notes = docs / "notes.txt"
    swap_for_symlink(notes, private)
    with running_server(kb.index_dir) as server:
        status, _, body = server.request("/source?" + urllib.parse.urlencode({"source": str(notes),
                                                                              "line_start": 1}))
        assert status == 404 and b"changed since it was indexed" in body, body
        assert b"PRIVATE" not in body and json.loads(body)["exit_code"] == 2
    mcp = RawMcp(kb.index_dir)
    try:
        mcp.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                             "params": {"uri": notes.as_uri()}}))
        reply = mcp.reply(1)
        assert "error" in reply and "changed since it was indexed" in reply["error"]["message"], reply
        assert "PRIVATE" not in json.dumps(reply)
        mcp.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resources/read",
                             "params": {"uri": (docs / "alias.txt").as_uri()}}))
        assert "PRIVATE" not in json.dumps(mcp.reply(2))
    finally:
        mcp.close()


# -- the walk -------------------------------------------------------------------------------------
@pytest.fixture
def linked(tmp_path):
    """docs/ with a file, a link to a file outside, a link to a folder outside, a link
    to a file inside and a link to a folder inside."""
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    (docs / "sub").mkdir(parents=True)
    outside.mkdir()
    (docs / "own.txt").write_text("Bicycles need their chains oiled after rain.\n")
    (docs / "sub" / "deep.txt").write_text("Tyres lose pressure slowly over weeks.\n")
    (outside / "passwd.txt").write_text("root:x:0:0:the secret outside file\n")
    (docs / "passwd.txt").symlink_to(outside / "passwd.txt")
    (docs / "elsewhere").symlink_to(outside, target_is_directory=True)
    (docs / "own-link.txt").symlink_to("own.txt")
    (docs / "sub-link").symlink_to("sub", target_is_directory=True)
    return tmp_path, docs


def indexed_sources(index_dir) -> set[str]:
    return {os.path.basename(d["source"]) + (" via link" if "link" in d["source"] else "")
            for d in KnowledgeBase(index_dir).documents()}


def test_the_walk_skips_symlinks_that_leave_the_folder(linked, monkeypatch):
    root, docs = linked
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["index", "docs", "--index", "index"])
    assert result.exit_code == EXIT_SKIPPED_FILES, result.output
    skipped = sorted(line for line in result.stderr.splitlines() if line.startswith("kb: skipped"))
    assert len(skipped) == 2, result.stderr
    assert skipped[0].startswith(f"kb: skipped {os.path.join('docs', 'elsewhere')}{os.sep}: symbolic link to ")
    assert skipped[1].startswith(f"kb: skipped {os.path.join('docs', 'passwd.txt')}: symbolic link to ")
    assert "--follow-symlinks" in skipped[1]
    assert indexed_sources(root / "index") == {"own.txt", "deep.txt", "own-link.txt via link"}
    assert "secret outside" not in result.stdout
    # Name the outside folder too, and the links into it stay inside what is indexed.
    again = CliRunner().invoke(cli, ["index", "docs", "outside", "--index", "index"])
    assert again.exit_code == 0, again.output
    sources = {d["source"] for d in KnowledgeBase(root / "index").documents()}
    assert {os.path.join("outside", "passwd.txt"), os.path.join("docs", "passwd.txt"),
            os.path.join("docs", "elsewhere", "passwd.txt")} <= sources


def test_follow_symlinks_follows_them(linked, monkeypatch):
    root, docs = linked
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["index", "docs", "--index", "index", "--follow-symlinks"])
    assert result.exit_code == 0, result.output
    sources = {d["source"] for d in KnowledgeBase(root / "index").documents()}
    assert os.path.join("docs", "passwd.txt") in sources
    assert os.path.join("docs", "elsewhere", "passwd.txt") in sources


def test_a_symlink_named_on_the_command_line_is_indexed(linked, monkeypatch):
    root, docs = linked
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["index", os.path.join("docs", "passwd.txt"), "--index", "index"])
    assert result.exit_code == 0, result.output
