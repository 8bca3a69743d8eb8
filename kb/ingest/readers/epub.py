"""E-books (.epub): the chapters in reading order, each through the HTML reader.

An EPUB is a zip of XHTML chapters; META-INF/container.xml names the package file
(OPF), whose manifest lists the chapters and whose spine gives their order. The stdlib
reads all of that, and kb's HTML reader (kb.ingest.readers.html) turns each chapter
into text with its headings, so no e-book library is needed (ebooklib would add a
second HTML parser). Each chapter is a section cited "chapter N" (N counts the spine's
documents that hold text) under the book's title. Books with DRM (their chapters named
in META-INF/encryption.xml) are refused with that reason.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from urllib.parse import unquote

from ..sections import Section, one_after_another
from .archive import member, open_zip
from .html import read_html

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_ENC = "{http://www.w3.org/2001/04/xmlenc#}"
_DOCUMENT_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")


def read_epub(raw: bytes, path: str) -> list[Section]:
    archive = open_zip(raw, ".epub")
    try:
        container = ET.fromstring(member(archive, "META-INF/container.xml", ".epub"))
        rootfile = container.find(f".//{_CONTAINER}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise ValueError("not a valid .epub file (container.xml names no package)")
        opf_path = rootfile.get("full-path")
        package = ET.fromstring(member(archive, opf_path, ".epub"))
    except ET.ParseError as e:
        raise ValueError(f"unreadable .epub ({e})") from None
    base = posixpath.dirname(opf_path)
    manifest = {item.get("id"): item for item in package.iter(f"{_OPF}item")}
    title_node = package.find(f".//{_DC}title")
    book = " ".join((title_node.text or "").split()) if title_node is not None else ""
    encrypted = _encrypted(archive)
    sections: list[Section] = []
    for ref in package.iter(f"{_OPF}itemref"):
        item = manifest.get(ref.get("idref"))
        if item is None or item.get("media-type") not in _DOCUMENT_TYPES:
            continue
        name = posixpath.normpath(posixpath.join(base, unquote(item.get("href") or "")))
        if name in encrypted:
            raise ValueError("encrypted .epub (DRM): its chapters cannot be read")
        try:
            chapter = read_html(member(archive, name, ".epub"), name)
        except ValueError:
            continue  # one missing or binary chapter should not cost the book
        for s in chapter:
            if s.text.strip():
                sections.append(Section(s.text, title=book, markdown=True, location=f"chapter {len(sections) + 1}"))
    if not sections and not any(True for _ in package.iter(f"{_OPF}itemref")):
        raise ValueError("not a valid .epub file (its package has no spine)")
    return one_after_another(sections)


def _encrypted(archive) -> set[str]:
    if "META-INF/encryption.xml" not in archive.namelist():
        return set()
    try:
        root = ET.fromstring(archive.read("META-INF/encryption.xml"))
    except (ET.ParseError, OSError, ValueError):
        return set()
    return {unquote(ref.get("URI") or "") for ref in root.iter(f"{_ENC}CipherReference")}
