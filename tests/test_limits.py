"""Bounded work per file, and files that cannot be used are skipped, never fatal.

A file whose parse would blow up (HTML nested hundreds of thousands deep, a PDF that
extracts forever, a .docx zip bomb) is skipped with a reason and the run goes on (exit
7); so is a file named on the command line that cannot even be looked at.
"""

from __future__ import annotations

import io
import os
import subprocess

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import EXIT_SKIPPED_FILES
from kb.ingest.readers import docx as docx_reader
from kb.ingest.readers import pdf as pdf_reader
from kb.ingest.readers.html import MAX_DEPTH, nesting_depth, read_html

from .conftest import KB
from .test_formats import make_pdf

GOOD = "Bicycles need their chains oiled after rain.\n"


def nested(depth: int, tag: str = "div") -> str:
    return f"<html><body>{f'<{tag}>' * depth}deep text{f'</{tag}>' * depth}</body></html>"


@pytest.mark.parametrize("html, deepest", [
    (nested(600), 600),
    (nested(600, "span"), 600),
    ("<p>" * 5000 + "flat", 0),  # <p> closes the previous <p>: no nesting
    ("<ul>" + "<li>item" * 5000 + "</ul>", 1),
    ("<div>" * 3 + "<br><img src=x><hr>" * 2000 + "</div>" * 3, 3),
    ("<div><span>unclosed</div>" * 3000, 2),  # an end tag closes what was opened inside it
    ("<script>" + "<div>" * 5000 + "</script><div>x</div>", 1),  # script content is text
    ("<!--" + "<div>" * 5000 + "--><div>x</div>", 1),
    ("<svg>" + "<path d='M0 0'/>" * 5000 + "</svg>", 1),  # self-closing inside SVG
    ("<div/>" * 600, 600),  # but not in HTML: each <div/> opens a div
])
def test_nesting_depth_follows_the_parser(html, deepest):
    assert nesting_depth(html, limit=MAX_DEPTH * 2) == deepest


def test_deep_html_is_refused_with_a_reason():
    with pytest.raises(ValueError, match=f"HTML nested deeper than {MAX_DEPTH} levels"):
        read_html(nested(MAX_DEPTH + 1).encode(), "deep.html")
    assert "deep text" in read_html(nested(MAX_DEPTH - 10).encode(), "ok.html")[0].text


def test_index_skips_deep_html_and_goes_on(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "deep.html").write_text(nested(2000))
    (docs / "good.txt").write_text(GOOD)
    report = KnowledgeBase(tmp_path / "index", embedder=embedder).index([docs])
    assert [(os.path.basename(s.source), s.reason.split(" (")[0]) for s in report.skipped] == [
        ("deep.html", f"HTML nested deeper than {MAX_DEPTH} levels")]
    assert len(report.added) == 1


def test_kb_index_of_400000_nested_elements_finishes(tmp_path):
    """The file of the fault report (4.4 MB, under the size cap): a real `kb index`, with a
    timeout only so a regression fails instead of parsing for twenty minutes."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bomb.html").write_text(nested(400_000))
    (docs / "good.txt").write_text(GOOD)
    assert (docs / "bomb.html").stat().st_size > 4_000_000
    run = subprocess.run([str(KB), "index", str(docs), "--index", str(tmp_path / "index")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == EXIT_SKIPPED_FILES, run.stderr
    assert f"bomb.html: HTML nested deeper than {MAX_DEPTH} levels" in run.stderr
    assert "1 added" in run.stdout


def test_pdf_over_its_time_budget_is_refused(monkeypatch):
    monkeypatch.setattr(pdf_reader, "MAX_SECONDS", -1.0)
    with pytest.raises(ValueError, match="PDF text extraction took over"):
        pdf_reader.read_pdf(make_pdf(["Cats sleep all day.", "Dogs bark."]), "slow.pdf")


def make_docx(text: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_that_expands_past_the_limit_is_refused(monkeypatch):
    raw = make_docx("Kettles boil water.")
    assert "Kettles" in docx_reader.read_docx(raw, "ok.docx")[0].text
    from kb.ingest.readers import archive

    monkeypatch.setattr(archive, "MAX_UNPACKED", 1000)
    with pytest.raises(ValueError, match="unpacks to .* zip bomb"):
        docx_reader.read_docx(raw, "bomb.docx")


def test_an_unreadable_path_named_on_the_command_line_is_skipped(tmp_path, monkeypatch):
    """As a non-root user: `kb index secret/notes.txt ok.txt` where secret/ cannot be entered."""
    (tmp_path / "ok.txt").write_text(GOOD)
    locked = str(tmp_path / "secret" / "notes.txt")
    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["index", locked, "ok.txt", "--index", "index"])
    assert result.exit_code == EXIT_SKIPPED_FILES, result.output
    assert f"kb: skipped {locked}: Permission denied" in result.stderr
    assert "1 added" in result.stdout


def test_a_missing_path_is_still_bad_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["index", "nowhere.txt", "--index", "index"])
    assert result.exit_code == 2 and "no such file or directory: nowhere.txt" in result.stderr
