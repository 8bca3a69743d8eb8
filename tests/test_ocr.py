"""OCR: scanned pages and photographed text read by Tesseract, cited "OCR", cached by
content; without Tesseract, named as skipped with the command that installs it.

Images are rendered here with Pillow (its bundled FreeType font), so the tests need no
fixture files. CI installs Tesseract (.ci/run): there these tests fail, never skip,
when it is missing.
"""

from __future__ import annotations

import io
import json
import os

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import EXIT_SKIPPED_FILES
from kb.ingest.readers import ocr
from tests.test_formats import make_pdf

VALVE = ["The pressure relief valve must be replaced", "every five years by a certified engineer."]
LIMESCALE = ["Limescale dissolves in citric acid", "within four minutes at room temperature."]


def text_image(lines: list[str], *, size=(1400, 300), font_size=40, angle: float = 0.0):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for n, line in enumerate(lines):
        draw.text((60, 60 + n * int(font_size * 1.6)), line, font=font, fill=0)
    return image.rotate(angle, fillcolor=255, expand=True) if angle else image


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def scanned_pdf(*images) -> bytes:
    """A PDF whose pages are only pictures (as a scanner makes them): no text layer."""
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=150, save_all=True, append_images=list(images[1:]))
    return out.getvalue()


def text_then_scan() -> bytes:
    """Page 1 has a text layer, page 2 is a scan."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf(["Kettle manual, part one: filling the kettle."]))))
    writer.append(PdfReader(io.BytesIO(scanned_pdf(text_image(VALVE)))))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture
def tesseract():
    why = ocr.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"OCR tests must run in CI: {why}")
        pytest.skip(why)


@pytest.fixture
def no_tesseract(monkeypatch):
    """As on a machine without Tesseract."""
    monkeypatch.setenv("TESSERACT_CMD", "/nonexistent/tesseract")
    ocr._tesseract_version.cache_clear()
    yield
    ocr._tesseract_version.cache_clear()


def test_an_image_is_read_by_ocr(tesseract):
    [section] = ocr.read_image(png(text_image(VALVE)), "valve.png")
    assert section.text == "\n".join(VALVE) and section.location == "OCR" and section.page is None
    with pytest.raises(ValueError, match="no text found by OCR"):
        ocr.read_image(png(text_image([])), "blank.png")
    with pytest.raises(ValueError, match="too small to hold a line"):
        ocr.read_image(png(text_image([], size=(16, 16))), "icon.png")
    with pytest.raises(ValueError, match="unreadable image"):
        ocr.read_image(b"\x89PNG\r\n\x1a\n truncated", "broken.png")


def test_ocr_languages_must_be_installed(tesseract, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KB_OCR_LANGUAGES", "eng")  # restored after the CLI sets it
    (tmp_path / "note.png").write_bytes(png(text_image(VALVE)))
    result = CliRunner().invoke(cli, ["index", "note.png", "--index", "idx", "--ocr-languages", "eng+xyz"])
    assert result.exit_code == EXIT_SKIPPED_FILES
    assert result.stderr.splitlines()[0] == ("kb: skipped note.png: image: OCR language xyz is not installed: "
                                             "apt-get install tesseract-ocr-xyz")


def test_scans_are_indexed_found_cited_and_never_read_twice(tesseract, tmp_path, embedder, monkeypatch):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "manual.pdf").write_bytes(text_then_scan())
    (folder / "note.png").write_bytes(png(text_image(LIMESCALE, angle=2)))  # photographed slightly askew
    (folder / "pages.tiff").write_bytes(b"")
    frames = [text_image(["Page one of the fax: nothing to see."]), text_image(["The boiler code is 4417."])]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    (folder / "pages.tiff").write_bytes(buf.getvalue())
    calls = []
    real = ocr.require("pytesseract").image_to_data
    monkeypatch.setattr(ocr.require("pytesseract"), "image_to_data", lambda *a, **k: calls.append(1) or real(*a, **k))

    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    report = kb.index([folder])
    assert report.skipped == [] and report.documents == 3 and len(calls) == 4
    [hit] = kb.ask("how often must the pressure relief valve be replaced?", k=1)
    assert hit.source.endswith("manual.pdf") and (hit.page, hit.location) == (2, "OCR")
    assert hit.citation.endswith("(page 2, OCR)") and "five years" in hit.text
    [hit] = kb.ask("what dissolves limescale?", k=1)
    assert hit.source.endswith("note.png") and hit.citation.endswith("(OCR)") and "citric acid" in hit.text
    [hit] = kb.ask("what is the boiler code?", k=1)
    assert hit.source.endswith("pages.tiff") and hit.page == 2 and "4417" in hit.text
    # A rebuild reads every file again, but OCR text comes from the cache.
    kb.index([folder], rebuild=True)
    assert len(calls) == 4
    assert (tmp_path / "index" / "ocr-cache.sqlite").exists()


def test_without_tesseract_scans_are_named_with_the_install_command(no_tesseract, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.pdf").write_bytes(text_then_scan())
    (docs / "scan.pdf").write_bytes(scanned_pdf(text_image(VALVE), text_image(LIMESCALE)))
    (docs / "note.png").write_bytes(png(text_image(LIMESCALE)))
    (docs / "drawing.psd").write_bytes(b"8BPS")
    result = CliRunner().invoke(cli, ["index", "docs", "--index", "idx"])
    assert result.exit_code == EXIT_SKIPPED_FILES and "Traceback" not in result.stderr
    apt = "apt-get install tesseract-ocr tesseract-ocr-eng"
    assert result.stderr.splitlines() == [
        f"kb: skipped docs/note.png: image: OCR needs Tesseract: {apt}",
        f"kb: skipped docs/scan.pdf: scanned PDF (2 pages without a text layer); OCR needs Tesseract: {apt}",
        f"kb: skipped docs/manual.pdf (page 2): no text layer; OCR needs Tesseract: {apt}",
        f"kb: 1 .pdf file skipped: {apt}",
        f"kb: 1 .pdf page skipped: {apt}",
        f"kb: 1 .png file skipped: {apt}",
    ]
    assert "1 files, 1 passages" in result.stdout  # manual.pdf's text page

    # The holes stay visible after the run: kb info counts them, --skipped names them.
    info = json.loads(CliRunner().invoke(cli, ["info", "--index", "idx", "--json"]).stdout)
    assert info["skipped"] == {"needs an extra": 3, "unsupported type": 1}
    text = CliRunner().invoke(cli, ["info", "--index", "idx"]).stdout
    assert "skipped         3 needs an extra, 1 unsupported type  (kb info --skipped lists them)" in text
    listed = CliRunner().invoke(cli, ["info", "--index", "idx", "--skipped"]).stdout.splitlines()
    assert listed == ["docs/drawing.psd: unsupported file type",
                      f"docs/manual.pdf (page 2): no text layer; OCR needs Tesseract: {apt}",
                      f"docs/note.png: image: OCR needs Tesseract: {apt}",
                      f"docs/scan.pdf: scanned PDF (2 pages without a text layer); OCR needs Tesseract: {apt}"]
    # A second run reads nothing again (manual.pdf is unchanged) and keeps its skipped page on record.
    again = CliRunner().invoke(cli, ["index", "docs", "--index", "idx"])
    assert "1 unchanged" in again.stdout
    rows = json.loads(CliRunner().invoke(cli, ["info", "--index", "idx", "--skipped", "--json"]).stdout)
    assert {r["source"]: r["category"] for r in rows} == {
        "docs/drawing.psd": "unsupported type", "docs/manual.pdf (page 2)": "needs an extra",
        "docs/note.png": "needs an extra",
        "docs/scan.pdf": "needs an extra"}
