"""Word .docx: paragraphs and tables in document order, headings as Markdown headings.

python-docx is the maintained standard reader (MIT, only lxml underneath), and a
.docx is a zip of XML, so this is cheap. Offsets and line numbers of a .docx
citation refer to the extracted text. The core-properties title is the section title.

Bounded work: a .docx whose parts would unpack to over kb.ingest.readers.archive's
MAX_UNPACKED bytes (a zip bomb: a few MB that inflate to gigabytes of XML) is refused
before anything is inflated; lxml's own limits (no huge trees) bound the XML's depth.
"""

from __future__ import annotations

import io
import re

from ..sections import Section
from .archive import open_zip

_HEADING_STYLE = re.compile(r"^(?:Heading|Überschrift|Titre|Título)\s*(\d)$", re.IGNORECASE)


def read_docx(raw: bytes, path: str) -> list[Section]:
    open_zip(raw, ".docx")  # a renamed, truncated, encrypted file or a zip bomb: refused with why
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        document = docx.Document(io.BytesIO(raw))
        blocks = []
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                blocks.append(_paragraph(item))
            elif isinstance(item, Table):
                blocks.extend(" | ".join(c.text.strip() for c in row.cells) for row in item.rows)
        title = (document.core_properties.title or "").strip()
    except Exception as e:  # zip, XML and python-docx errors all mean the same to a user
        raise ValueError(f"unreadable .docx ({str(e).strip()[:80] or type(e).__name__})") from None
    return [Section("\n\n".join(b for b in blocks if b.strip()), title=title, markdown=True)]


def _paragraph(paragraph) -> str:
    text = paragraph.text.strip()
    style = paragraph.style.name if paragraph.style is not None else ""
    match = _HEADING_STYLE.match(style or "")
    if text and match:
        return "#" * min(int(match.group(1)), 6) + " " + " ".join(text.split())
    if text and style == "Title":
        return "# " + " ".join(text.split())
    return text
