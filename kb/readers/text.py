"""Plain text and Markdown: the file's own characters are the passage text."""

from __future__ import annotations

from ..documents import Section


def decode_text(raw: bytes) -> str:
    """UTF-8 with universal newlines, exactly as `open(path, encoding="utf-8").read()`.

    Citations index this string, so it must match what a user's script reads.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte {e.start})") from None
    if "\x00" in text:
        raise ValueError("binary file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(raw: bytes, path: str) -> list[Section]:
    return [Section(decode_text(raw))]


def read_markdown(raw: bytes, path: str) -> list[Section]:
    return [Section(decode_text(raw), markdown=True)]
