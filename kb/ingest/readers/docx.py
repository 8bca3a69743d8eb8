"""Word .docx: paragraphs and tables in document order, headings as Markdown headings.

python-docx is the maintained standard reader (MIT, only lxml underneath), and a
.docx is a zip of XML, so this is cheap. Offsets and line numbers of a .docx
citation refer to the extracted text. The core-properties title is the section title.

Bounded work: a .docx whose parts would expand to over MAX_EXPANDED bytes (a zip bomb:
a few MB that inflate to gigabytes of XML) is refused before anything is inflated;
lxml's own limits (no huge trees) bound the XML's depth.
"""

from __future__ import annotations

import io
import re

from ..sections import Section

MAX_EXPANDED = 512 * 1024 * 1024
_HEADING_STYLE = re.compile(r"^(?:Heading|Überschrift|Titre|Título)\s*(\d)$", re.IGNORECASE)


def read_docx(raw: bytes, path: str) -> list[Section]:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(f"unreadable .docx ({str(e).strip()[:80] or type(e).__name__})") from None
    if expanded > MAX_EXPANDED:
        raise ValueError(f"the .docx expands to {expanded / 2**20:,.0f} MB, over the limit of "
                         f"{MAX_EXPANDED / 2**20:,.0f} MB (a zip bomb?)")
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
