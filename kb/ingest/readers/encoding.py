"""Bytes to text for every text-based reader: UTF-8 exactly, other encodings detected.

UTF-8 files are decoded exactly as `open(path, encoding="utf-8").read()` does, so a
citation's char offsets index the file as a user's script reads it. Other encodings
(Latin-1, cp1251, UTF-16 with a BOM, ...) are detected with charset-normalizer; their
offsets then index the decoded text. Binary data is refused with a reason. A leaf of the
readers: each of them may import it, and it imports none of them.
"""

from __future__ import annotations

import codecs

_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Control characters that never occur in text (tab, newlines and form feed do).
_CONTROL = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r\f\v") | {"\x7f"}


def decode_text(raw: bytes) -> str:
    """The file's text with universal newlines; raises ValueError for binary data.

    UTF-8 first (the common case, with exact offsets), then charset-normalizer's best
    guess, preferring cp1252 among nearly equally good guesses.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = _decode_legacy(raw)
    if "\x00" in text or _mostly_control(text):
        raise ValueError("binary file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_legacy(raw: bytes) -> str:
    if b"\x00" in raw and not raw.startswith(_UTF16_32_BOMS):
        raise ValueError("binary file")
    from charset_normalizer import from_bytes

    # UTF-16/32 guessed without a BOM is almost always binary data read as CJK.
    matches = [m for m in from_bytes(raw) if m.bom or not m.encoding.startswith(("utf_16", "utf_32"))]
    if not matches:
        raise ValueError("binary file or unknown text encoding")
    best = matches[0]
    # Detection is unsure on short texts (it may pick a Mac code page for French);
    # Windows-1252 is by far the most common legacy encoding, so it wins near-ties.
    for m in matches:
        if m.chaos > best.chaos + 0.1:
            break
        if "cp1252" in m.could_be_from_charset:
            return raw.decode("cp1252")
    return str(best)


def _mostly_control(text: str) -> bool:
    sample = text[:4096]
    return bool(sample) and sum(ch in _CONTROL for ch in sample) > len(sample) * 0.1
