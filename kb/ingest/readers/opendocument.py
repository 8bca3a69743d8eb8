"""OpenDocument: .odt text, .ods spreadsheets and .odp slides (LibreOffice's formats).

An OpenDocument file is a zip whose content.xml holds the whole document, so the
stdlib (zipfile and ElementTree, whose expat refuses entity-expansion bombs) reads it
without a dependency; odfpy would add 1.3 MB to build the same tree. Text documents
keep their headings as Markdown headings (outline level), lists and tables as lines;
spreadsheets are grouped by rows as a CSV's are, per sheet ("sheet Q3, rows 2-40");
presentations are a section per slide ("slide N"), speaker notes included.
Encrypted (password-protected) files are refused with that reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..sections import Section, one_after_another
from .archive import member, open_zip
from .tables import row_sections, row_text

_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
    "manifest": "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{_NS[prefix]}}}{local}"


_P, _H, _SPACE, _TAB, _BREAK = _q("text:p"), _q("text:h"), _q("text:s"), _q("text:tab"), _q("text:line-break")
_LIST, _TABLE, _ROW, _CELL = _q("text:list"), _q("table:table"), _q("table:table-row"), _q("table:table-cell")
_NOTE = _q("text:note")  # footnotes: their text follows their paragraph
_REPEAT_ROWS, _REPEAT_COLUMNS = _q("table:number-rows-repeated"), _q("table:number-columns-repeated")
MAX_REPEAT = 100  # a repeated non-empty cell or row is written out at most this often


def _content(raw: bytes, kind: str) -> ET.Element:
    archive = open_zip(raw, kind)
    manifest = archive.read("META-INF/manifest.xml") if "META-INF/manifest.xml" in archive.namelist() else b""
    if b"encryption-data" in manifest:
        raise ValueError(f"encrypted {kind} (password-protected)")
    try:
        return ET.fromstring(member(archive, "content.xml", kind))
    except ET.ParseError as e:
        raise ValueError(f"unreadable {kind} (content.xml: {e})") from None


def _body(root: ET.Element, part: str, kind: str) -> ET.Element:
    found = root.find(f"office:body/office:{part}", _NS)
    if found is None:
        raise ValueError(f"not a {kind} document (no office:{part} in content.xml)")
    return found


def inline_text(element: ET.Element) -> str:
    """A paragraph's text: spans, links and fields flattened, <text:s/> and tabs as spaces."""
    out = [element.text or ""]
    for child in element:
        if child.tag == _SPACE:
            out.append(" " * int(child.get(_q("text:c"), "1")))
        elif child.tag in (_TAB, _BREAK):
            out.append(" ")
        elif child.tag != _NOTE:
            out.append(inline_text(child))
        out.append(child.tail or "")
    return "".join(out)


def _blocks(element: ET.Element, out: list[str]) -> None:
    for child in element:
        if child.tag == _H:
            words = " ".join(inline_text(child).split())
            level = int(child.get(_q("text:outline-level"), "1") or 1)
            if words:
                out.append("#" * min(max(level, 1), 6) + " " + words)
        elif child.tag == _P:
            words = " ".join(inline_text(child).split())
            if words:
                out.append(words)
        elif child.tag == _TABLE:
            out.append("\n".join(t for t in (row_text(c) for _, c in _table_rows(child)) if t))
        else:  # lists, sections, frames and the like hold paragraphs
            _blocks(child, out)


def _table_rows(table: ET.Element):
    """(row number, cell texts), repeated rows and cells counted, empty ones not written out."""
    number = 0
    for row in table.iter(_ROW):
        repeat = int(row.get(_REPEAT_ROWS, "1") or 1)
        cells: list[str] = []
        for cell in row:
            if not cell.tag.endswith("table-cell"):
                continue
            text = " ".join(" ".join(inline_text(p).split()) for p in cell.iter(_P))
            columns = int(cell.get(_REPEAT_COLUMNS, "1") or 1)
            cells.extend([text] * (min(columns, MAX_REPEAT) if text else min(columns, 1)))
        if not any(cells):
            number += repeat
            continue
        for _ in range(min(repeat, MAX_REPEAT)):
            number += 1
            yield number, cells
        number += max(0, repeat - MAX_REPEAT)


def read_odt(raw: bytes, path: str) -> list[Section]:
    blocks: list[str] = []
    _blocks(_body(_content(raw, ".odt"), "text", ".odt"), blocks)
    return [Section("\n\n".join(b for b in blocks if b.strip()), markdown=True)]


def read_ods(raw: bytes, path: str) -> list[Section]:
    sections: list[Section] = []
    for table in _body(_content(raw, ".ods"), "spreadsheet", ".ods").findall("table:table", _NS):
        name = table.get(_q("table:name"), "")
        rows = ((n, n, row_text(cells)) for n, cells in _table_rows(table))
        sections.extend(row_sections(rows, title=name, place=f"sheet {name}, " if name else ""))
    return one_after_another(sections)


def read_odp(raw: bytes, path: str) -> list[Section]:
    sections = []
    for number, page in enumerate(_body(_content(raw, ".odp"), "presentation", ".odp").findall("draw:page", _NS),
                                  start=1):
        notes = page.find("presentation:notes", _NS)
        if notes is not None:
            page.remove(notes)
        title, blocks = "", []
        for frame in page.iter(_q("draw:frame")):
            texts: list[str] = []
            _blocks(frame, texts)
            if frame.get(_q("presentation:class")) == "title" and not title:
                title = " ".join(" ".join(texts).split())
            elif texts:
                blocks.append("\n".join(texts))
        if notes is not None:
            note_texts: list[str] = []
            _blocks(notes, note_texts)
            if note_texts:
                blocks.append("Notes: " + "\n".join(note_texts))
        text = "\n\n".join(b for b in blocks if b.strip()) or title
        if text.strip():
            sections.append(Section(text, title=title, location=f"slide {number}"))
    return one_after_another(sections)
