"""Zip-based formats (.pptx, .xlsx, .odt/.ods/.odp, .epub): open one safely.

Every Office Open XML and OpenDocument file, and every e-book, is a zip of XML. Before
a parser sees one, this checks that it is a zip at all (a renamed file, a truncated
download), that it is not a password-protected Office file (those are OLE compound
files, not zips), and that it does not unpack to more than MAX_UNPACKED bytes: a zip
bomb is refused by its declared sizes, which Python's zipfile also enforces while
reading (it never returns more bytes than a member declares).
"""

from __future__ import annotations

import io
import zipfile

MAX_UNPACKED = 512 * 1024 * 1024  # what one document may unpack to
MAX_RATIO = 200  # and how much larger than the file it may unpack to (beyond 16 MB)
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # compound file: encrypted OOXML, or legacy .doc/.xls/.ppt


def open_zip(raw: bytes, kind: str) -> zipfile.ZipFile:
    """The archive, or ValueError with a one-line reason; kind names the format (".pptx")."""
    if raw.startswith(_OLE):
        raise ValueError(f"encrypted (password-protected) or legacy binary Office file, not a {kind}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        unpacked = sum(max(i.file_size, 0) for i in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"unreadable {kind} (damaged, or not a zip archive: {str(e)[:60]})") from None
    if unpacked > MAX_UNPACKED or (unpacked > 16 * 1024 * 1024 and unpacked > MAX_RATIO * len(raw)):
        raise ValueError(f"{kind} unpacks to {unpacked / 1024 / 1024:,.0f} MB (a zip bomb?): too large to read")
    return archive


def member(archive: zipfile.ZipFile, name: str, kind: str) -> bytes:
    """One member's bytes, or ValueError naming what is missing or damaged."""
    try:
        return archive.read(name)
    except KeyError:
        raise ValueError(f"not a valid {kind} file (no {name})") from None
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
        raise ValueError(f"damaged {kind} file ({str(e)[:60]})") from None
