"""PDF: one section per page, so every citation carries its page number.

pypdf is pure Python (no native build, permissive BSD licence) and actively
maintained; PyMuPDF extracts faster but is AGPL and a large binary wheel. Encrypted
PDFs that open with the empty password (common for "no copying" flags) are read;
others, and broken files, are refused with a reason. Offsets and line numbers of a
PDF citation refer to the page's extracted text. Pages without a text layer that hold
images (scans) are read by OCR (kb.ingest.readers.ocr) and cited "page N, OCR"; where
OCR cannot run, they are reported as skipped pages with the command that fixes it.

Bounded work: text extraction may take at most MAX_SECONDS per file, checked between
pages (pypdf itself caps what one stream may decompress to); a file over it is refused
with the page it reached, so `kb index` skips it and goes on.
"""

from __future__ import annotations

import io
import logging
from typing import Iterator

from ..sections import Section

MAX_SECONDS = 120.0  # a 1,000-page book extracts in well under a minute
REOPEN_EVERY = 16  # scanned pages rendered before PDFium opens the file afresh (_Ocr)


def read_pdf(raw: bytes, path: str) -> list[Section]:
    return list(_pdf(io.BytesIO(raw), raw))


def stream_pdf(path: str) -> Iterator[Section]:
    """The pages of a PDF read from disk as they come (kb.ingest.readers.STREAMS): pypdf
    and PDFium read the file by seeking, and a scanned page's pixels are let go once
    OCR has read them, so a long scan costs about one rendered page, not the file."""
    with open(path, "rb") as f:  # a file, not the path: given a path, pypdf reads all of it first
        yield from _pdf(f, path)


def _pdf(source, render_from) -> Iterator[Section]:
    """Each page's section in order: its text layer, or OCR of a scanned page (or the
    page as a skipped part, with why). source: for pypdf; render_from: for PDFium."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    # pypdf logs every recoverable oddity of real-world PDFs; kb reports only failures.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(source)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError("encrypted PDF (needs a password)")
        pages = reader.pages
        count = len(pages)
    except ValueError:
        raise
    except (DependencyError, FileNotDecryptedError) as e:
        raise ValueError(f"encrypted PDF ({_short(e)})") from None
    except (PdfReadError, Exception) as e:  # pypdf raises many types on broken files
        raise ValueError(f"unreadable PDF ({_short(e)})") from None
    import time

    failed = 0
    spent = 0.0  # seconds of text extraction (OCR's time is not counted)
    scanned, with_text, skipped = 0, 0, None
    ocr = _Ocr(render_from)
    try:
        for number in range(count):
            if spent > MAX_SECONDS:
                raise ValueError(f"PDF text extraction took over {MAX_SECONDS:.0f} s (stopped at page {number + 1} "
                                 f"of {count})")
            started = time.monotonic()
            try:
                page = pages[number]
                text = page.extract_text() or ""
            except Exception:  # one broken page should not cost the rest of the document
                failed += 1
                continue
            finally:
                spent += time.monotonic() - started
            _forget_images(reader)
            text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
            if text.strip():
                with_text += 1
                yield Section(text, page=number + 1)
            elif _has_images(page):  # a scan: OCR reads it
                scanned += 1
                section = ocr.page(number + 1)
                with_text += bool(section.text.strip())
                skipped = skipped or section.skipped
                yield section
    finally:
        ocr.close()
    if not with_text:
        if scanned and skipped:  # every page is a scan, and OCR cannot run here
            raise ValueError(f"scanned PDF ({scanned} pages without a text layer); "
                             f"{skipped.removeprefix('no text layer; ')}")
        raise ValueError("PDF has no extractable text (scanned images?)" if not failed else "unreadable PDF pages")


def _forget_images(reader) -> None:
    """Drop the image streams pypdf cached while reading a page (extract_text resolves
    the page's XObjects): kept, a scanned book's pages would all stay in memory. They
    are read again from the file should another page use them."""
    cache = getattr(reader, "resolved_objects", None)
    if not isinstance(cache, dict):
        return
    for key in [k for k, v in cache.items() if _is_image(v)]:
        del cache[key]


def _is_image(value) -> bool:
    try:
        return hasattr(value, "get_data") and value.get("/Subtype") == "/Image"
    except Exception:
        return False


def _has_images(page) -> bool:
    try:
        resources = page.get("/Resources") or {}
        objects = resources.get_object().get("/XObject") if resources else None
        return bool(objects) or bool(page.images)
    except Exception:
        return True  # cannot tell: let OCR look


class _Ocr:
    """Scanned pages through OCR, one at a time; without OCR, each such page is a skipped
    part (kb.ingest.sections.Section.skipped) with the command that fixes it."""

    def __init__(self, render_from):
        self.render_from, self.document, self.why = render_from, None, None
        self.read = 0  # pages rendered

    def page(self, number: int) -> Section:
        from . import ocr

        if self.why is None and self.document is None:
            self.why = ocr.missing()
            if self.why:
                self.why = f"no text layer; {self.why}"
            else:
                try:
                    self.document = ocr.open_pdf(self.render_from)
                except Exception as e:  # PDFium could not open this file: the text pages still count
                    self.why = f"no text layer, and OCR failed ({str(e)[:60] or type(e).__name__})"
        if self.why:
            return Section("", page=number, skipped=self.why)
        self.read += 1
        if self.read % REOPEN_EVERY == 0 and isinstance(self.render_from, str):
            # PDFium keeps what it parsed (a scan's image data) until the document closes.
            self.document.close()
            self.document = ocr.open_pdf(self.render_from)
        try:
            text = ocr.read_pdf_page(self.document, number)
        except Exception as e:  # PDFium could not render this page
            why = f"no text layer, and OCR failed ({str(e)[:60] or type(e).__name__})"
            return Section("", page=number, skipped=why)
        if not text.strip():
            return Section("", page=number, skipped="no text found by OCR")
        return Section(text, page=number, location="OCR")

    def close(self) -> None:
        if self.document is not None:
            self.document.close()
            self.document = None


def _short(e: Exception) -> str:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return message[:80]
