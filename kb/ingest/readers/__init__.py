"""File formats: each reader turns a file's bytes into the sections kb chunks.

A reader is `read(raw: bytes, path: str) -> list[Section]`; it raises ValueError with
a short reason ("not valid UTF-8", "encrypted PDF") when the file cannot be used, and
MissingExtra (kb.ingest.readers.extras) when an optional parser is not installed. A
section's `location` names where it sits in words a person can look up ("slide 3",
"sheet Budget, rows 2-41", "message 4"); a section with `skipped` set and no text is
a part of the file that could not be read (a scanned page without OCR), reported as
such. To add a format, write a module here and register its extensions in READERS.

A format that can be long (a mailbox, a scanned book) may also register a stream in
STREAMS: `stream(path: str) -> Iterator[Section]`, reading the file from disk and
yielding sections as it goes (the same sections, in the same order, as its reader
makes of the file's bytes). kb.ingest.documents uses it when the file is read where it
lies, so such a file costs the memory of a message or a page, not of the file; its
errors about the whole file (not this format, encrypted, no text) must come before
the first section with text, or at the end when there is none.
"""

from __future__ import annotations

from typing import Callable, Iterator

from ..sections import Section
from . import (asciidoc, code, docx, epub, html, jsonl, latex, mail, ocr, office, opendocument, org, pdf, rst,
               rtf, tables, text)

Reader = Callable[[bytes, str], "list[Section]"]
Stream = Callable[[str], "Iterator[Section]"]

# Extension (lower case, with dot) -> (kind, reader). The kind is stored and shown.
READERS: dict[str, tuple[str, Reader]] = {
    ".txt": ("text", text.read_text),
    ".text": ("text", text.read_text),
    ".rst": ("rst", rst.read_rst),
    ".rest": ("rst", rst.read_rst),
    ".adoc": ("asciidoc", asciidoc.read_asciidoc),
    ".asciidoc": ("asciidoc", asciidoc.read_asciidoc),
    ".org": ("org", org.read_org),
    ".tex": ("latex", latex.read_latex),
    ".md": ("markdown", text.read_markdown),
    ".markdown": ("markdown", text.read_markdown),
    ".jsonl": ("jsonl", jsonl.read_jsonl),
    ".html": ("html", html.read_html),
    ".htm": ("html", html.read_html),
    ".xhtml": ("html", html.read_html),
    ".pdf": ("pdf", pdf.read_pdf),
    ".docx": ("docx", docx.read_docx),
    ".csv": ("table", tables.read_csv),
    ".tsv": ("table", tables.read_csv),
    ".pptx": ("slides", office.read_pptx),
    ".xlsx": ("spreadsheet", office.read_xlsx),
    ".odt": ("odt", opendocument.read_odt),
    ".ods": ("spreadsheet", opendocument.read_ods),
    ".odp": ("slides", opendocument.read_odp),
    ".rtf": ("rtf", rtf.read_rtf),
    ".epub": ("epub", epub.read_epub),
    ".eml": ("mail", mail.read_eml),
    ".mbox": ("mail", mail.read_mbox),
    **{extension: ("image", ocr.read_image) for extension in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")},
    **{extension: ("code", code.read_code) for extension in code.LANGUAGES},
}

# Extension -> stream (module docstring): read from the path, a section at a time.
STREAMS: dict[str, Stream] = {
    ".mbox": mail.stream_mbox,
    ".pdf": pdf.stream_pdf,
}
