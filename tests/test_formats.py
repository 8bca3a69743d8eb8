"""Formats and messy folders: each reader on a small real file, and every way a file can be unusable.

Fixtures are generated here (a hand-written PDF, a python-docx document, HTML with
navigation and scripts), so the tests need nothing outside tests/.
"""

from __future__ import annotations

import io
import json
import os

import pytest
from click.testing import CliRunner

from kb.cli import cli
from kb.ingest.documents import discover
from kb.errors import EXIT_SKIPPED_FILES
from kb.ingest.readers.html import read_html
from kb.ingest.readers.pdf import read_pdf
from kb.ingest.readers.text import decode_text


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output + result.stderr
    return result


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
                       b" /Resources << /Font << /F1 3 0 R >> >> >>" % len(objects))
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join(f"{k} 0 R" for k in kids).encode(), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypted(pdf: bytes, user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


PAGE_HTML = """<!doctype html><html><head><title>Kettle  Guide</title>
<style>p { color: red }</style><script>var tracking = "SCRIPTTEXT";</script></head>
<body><nav><a href="/">NAVHOME</a> <a href="/docs">NAVDOCS</a></nav>
<header>SITEHEADER banner</header>
<aside>SIDEBAR links</aside>
<main><h1>Descaling</h1><p>Fill the kettle with <b>white vinegar</b>
and water, then boil it.</p>
<h2>Rinsing</h2><p>Rinse twice before making tea.</p>
<pre># not a heading
boil --twice</pre></main>
<footer>FOOTER copyright</footer></body></html>"""


# -- readers ------------------------------------------------------------------------
def test_html_keeps_main_text_and_drops_chrome():
    [section] = read_html(PAGE_HTML.encode(), "page.html")
    assert section.title == "Kettle Guide"
    assert "Fill the kettle with white vinegar and water, then boil it." in section.text
    for chrome in ("NAVHOME", "SCRIPTTEXT", "SITEHEADER", "SIDEBAR", "FOOTER", "color: red"):
        assert chrome not in section.text
    assert "# Descaling" in section.text and "## Rinsing" in section.text
    # Code keeps its lines, indented so a shell comment is not taken for a heading.
    assert "    # not a heading\n    boil --twice" in section.text


def test_html_without_main_uses_body_and_legacy_encoding():
    page = "<html><body><div>Crème brûlée recipe</div><div>second block</div></body></html>"
    [section] = read_html(page.encode("cp1252"), "legacy.htm")
    assert section.text == "Crème brûlée recipe\n\nsecond block"


def test_pdf_has_one_section_per_page():
    sections = read_pdf(make_pdf(["Cats sleep all day.", "Dogs (mostly) bark."]), "pets.pdf")
    assert [(s.page, s.text) for s in sections] == [(1, "Cats sleep all day."), (2, "Dogs (mostly) bark.")]


def test_pdf_with_empty_user_password_is_read():
    sections = read_pdf(encrypted(make_pdf(["Owner-only restrictions."]), ""), "open.pdf")
    assert sections[0].text == "Owner-only restrictions."


@pytest.mark.parametrize("data, reason", [
    (encrypted(make_pdf(["secret"]), "hunter2"), "encrypted PDF"),
    (b"%PDF-1.4\nthis is not really a pdf", "unreadable PDF"),
    (make_pdf(["truncated document text"])[:60], "unreadable PDF"),
])
def test_unusable_pdfs_give_a_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        read_pdf(data, "bad.pdf")


def test_docx_paragraphs_headings_and_tables():
    docx = pytest.importorskip("docx")
    from kb.ingest.readers.docx import read_docx

    document = docx.Document()
    document.core_properties.title = "Tea notes"
    document.add_heading("Brewing", level=1)
    document.add_paragraph("Steep green tea for two minutes.")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "green", "80C"
    out = io.BytesIO()
    document.save(out)
    [section] = read_docx(out.getvalue(), "tea.docx")
    assert section.title == "Tea notes"
    assert section.text == "# Brewing\n\nSteep green tea for two minutes.\n\ngreen | 80C"
    with pytest.raises(ValueError, match="unreadable .docx"):
        read_docx(b"PK\x03\x04 not a zip", "broken.docx")


@pytest.mark.parametrize("encoding, text", [
    ("latin-1", "Le café était fermé; naïve résumé à Noël."),
    ("cp1251", "Привет, это обычный текст в кодировке Windows."),
    ("utf-16", "UTF-16 with a byte order mark works too."),
])
def test_non_utf8_text_is_detected(encoding, text):
    assert decode_text(text.encode(encoding)) == text


def test_binary_data_is_refused():
    with pytest.raises(ValueError, match="binary"):
        decode_text(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="binary"):
        decode_text(b"ELF\x02\x01\x01" + b"\x00" * 64)


# -- a messy folder through `kb index` ------------------------------------------------
@pytest.fixture
def messy(in_tmp):
    docs = in_tmp / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.html").write_text(PAGE_HTML, encoding="utf-8")
    (docs / "pets.pdf").write_bytes(make_pdf(["Cats sleep sixteen hours a day.", "Parrots can live for eighty years."]))
    (docs / "locked.pdf").write_bytes(encrypted(make_pdf(["classified"]), "hunter2"))
    (docs / "latin.txt").write_bytes("Le café était fermé le dimanche matin.".encode("latin-1"))
    (docs / "utf8.txt").write_text("Line one.\r\nThe ferry leaves at noon “sharp”.\n", encoding="utf-8", newline="")
    (docs / "empty.md").write_bytes(b"")
    (docs / "blob.txt").write_bytes(os.urandom(64) + b"\x00" * 64)
    (docs / "huge.txt").write_bytes(b"big " * 300_000)  # 1.2 MB, over the cap below
    (docs / "drawing.psd").write_bytes(b"8BPS")
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "secret.txt").write_text("hidden folder text", encoding="utf-8")
    (docs / "sub" / "build").mkdir()
    (docs / "sub" / "build" / "out.txt").write_text("generated build output", encoding="utf-8")
    (docs / "sub" / "notes.log.txt").write_text("log noise", encoding="utf-8")
    (docs / "sub" / "keep.txt").write_text("Keep this note about ferries.", encoding="utf-8")
    (docs / "sub" / ".gitignore").write_text("build/\n*.log.txt\n", encoding="utf-8")
    (docs / ".kbignore").write_text("draft-*.md\n", encoding="utf-8")
    (docs / "draft-1.md").write_text("# Draft\nnot ready", encoding="utf-8")
    (docs / "sub" / "loop").symlink_to("..")  # a folder symlink loop
    (docs / "self.txt").symlink_to("self.txt")  # a file symlink loop
    os.mkfifo(docs / "pipe.txt")  # would block a naive reader forever
    return in_tmp


