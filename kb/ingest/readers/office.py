"""Office Open XML slides and workbooks: .pptx (python-pptx) and .xlsx (openpyxl).

Both are the maintained pure-Python readers of their formats (MIT), in the optional
extra `kb[office]` (about 6 MB installed with their dependencies).

A deck is one section per slide, cited "slide N": the slide's title is the section's
title, then its text frames and tables in shape order, then the speaker notes. A
workbook is read in read-only mode (rows streamed, not a sheet model in memory), with
cached values rather than formulas; each sheet's rows are grouped as a CSV's are
(kb.ingest.readers.tables), with the sheet's name leading their context and their
citation ("sheet Budget, rows 2-41").
"""

from __future__ import annotations

import io

from ..sections import Section, one_after_another
from .archive import open_zip
from .extras import require
from .tables import row_sections, row_text


def read_pptx(raw: bytes, path: str) -> list[Section]:
    open_zip(raw, ".pptx")
    pptx = require("pptx")
    try:
        deck = pptx.Presentation(io.BytesIO(raw))
        sections = [_slide(number, slide) for number, slide in enumerate(deck.slides, start=1)]
    except Exception as e:  # zip, XML and python-pptx errors all mean the same to a user
        raise ValueError(f"unreadable .pptx ({str(e).strip()[:80] or type(e).__name__})") from None
    return one_after_another([s for s in sections if s.text.strip()])


def _slide(number: int, slide) -> Section:
    title_shape = slide.shapes.title
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None and title_shape.has_text_frame \
        else ""
    blocks = []
    for shape in _shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if shape.has_text_frame:
            blocks.append("\n".join(p for p in (" ".join(par.text.split()) for par in shape.text_frame.paragraphs) if p))
        elif getattr(shape, "has_table", False) and shape.has_table:
            blocks.append("\n".join(row_text(cell.text for cell in row.cells) for row in shape.table.rows))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            blocks.append("Notes: " + notes)
    text = "\n\n".join(b for b in blocks if b.strip())
    return Section(text or title, title=title, location=f"slide {number}")


def _shapes(shapes):
    for shape in shapes:
        if shape.shape_type == 6:  # MSO_SHAPE_TYPE.GROUP: its shapes, in order
            yield from _shapes(shape.shapes)
        else:
            yield shape


def read_xlsx(raw: bytes, path: str) -> list[Section]:
    open_zip(raw, ".xlsx")
    openpyxl = require("openpyxl")
    sections: list[Section] = []
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
        try:
            for sheet in workbook.worksheets:
                # The declared size may be A1:XFD1048576 (some writers say so): trusting it,
                # openpyxl would pad a million rows of 16,384 empty cells.
                sheet.reset_dimensions()
                rows = ((n, n, row_text(values)) for n, values in
                        enumerate(sheet.iter_rows(values_only=True), start=1))
                sections.extend(row_sections(rows, title=sheet.title, place=f"sheet {sheet.title}, "))
        finally:
            workbook.close()
    except Exception as e:
        raise ValueError(f"unreadable .xlsx ({str(e).strip()[:80] or type(e).__name__})") from None
    return one_after_another(sections)
