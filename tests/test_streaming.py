"""A mailbox is read from disk a message at a time (kb.ingest.readers.STREAMS): one over
the old 20 MB cap is indexed, its last messages are found and cited, and indexing it
costs about the memory of a message, not of the file."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from email.message import EmailMessage

import pytest

from kb import KnowledgeBase
from kb.ingest.documents import DEFAULT_MAX_FILE_SIZE, discover

MESSAGES = 500
ATTACHMENT = 110_000  # bytes of a .bin attachment (kb does not read it): ~150 KB of base64 a message
NEEDLE = "The lighthouse keeper ordered seventeen brass telescopes for the harbour museum."
NEEDLE_AT = MESSAGES - 3  # 1-based: cited "message 497"

# Runs one index and nothing else, then says the peak RSS (KB) of what it ran.
WRAPPER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
# The index run of `kb index`, with the hashing stand-in embedder (its vectors mean
# nothing; these tests ask lexically), and no size cap, so that a reader that loads the
# whole file (the code before streaming) reads this one too.
INDEX = ("import sys; from kb import KnowledgeBase; from kb.embed.embedding import HashEmbedder; "
         "from kb.embed.model import packaged_model; "
         "KnowledgeBase(sys.argv[2], embedder=HashEmbedder(packaged_model())).index([sys.argv[1]], max_file_size=None)")


def write_mbox(path, messages: int, attachments: bool = True) -> None:
    rng = random.Random(7)
    words = "kettle boiler valve harbour invoice meeting garden ferry lantern budget orchard signal".split()
    with open(path, "wb") as f:
        for number in range(1, messages + 1):
            m = EmailMessage()
            m["Subject"] = f"Weekly note {number}"
            m["From"], m["To"] = "Ann <ann@example.org>", "team@example.org"
            m["Date"] = "Tue, 3 Mar 2026 09:00:00 +0000"
            body = NEEDLE if number == NEEDLE_AT else " ".join(rng.choice(words) for _ in range(40))
            m.set_content(f"Note {number}. {body}\n")
            if attachments:
                m.add_attachment(rng.randbytes(ATTACHMENT), maintype="application", subtype="octet-stream",
                                 filename=f"scan{number}.bin")
            f.write(b"From ann@example.org Tue Mar  3 09:00:00 2026\n" + m.as_bytes() + b"\n")


@pytest.fixture(scope="module")
def big_mbox(tmp_path_factory):
    path = tmp_path_factory.mktemp("mail") / "archive.mbox"
    write_mbox(path, MESSAGES)
    assert path.stat().st_size > 2 * DEFAULT_MAX_FILE_SIZE
    return path


def peak_rss_mb(mbox, index) -> float:
    run = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-c", INDEX, str(mbox), str(index)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "KB_BATCH": "512"})
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1]) / 1024


def test_a_mailbox_over_the_old_cap_is_found_not_skipped(big_mbox, tmp_path):
    text = tmp_path / "dump.txt"
    with open(text, "wb") as f:
        f.truncate(big_mbox.stat().st_size)  # as large, but read whole: still capped
    found = discover([big_mbox, text])
    assert [f.abspath for f in found.files] == [str(big_mbox)]
    assert [s.source for s in found.skipped] == [str(text)] and "size cap" in found.skipped[0].reason


def test_a_large_mailbox_indexes_in_the_memory_of_a_message(big_mbox, tmp_path):
    small = tmp_path / "small.mbox"  # the same messages and passages, without their 100 KB attachments
    write_mbox(small, MESSAGES, attachments=False)
    baseline = peak_rss_mb(small, tmp_path / "small-index")
    peak = peak_rss_mb(big_mbox, tmp_path / "index")
    size = big_mbox.stat().st_size / 2**20
    # Read whole (the code before streaming), its bytes are held while it is read: 71 MB
    # mailbox, peak 125 MB over a baseline of 85 (which peaks later, in publishing);
    # streamed: 87 MB.
    assert peak - baseline < size / 4, f"{size:.0f} MB mailbox: peak {peak:.0f} MB, baseline {baseline:.0f} MB"

    hits = KnowledgeBase(tmp_path / "index").ask("lighthouse keeper brass telescopes", k=3, mode="lexical")
    assert hits[0].location == f"message {NEEDLE_AT}", [h.citation for h in hits]
    assert "seventeen brass telescopes" in hits[0].text
    assert hits[0].citation.endswith(f"(message {NEEDLE_AT})")


# The same index run, a streamed file handed on 4 passages at a time; prints the index's passages.
PARTS = ("import sys; import kb.ingest.prepare as prepare; prepare.PART = 4; from kb import KnowledgeBase; "
         "from kb.embed.embedding import HashEmbedder; from kb.embed.model import packaged_model; "
         "print(KnowledgeBase(sys.argv[2], embedder=HashEmbedder(packaged_model())).index([sys.argv[1]]).passages)")


def test_a_run_killed_half_way_through_a_mailbox_reads_it_again_whole(tmp_path):
    box = tmp_path / "box.mbox"
    write_mbox(box, 40, attachments=False)
    index = tmp_path / "index"
    killed = subprocess.run([sys.executable, "-c", PARTS, str(box), str(index)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "KB_BATCH": "8", "KB_CRASH_AT": "batch-committed:2"})
    assert killed.returncode == -9, killed.stderr
    resumed = subprocess.run([sys.executable, "-c", PARTS, str(box), str(index)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "KB_BATCH": "8"})
    assert resumed.returncode == 0, resumed.stderr
    assert int(resumed.stdout.split()[-1]) == 40  # a passage a message, each once
    located = {h.location for h in KnowledgeBase(index).ask("weekly note", k=50, mode="lexical")}
    assert located == {f"message {n}" for n in range(1, 41)}


def test_a_mailbox_that_fails_part_way_is_skipped_whole(tmp_path, monkeypatch):
    from kb.embed.embedding import HashEmbedder
    from kb.embed.model import packaged_model
    from kb.ingest import prepare
    from kb.ingest.readers import STREAMS, mail
    from kb.ingest.sections import Section

    def failing(path):
        for n in range(1, 30):
            yield Section(f"Message {n} talks about kettles.", location=f"message {n}")
        raise ValueError("the disk went away half-way")

    monkeypatch.setattr(prepare, "PART", 4)
    monkeypatch.setitem(STREAMS, ".mbox", failing)
    (tmp_path / "box.mbox").write_bytes(b"From a\nSubject: x\n\nhello\n")
    (tmp_path / "note.txt").write_text("Kettles boil water.")
    kb = KnowledgeBase(tmp_path / "index", embedder=HashEmbedder(packaged_model()))
    report = kb.index([tmp_path / "box.mbox", tmp_path / "note.txt"])
    assert report.added == [str(tmp_path / "note.txt")]
    assert [(s.source, s.reason) for s in report.skipped] == \
        [(str(tmp_path / "box.mbox"), "the disk went away half-way")]
    assert report.passages == 1 and mail.stream_mbox is not failing


def test_a_long_scan_is_read_page_by_page_in_order(tmp_path, monkeypatch):
    """40 scanned pages through the stream (PDFium opened afresh every 16): each page's
    OCR text, in order, cited by page. Tesseract is stood in for: the real one is
    exercised by tests/test_ocr.py, and takes seconds a page."""
    from PIL import Image, ImageDraw

    from kb.ingest.readers import ocr, pdf

    pages = []
    for n in range(1, 41):
        image = Image.new("L", (200, 260), 255)
        ImageDraw.Draw(image).text((20, 20 + n), f"page {n}", fill=0)
        pages.append(image)
    path = tmp_path / "scan.pdf"
    pages[0].save(path, "PDF", resolution=72, save_all=True, append_images=pages[1:])
    seen = []

    def read_image_text(image):
        seen.append(image.size)
        return f"Text read from scanned page {len(seen)}.", 90.0

    monkeypatch.setattr(ocr, "missing", lambda: None)
    monkeypatch.setattr(ocr, "read_image_text", read_image_text)
    sections = list(pdf.stream_pdf(str(path)))
    assert [(s.page, s.location, s.text) for s in sections] == \
        [(n, "OCR", f"Text read from scanned page {n}.") for n in range(1, 41)]
    assert len(seen) == 40 and pdf.REOPEN_EVERY < 40
