"""Optional parsers: which extra installs each, and the error a reader raises without it.

Heavy or rarely needed parsers are extras (`pip install 'kb[office]'`), so a base
install stays small. A reader whose parser is missing raises MissingExtra, a
ValueError like any unusable file, so the run goes on; the index report then tells
how many files of each type the extra would read (kb.query.render.report_text).
"""

from __future__ import annotations

import importlib

EXTRAS = {  # import name -> (extra, distribution)
    "pptx": ("office", "python-pptx"),
    "openpyxl": ("office", "openpyxl"),
    "pytesseract": ("ocr", "pytesseract"),
    "pypdfium2": ("ocr", "pypdfium2"),
}


class MissingExtra(ValueError):
    """A parser this file needs is not installed; the message names the pip command."""

    def __init__(self, module: str):
        extra, distribution = EXTRAS[module]
        self.extra = extra
        super().__init__(f"needs {distribution}: pip install 'kb[{extra}]'")


def require(module: str):
    """Import an optional parser, or raise MissingExtra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(module) from None
