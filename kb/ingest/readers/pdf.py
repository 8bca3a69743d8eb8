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

from ..sections import Section

MAX_SECONDS = 120.0  # a 1,000-page book extracts in well under a minute


def read_pdf(raw: bytes, path: str) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    # pypdf logs every recoverable oddity of real-world PDFs; kb reports only failures.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw))
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

    sections = []
    failed = 0
    deadline = time.monotonic() + MAX_SECONDS
    scanned = []  # pages without a text layer that show something: OCR reads them
    for number in range(count):
        if time.monotonic() > deadline:
            raise ValueError(f"PDF text extraction took over {MAX_SECONDS:.0f} s (stopped at page {number + 1} "
                             f"of {count})")
        try:
            page = pages[number]
            text = page.extract_text() or ""
        except Exception:  # one broken page should not cost the rest of the document
            failed += 1
            continue
        text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
        if text.strip():
            sections.append(Section(text, page=number + 1))
        elif _has_images(page):
            scanned.append(number + 1)
    if scanned:
        sections = _with_ocr(raw, sections, scanned)
    if not any(s.text.strip() for s in sections):
        if scanned and sections:  # every page is a scan, and OCR cannot run here
            raise ValueError(f"scanned PDF ({len(scanned)} pages without a text layer); "
                             f"{sections[0].skipped.removeprefix('no text layer; ')}")
        raise ValueError("PDF has no extractable text (scanned images?)" if not failed else "unreadable PDF pages")
    return sections


def _has_images(page) -> bool:
    try:
        resources = page.get("/Resources") or {}
        objects = resources.get_object().get("/XObject") if resources else None
        return bool(objects) or bool(page.images)
    except Exception:
        return True  # cannot tell: let OCR look


def _with_ocr(raw: bytes, sections: list[Section], scanned: list[int]) -> list[Section]:
    """The text pages and the scanned pages' OCR text, in page order; without OCR, the
    scanned pages as skipped parts (kb.ingest.sections.Section.skipped), with the fix."""
    from . import ocr

    why = ocr.missing()
    if why:
        read = [Section("", page=n, skipped=f"no text layer; {why}") for n in scanned]
    else:
        try:
            texts = ocr.read_pdf_pages(raw, scanned)
        except Exception as e:  # PDFium could not render this file: the text pages still count
            texts = {}
            why = f"no text layer, and OCR failed ({str(e)[:60] or type(e).__name__})"
        read = [Section(texts[n], page=n, location="OCR") if n in texts else
                Section("", page=n, skipped=why or "no text found by OCR") for n in scanned]
    return sorted(sections + read, key=lambda s: s.page or 0)


def _short(e: Exception) -> str:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return message[:80]
