"""JSON Lines: each line that is an object with a text field is one record.

The record's id (`_id` or `id`) and `title` make its citation (`file:line #id`);
the title is also embedded with its passages, as a heading would be. This is the
BEIR corpus layout, so `kb eval` and a user's own exports share one reader.
"""

from __future__ import annotations

import json

from ..sections import Section
from .encoding import decode_text

TEXT_FIELDS = ("text", "contents", "content", "body")
ID_FIELDS = ("_id", "id", "docid")


def read_jsonl(raw: bytes, path: str) -> list[Section]:
    sections = []
    for number, line in enumerate(decode_text(raw).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ValueError(f"line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            continue
        text = next((record[f] for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
        if text is None or not text.strip():
            continue
        record_id = next((record[f] for f in ID_FIELDS if record.get(f) not in (None, "")), None)
        title = record.get("title")
        sections.append(Section(
            text=text,
            first_line=number,
            record=str(record_id) if record_id is not None else str(number),
            title=title.strip() if isinstance(title, str) else "",
            single_line=True,  # newlines in the text are escaped: the record is one line
        ))
    return sections
