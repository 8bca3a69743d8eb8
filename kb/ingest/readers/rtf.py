"""Rich Text Format (.rtf): the text, without control words, via striprtf.

striprtf is a small pure-Python converter (BSD, 50 KB, no dependencies) that handles
the escapes, Unicode (\\uN) and code-page characters real RTF files hold and drops
font tables, styles, pictures and other destinations. Offsets and line numbers of an
RTF citation refer to the converted text.
"""

from __future__ import annotations

from ..sections import Section


def read_rtf(raw: bytes, path: str) -> list[Section]:
    if not raw.lstrip()[:5] == b"{\\rtf":
        raise ValueError("not an RTF file (no {\\rtf header)")
    from striprtf.striprtf import rtf_to_text

    try:
        # RTF is 7-bit ASCII with escapes for everything else; Latin-1 maps any stray byte.
        text = rtf_to_text(raw.decode("latin-1"), errors="ignore")
    except Exception as e:
        raise ValueError(f"unreadable RTF ({str(e).strip()[:80] or type(e).__name__})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return [Section(text)]
