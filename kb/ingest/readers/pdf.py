"""PDF: one section per page, so every citation carries its page number.

pypdf is pure Python (no native build, permissive BSD licence) and actively
maintained; PyMuPDF extracts faster but is AGPL and a large binary wheel. Encrypted
PDFs that open with the empty password (common for "no copying" flags) are read;
others, and broken files, are refused with a reason. Offsets and line numbers of a
PDF citation refer to the page's extracted text.

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
    for number in range(count):
        if time.monotonic() > deadline:
            raise ValueError(f"PDF text extraction took over {MAX_SECONDS:.0f} s (stopped at page {number + 1} "
                             f"of {count})")
        try:
            text = pages[number].extract_text() or ""
        except Exception:  # one broken page should not cost the rest of the document
            failed += 1
            continue
        text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
        if text.strip():
            sections.append(Section(text, page=number + 1))
    if not sections:
        raise ValueError("PDF has no extractable text (scanned images?)" if not failed else "unreadable PDF pages")
    return sections


def _short(e: Exception) -> str:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return message[:80]
