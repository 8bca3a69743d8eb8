"""Real files of each office, e-book and mail format, made with the real writing libraries.

Shared by the reader tests and bench/formats.py; every builder returns the file's bytes.
"""

from __future__ import annotations

import io
import zipfile


def pptx_file(slides: list[tuple[str, str, str]]) -> bytes:
    """(title, body, speaker notes) per slide."""
    from pptx import Presentation

    deck = Presentation()
    for title, body, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text_frame.text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def xlsx_file(sheets: dict[str, list[list[object]]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def odt_file(blocks: list[tuple[int, str]]) -> bytes:
    """(heading level or 0 for a paragraph, text) per block."""
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    for level, text in blocks:
        document.text.addElement(H(outlinelevel=level, text=text) if level else P(text=text))
    return _save(document)


def ods_file(sheets: dict[str, list[list[str]]]) -> bytes:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    for name, rows in sheets.items():
        table = Table(name=name)
        for row in rows:
            table_row = TableRow()
            for value in row:
                cell = TableCell(valuetype="string")
                cell.addElement(P(text=str(value)))
                table_row.addElement(cell)
            table.addElement(table_row)
        document.spreadsheet.addElement(table)
    return _save(document)


def odp_file(slides: list[tuple[str, str, str]]) -> bytes:
    from odf.draw import Frame, Page, TextBox
    from odf.namespaces import PRESENTATIONNS
    from odf.opendocument import OpenDocumentPresentation
    from odf.presentation import Notes
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    document = OpenDocumentPresentation()
    layout = PageLayout(name="layout")
    document.automaticstyles.addElement(layout)
    master = MasterPage(name="master", pagelayoutname=layout)
    document.masterstyles.addElement(master)
    for number, (title, body, notes) in enumerate(slides, start=1):
        page = Page(name=f"page{number}", masterpagename=master)
        for cls, text in (("title", title), ("outline", body)):
            frame = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
            frame.setAttrNS(PRESENTATIONNS, "class", cls)
            box = TextBox()
            box.addElement(P(text=text))
            frame.addElement(box)
            page.addElement(frame)
        if notes:
            note = Notes()
            frame = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
            frame.setAttrNS(PRESENTATIONNS, "class", "notes")
            box = TextBox()
            box.addElement(P(text=notes))
            frame.addElement(box)
            note.addElement(frame)
            page.addElement(note)
        document.presentation.addElement(page)
    return _save(document)


def _save(document) -> bytes:
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def epub_file(title: str, chapters: list[tuple[str, str]]) -> bytes:
    """(chapter heading, paragraph) per chapter, in spine order; an EPUB 3 by hand (zip + XHTML)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # first and stored, as EPUB asks
        z.writestr("META-INF/container.xml", """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>""")
        items = "".join(f'<item id="c{n}" href="text/ch{n}.xhtml" media-type="application/xhtml+xml"/>'
                        for n in range(len(chapters)))
        # The spine lists chapters in reverse of their file names: order must come from it.
        spine = "".join(f'<itemref idref="c{n}"/>' for n in range(len(chapters)))
        z.writestr("OEBPS/content.opf", f"""<?xml version="1.0"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title>
<dc:identifier id="id">kb-test</dc:identifier><dc:language>en</dc:language></metadata>
<manifest>{items}<item id="css" href="style.css" media-type="text/css"/></manifest>
<spine>{spine}</spine></package>""")
        z.writestr("OEBPS/style.css", "p { margin: 0 }")
        for n, (heading, paragraph) in enumerate(chapters):
            z.writestr(f"OEBPS/text/ch{n}.xhtml", f"""<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{heading}</title></head>
<body><h1>{heading}</h1><p>{paragraph}</p></body></html>""")
    return out.getvalue()


def rtf_file(paragraphs: list[str]) -> bytes:
    body = "\n".join(r"\pard " + p.replace("é", r"\'e9") + r"\par" for p in paragraphs)
    return (r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Times New Roman;}}{\colortbl;\red0\green0\blue0;}"
            "\n" + body + "\n}").encode("ascii")


def zip_bomb(name: str = "word/document.xml", megabytes: int = 64) -> bytes:
    """A small zip that unpacks to `megabytes` MB of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z, z.open(name, "w") as f:
        block = b"\0" * (1024 * 1024)
        for _ in range(megabytes):
            f.write(block)
    return out.getvalue()