def test_messy_folder_indexes_what_it_can_and_names_the_rest(messy):
    result = run("index", "docs", "--json", "--max-file-size", "1MB")
    assert result.exit_code == EXIT_SKIPPED_FILES, result.stderr
    report = json.loads(result.stdout)
    skipped = {s["source"]: s["reason"] for s in report["skipped"]}
    assert set(report["added"]) == {"docs/guide.html", "docs/pets.pdf", "docs/latin.txt", "docs/utf8.txt",
                                    "docs/sub/keep.txt"}
    assert skipped.keys() == {"docs/locked.pdf", "docs/empty.md", "docs/blob.txt", "docs/huge.txt",
                              "docs/self.txt", "docs/pipe.txt"}
    assert "encrypted PDF" in skipped["docs/locked.pdf"]
    assert skipped["docs/empty.md"] == "empty file"
    assert skipped["docs/blob.txt"] == "binary file"
    assert "over the size cap of 1.0 MB" in skipped["docs/huge.txt"]
    assert "symbolic links" in skipped["docs/self.txt"]
    assert skipped["docs/pipe.txt"] == "not a regular file"
    assert report["ignored"] == 1  # drawing.psd
    assert report["excluded"] == 3  # sub/build/, sub/notes.log.txt, draft-1.md
    for source in skipped:
        assert f"kb: skipped {source}: " in result.stderr

    text = run("index", "docs", "--max-file-size", "1MB")
    assert text.exit_code == EXIT_SKIPPED_FILES
    assert "5 files" in text.stdout and "0 added, 0 changed, 0 removed, 5 unchanged" in text.stdout
    assert "6 skipped" in text.stdout and "3 excluded by ignore files" in text.stdout


def test_citations_carry_pages_titles_and_exact_utf8_offsets(messy):
    run("index", "docs", "--max-file-size", "1MB")
    hits = json.loads(run("ask", "How long do parrots live?", "--json", "-k", "1").stdout)["results"]
    assert hits[0]["source"] == "docs/pets.pdf" and hits[0]["page"] == 2
    assert "eighty years" in hits[0]["text"]

    hit = json.loads(run("ask", "When does the ferry leave?", "--json", "-k", "1").stdout)["results"][0]
    assert hit["source"] == "docs/utf8.txt"
    with open(hit["source"], encoding="utf-8") as f:
        assert f.read()[hit["char_start"]:hit["char_end"]] == hit["text"]

    hit = json.loads(run("ask", "descaling a kettle with vinegar", "--json", "-k", "1").stdout)["results"][0]
    assert hit["source"] == "docs/guide.html" and "Kettle Guide" in hit["context"]

    hit = json.loads(run("ask", "le café était fermé le dimanche", "--json", "-k", "1").stdout)["results"][0]
    assert hit["source"] == "docs/latin.txt" and "café était fermé" in hit["text"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_skipped(in_tmp):
    (in_tmp / "ok.txt").write_text("readable text about owls", encoding="utf-8")
    locked = in_tmp / "locked.txt"
    locked.write_text("private", encoding="utf-8")
    locked.chmod(0)
    result = run("index", str(in_tmp / "ok.txt"), str(locked))
    assert result.exit_code == EXIT_SKIPPED_FILES
    assert "locked.txt: Permission denied" in result.stderr


def test_ignore_rules_follow_gitignore_semantics(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".gitignore").write_text("*.md\n", encoding="utf-8")
    (tmp_path / "a" / ".kbignore").write_text("!keep.md\n", encoding="utf-8")  # deeper rule re-includes
    for name in ("top.md", "a/keep.md", "a/b/other.md", "a/b/plain.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    found = discover([tmp_path])
    assert sorted(os.path.relpath(f.abspath, tmp_path) for f in found.files) == ["a/b/plain.txt", "a/keep.md"]
    # A file named explicitly is indexed whatever the ignore files say.
    assert [f.abspath for f in discover([tmp_path / "top.md"]).files] == [str(tmp_path / "top.md")]


def test_size_cap_option(in_tmp):
    (in_tmp / "note.txt").write_text("x" * 3000, encoding="utf-8")
    bad = run("index", "note.txt", "--max-file-size", "lots")
    assert bad.exit_code == 2 and "--max-file-size" in bad.stderr
    capped = run("index", "note.txt", "--max-file-size", "2KB", "--json")
    assert capped.exit_code == EXIT_SKIPPED_FILES
    assert json.loads(capped.stdout)["skipped"][0]["reason"] == "3 KB is over the size cap of 2 KB (--max-file-size)"
