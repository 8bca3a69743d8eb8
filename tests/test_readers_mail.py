"""Saved mail: .eml and .mbox written with the stdlib email and mailbox modules, each
message a record cited by its number, HTML bodies through the HTML reader, readable
attachments indexed as their own sections."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.errors import EXIT_SKIPPED_FILES
from kb.ingest.readers.mail import read_eml, read_mbox
from tests.test_formats import make_pdf


def message(subject: str, sender: str, body: str, *, html: str | None = None, date: str = "Tue, 3 Mar 2026 09:00:00 +0000",
            attachments: list[tuple[str, bytes, str]] = ()) -> EmailMessage:
    m = EmailMessage()
    m["Subject"], m["From"], m["To"], m["Date"] = subject, sender, "team@example.org", date
    if html is not None and not body:
        m.set_content(html, subtype="html")
    else:
        m.set_content(body)
        if html is not None:
            m.add_alternative(html, subtype="html")
    for name, data, kind in attachments:
        maintype, subtype = kind.split("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return m


MESSAGES = [
    message("Lunch on Friday", "Ann <ann@example.org>", "Shall we try the new noodle bar on Friday?"),
    message("Boiler service", "Bob <bob@example.org>", "", html="<html><body><nav>MENU</nav><h1>Service</h1>"
            "<p>The engineer replaces the <b>pressure relief valve</b> on Thursday morning.</p></body></html>"),
    message("Quarterly numbers", "Cat <cat@example.org>", "Figures attached, see the PDF and the table.",
            attachments=[("figures.pdf", make_pdf(["Revenue overview", "Kettle exports to Norway doubled this quarter"]),
                          "application/pdf"),
                         ("regions.csv", b"region,manager\nNorth,Dee\nSouth,Eli\n", "text/csv"),
                         ("photo.bin", b"\x00\x01binary", "application/octet-stream")]),
]


@pytest.fixture
def mbox_file(tmp_path):
    path = tmp_path / "archive.mbox"
    box = mailbox.mbox(path)
    for m in MESSAGES:
        box.add(m)
    box.flush()
    box.close()
    return path


def test_mbox_is_one_record_per_message_with_attachments_as_their_own(mbox_file):
    sections = read_mbox(mbox_file.read_bytes(), str(mbox_file))
    assert [(s.title, s.location) for s in sections] == [
        ("Lunch on Friday", "message 1"),
        ("Boiler service", "message 2"),
        ("Quarterly numbers", "message 3"),
        ("Quarterly numbers", "message 3, attachment figures.pdf, page 1"),
        ("Quarterly numbers", "message 3, attachment figures.pdf, page 2"),
        ("Quarterly numbers > region | manager", "message 3, attachment regions.csv, rows 2-3"),
    ]
    first = sections[0].text.split("\n")
    assert first[:3] == ["From: Ann <ann@example.org>", "To: team@example.org", "Date: Tue, 03 Mar 2026 09:00:00 +0000"]
    assert first[-1] == "Shall we try the new noodle bar on Friday?"
    assert "pressure relief valve" in sections[1].text and "MENU" not in sections[1].text  # through the HTML reader
    assert sections[1].text.endswith("# Service\n\nThe engineer replaces the pressure relief valve on Thursday morning.")


def test_eml_and_broken_mail(tmp_path):
    [body] = read_eml(bytes(MESSAGES[0]), "lunch.eml")
    assert body.title == "Lunch on Friday" and body.location is None
    [accented] = read_eml(bytes(message("Réunion au café", "Zoë <zoe@example.org>", "Ordre du jour : le thé.")), "x.eml")
    assert accented.title == "Réunion au café"  # RFC 2047 encoded words decoded
    assert accented.text.startswith("From: Zoë <zoe@example.org>") and accented.text.endswith("le thé.")
    with pytest.raises(ValueError, match="not an e-mail message"):
        read_eml(b"\x89PNG\r\n\x1a\n....", "x.eml")
    with pytest.raises(ValueError, match="not an mbox mailbox"):
        read_mbox(b"hello there\nFrom nobody\n", "x.mbox")


def test_mail_is_indexed_found_and_cited_by_message(tmp_path, mbox_file, embedder, monkeypatch):
    (tmp_path / "lunch.eml").write_bytes(bytes(MESSAGES[0]))
    (tmp_path / "junk.eml").write_bytes(b"\x00\x01\x02 not mail")
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    report = kb.index([mbox_file, tmp_path / "lunch.eml", tmp_path / "junk.eml"])
    assert [s.reason for s in report.skipped] == ["not an e-mail message (no header lines)"]
    [hit] = kb.ask("which valve does the engineer replace?", k=1)
    assert hit.source.endswith("archive.mbox") and hit.location == "message 2"
    assert hit.citation.endswith("(message 2)") and hit.context == "Boiler service"
    [hit] = kb.ask("how did kettle exports to Norway do?", k=1)
    assert hit.location == "message 3, attachment figures.pdf, page 2"
    [hit] = kb.ask("who manages the South region?", k=1)
    assert hit.location == "message 3, attachment regions.csv, rows 2-3" and "Eli" in hit.text
    # The web page's citation view finds the message's lines by the hit's citation.
    from kb.serve.sources import find_indexed, source_view

    view = source_view(find_indexed(kb, hit.source), line_start=hit.line_start, line_end=hit.line_end, context=0)
    assert any("South | Eli" in line["text"] for line in view["lines"])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["index", "junk.eml", "--index", "idx2"])
    assert result.exit_code == EXIT_SKIPPED_FILES and "Traceback" not in result.stderr
