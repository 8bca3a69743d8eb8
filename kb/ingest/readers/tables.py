"""Tables as data: .csv and .tsv, and the row grouping the spreadsheet readers share.

Rows are read with the stdlib csv module (quoting, embedded newlines, any delimiter the
sniffer finds among , ; tab and |). The first row is the header: it leads every
passage's context, so a passage of rows 40-60 is embedded knowing what its columns
mean. Rows are grouped into sections of about ROW_GROUP_CHARS characters, each cited
by its row range ("rows 2-41", row 1 being the header, as a spreadsheet counts), and
its line numbers are those of the file. A row's cells are joined with " | ".
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Iterator

from ..sections import Section
from .encoding import decode_text

ROW_GROUP_CHARS = 600  # about 150 word pieces: a group is rarely cut again by the chunker
ROW_GROUP_MAX = 50  # rows, however short
MAX_CELLS = 1000  # cells kept per row: a runaway row is not a table


def row_text(cells: Iterable[object]) -> str:
    """A row as one line: its cells' text, trailing empty cells dropped."""
    values = [" ".join(str(c).split()) if c is not None else "" for c in cells]
    while values and not values[-1]:
        values.pop()
    return " | ".join(values[:MAX_CELLS])


def row_sections(rows: Iterable[tuple[int, int, str]], *, title: str = "", place: str = "") -> list[Section]:
    """Group (row number, file line, row text) into sections with "rows a-b" locations.

    The first non-empty row is the header; title (e.g. a sheet name) leads it in the
    context. place prefixes the location ("sheet Budget, ").
    """
    sections: list[Section] = []
    header = None
    group: list[tuple[int, int, str]] = []

    def flush():
        if group:
            first, last = group[0][0], group[-1][0]
            rows_label = f"row {first}" if first == last else f"rows {first}-{last}"
            context = ": ".join(p for p in (title, header or "") if p)
            sections.append(Section("\n".join(t for _, _, t in group), first_line=group[0][1],
                                    title=context, location=place + rows_label))
            group.clear()

    size = 0
    for number, line, text in rows:
        if not text.strip():
            continue
        if header is None:
            header = text
            continue
        if group and (size + len(text) > ROW_GROUP_CHARS or len(group) >= ROW_GROUP_MAX):
            flush()
            size = 0
        group.append((number, line, text))
        size += len(text) + 1
    flush()
    if not sections and header is not None:  # a header-only table is still text
        sections.append(Section(header, title=title, location=place + "row 1"))
    return sections


def read_csv(raw: bytes, path: str) -> list[Section]:
    text = decode_text(raw)
    delimiter = "\t" if path.lower().endswith((".tsv", ".tab")) else _sniff(text)
    return row_sections(_rows(text, delimiter))


def _sniff(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _rows(text: str, delimiter: str) -> Iterator[tuple[int, int, str]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    start = 1
    try:
        for number, cells in enumerate(reader, start=1):
            yield number, start, row_text(cells)
            start = reader.line_num + 1
    except csv.Error as e:
        raise ValueError(f"malformed table near line {reader.line_num} ({e})") from None
