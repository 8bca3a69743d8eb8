"""Saved mail: .eml (one message) and .mbox (a mailbox of them), with the stdlib.

Each message is a record: its subject is the section's title, its From and Date lines
open the text (so they are searched and cited with it), then its plain-text body; a
message with only HTML goes through kb's HTML reader. Attachments in a format kb reads
(a PDF, a .docx, a CSV, ...) are read by that format's reader into sections of their
own. Citations name the message ("message 4" in a mailbox; "attachment report.pdf,
page 2" for an attachment's page).

A mailbox is cut into messages at its "From " separator lines and parsed one message at
a time, so only one message's parsed form is in memory beside the file's bytes.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from email.message import EmailMessage

from ..sections import Section, one_after_another
from .html import read_html
from .text import decode_text

_SEPARATOR = re.compile(rb"^From ", re.MULTILINE)
MAX_MESSAGES = 100_000


def read_eml(raw: bytes, path: str) -> list[Section]:
    if not re.match(rb"\s*[\w-]+:", raw[:1024]):
        raise ValueError("not an e-mail message (no header lines)")
    return one_after_another(_message(raw, place=""))


def read_mbox(raw: bytes, path: str) -> list[Section]:
    starts = [m.start() for m in _SEPARATOR.finditer(raw)]
    if not starts or starts[0] != 0 and raw[: starts[0]].strip():
        raise ValueError("not an mbox mailbox (it does not start with a \"From \" line)")
    sections: list[Section] = []
    for number, start in enumerate(starts[:MAX_MESSAGES], start=1):
        end = starts[number] if number < len(starts) else len(raw)
        body_start = raw.find(b"\n", start, end) + 1 or end  # past the "From " separator line
        sections.extend(_message(raw[body_start:end], place=f"message {number}"))
    return one_after_another(sections)


def _message(raw: bytes, place: str) -> list[Section]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    subject = _header(message, "subject")
    lines = [f"{name}: {value}" for name in ("From", "To", "Date") if (value := _header(message, name.lower()))]
    body = _body(message)
    text = "\n".join(lines) + ("\n\n" + body if body else "")
    sections = [Section(text, title=subject, location=place or None)] if text.strip() else []
    for part in message.iter_attachments():
        sections.extend(_attachment(part, subject, place))
    return sections


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed header is read as missing, not fatal to the message
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _body(message: EmailMessage) -> str:
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    try:
        content = part.get_content()
    except Exception:  # an unknown charset or broken transfer encoding: read the raw bytes
        content = decode_text(part.get_payload(decode=True) or b"")
    if isinstance(content, bytes):
        content = decode_text(content)
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        return "\n\n".join(s.text for s in read_html(content.encode("utf-8"), "message.html"))
    return content.strip("\n")


def _attachment(part: EmailMessage, subject: str, place: str) -> list[Section]:
    from . import READERS  # the registry imports this module: look it up when needed

    name = os.path.basename(part.get_filename() or "")
    known = READERS.get(os.path.splitext(name)[1].lower())
    if not name or known is None or known[1] in (read_eml, read_mbox):
        return []
    try:
        raw = part.get_payload(decode=True) or b""
        found = [s for s in known[1](raw, name) if s.text.strip()]
    except Exception:  # an attachment kb cannot read costs only itself
        return []
    where = ", ".join(p for p in (place, f"attachment {name}") if p)
    return [Section(s.text, title=" > ".join(t for t in (subject, s.title) if t), markdown=s.markdown,
                    location=", ".join(p for p in (where, f"page {s.page}" if s.page else "", s.location or "") if p))
            for s in found]
