"""Office documents and e-books: real files made with the real writing libraries
(python-pptx, openpyxl, odfpy, a hand-zipped EPUB, RTF text), each indexed, found by a
question, and cited by slide, sheet and rows, or chapter; broken ones skipped with a reason."""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import EXIT_SKIPPED_FILES
from kb.ingest.readers import READERS
from tests.office_files import epub_file, odp_file, ods_file, odt_file, pptx_file, rtf_file, xlsx_file, zip_bomb

SLIDES = [
    ("Welcome", "Agenda for the kettle team offsite", ""),
    ("Sales", "Kettle sales grew in the northern region", "Mention the Leeds shop"),
    ("Descaling", "Citric acid removes limescale in four minutes",
     "Speaker note: the vinegar trial took fifteen minutes and left a smell"),
]
BUDGET = [["item", "cost", "owner"]] + [[f"mug batch {n}", 10 + n, "Sam"] for n in range(60)] + [
    ["replacement thermostat for the boiler", 240, "Priya"]]


@pytest.fixture(scope="module")
def office_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("office")
    files = {
        "deck.pptx": pptx_file(SLIDES),
        "budget.xlsx": xlsx_file({"Summary": [["total", 900]], "Budget": BUDGET}),
        "report.odt": odt_file([(1, "Annual report"), (0, "The year went well."), (2, "Staff"),
                                (0, "Two apprentices joined the repair workshop in March.")]),
        "stock.ods": ods_file({"Shelves": [["shelf", "contents"], ["A1", "teapots"],
                                           ["B7", "copper kettles awaiting polish"]]}),
        "talk.odp": odp_file([("Opening", "Hello everyone", ""),
                              ("History", "The company began as a tinsmith in 1887", "Show the old photo")]),
        "guide.epub": epub_file("The Tea Guide", [
            ("Leaves", "Green tea leaves are steamed or pan-fired soon after picking."),
            ("Water", "Boiling water scorches green tea; let it cool to eighty degrees."),
        ]),
        "letter.rtf": rtf_file(["Dear customer,", "Your caf\u00e9 order of oolong ships on Tuesday."]),
    }
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


@pytest.fixture(scope="module")
def office_kb(office_folder, tmp_path_factory, embedder):
    kb = KnowledgeBase(tmp_path_factory.mktemp("office-index"), embedder=embedder)
    report = kb.index([office_folder])
    assert report.skipped == [] and report.documents == 7
    return kb


def test_pptx_one_section_per_slide_with_notes():
    sections = READERS[".pptx"][1](pptx_file(SLIDES), "deck.pptx")
    assert [(s.title, s.location) for s in sections] == [("Welcome", "slide 1"), ("Sales", "slide 2"),
                                                         ("Descaling", "slide 3")]
    assert sections[2].text == ("Citric acid removes limescale in four minutes\n\n"
                                "Notes: Speaker note: the vinegar trial took fifteen minutes and left a smell")
    # Lines count on through the deck, so a citation's lines name one place in it.
    assert [s.first_line for s in sections] == [1, 2, 5]


def test_xlsx_with_a_false_declared_size_reads_only_its_rows():
    raw = xlsx_file({"Budget": BUDGET[:3]})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.startswith("xl/worksheets/"):
                data = re.sub(rb'<dimension ref="[^"]+"', b'<dimension ref="A1:XFD1048576"', data)
            target.writestr(item, data)
    [section] = READERS[".xlsx"][1](out.getvalue(), "budget.xlsx")
    assert section.location == "sheet Budget, rows 2-3" and section.text == "mug batch 0 | 10 | Sam\nmug batch 1 | 11 | Sam"


@pytest.mark.parametrize("question, source, location, words", [
    ("how long did the vinegar trial take?", "deck.pptx", "slide 3", "fifteen minutes"),
    ("who owns the replacement thermostat?", "budget.xlsx", "sheet Budget, rows ", "Priya"),
    ("when did the apprentices join the workshop?", "report.odt", None, "apprentices"),
    ("where are the copper kettles?", "stock.ods", "sheet Shelves, rows 2-3", "B7"),
    ("when did the company begin as a tinsmith?", "talk.odp", "slide 2", "1887"),
    ("what temperature for green tea water?", "guide.epub", "chapter 2", "eighty degrees"),
    ("when does the oolong order ship?", "letter.rtf", None, "Tuesday"),
])
def test_each_format_is_found_and_cited(office_kb, question, source, location, words):
    hit = office_kb.ask(question, k=1)[0]
    assert hit.source.endswith(source) and words in hit.text, (hit.citation, hit.text)
    if location is None:
        assert hit.location is None
    else:
        assert hit.location.startswith(location) and location in hit.citation
    if source == "budget.xlsx":
        assert hit.context == "Budget: item | cost | owner"
        assert "62" in hit.location  # the thermostat's own row in the sheet
    if source == "report.odt":
        assert hit.context == "Annual report > Staff"


def test_broken_office_files_are_skipped_with_a_reason_and_the_rest_indexed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    good = pptx_file(SLIDES)
    (folder / "good.pptx").write_bytes(good)
    (folder / "truncated.pptx").write_bytes(good[: len(good) // 2])
    (folder / "renamed.xlsx").write_text("this is really a text file")
    (folder / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4000)
    (folder / "bomb.odt").write_bytes(zip_bomb("content.xml"))
    (folder / "empty.epub").write_bytes(epub_file("Nothing", []))
    (folder / "broken.rtf").write_text("not rich text at all")
    result = CliRunner().invoke(cli, ["index", "docs", "--index", "idx"])
    assert result.exit_code == EXIT_SKIPPED_FILES, result.output
    assert "Traceback" not in result.output + result.stderr
    reasons = dict(line.removeprefix("kb: skipped ").split(": ", 1) for line in result.stderr.strip().splitlines())
    assert reasons.keys() == {f"docs/{n}" for n in ("truncated.pptx", "renamed.xlsx", "locked.docx", "bomb.odt",
                                                    "empty.epub", "broken.rtf")}
    assert reasons["docs/truncated.pptx"].startswith("unreadable .pptx (damaged")
    assert reasons["docs/renamed.xlsx"].startswith("unreadable .xlsx (damaged, or not a zip archive")
    assert reasons["docs/locked.docx"].startswith("encrypted (password-protected)")
    assert "zip bomb" in reasons["docs/bomb.odt"]
    assert reasons["docs/empty.epub"] == "not a valid .epub file (its package has no spine)"
    assert reasons["docs/broken.rtf"] == "not an RTF file (no {\\rtf header)"
    assert "1 files, 3 passages" in result.stdout
    info = json.loads(CliRunner().invoke(cli, ["info", "--index", "idx", "--json"]).stdout)
    assert info["skipped"] == {"unreadable": 4, "encrypted": 1, "too large": 1}


def test_a_missing_extra_is_named_with_its_install_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for n in range(3):
        (tmp_path / f"deck{n}.pptx").write_bytes(pptx_file(SLIDES[:1]))
    (tmp_path / "notes.txt").write_text("kettle notes")
    monkeypatch.setitem(sys.modules, "pptx", None)  # as if python-pptx were not installed
    result = CliRunner().invoke(cli, ["index", ".", "--index", "idx"])
    assert result.exit_code == EXIT_SKIPPED_FILES
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "kb: skipped deck0.pptx: needs python-pptx: pip install 'kb[office]'"
    assert lines[-1] == "kb: 3 .pptx files skipped: pip install 'kb[office]'"
    assert "1 files, 1 passages" in result.stdout
