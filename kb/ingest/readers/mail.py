"""Saved mail: .eml (one message) and .mbox (a mailbox of them), with the stdlib.

Each message is a record: its subject is the section's title, its From and Date lines
open the text (so they are searched and cited with it), then its plain-text body; a
message with only HTML goes through kb's HTML reader. Attachments in a format kb reads
(a PDF, a .docx, a CSV, ...) are read by that format's reader into sections of their
own. Citations name the message ("message 4" in a mailbox; "attachment report.pdf,
page 2" for an attachment's page).

A mailbox is cut into messages at its "From " separator lines and parsed one message at
a time. `stream_mbox` reads it from its path that way and yields each message's sections
as it goes (kb.ingest.readers.STREAMS): a mailbox of any size costs the memory of one
message, not of the file (kb.ingest.documents.read_document).
"""

from __future__ import annotations

import email
import email.policy
import io
import os
import re
from dataclasses import replace
from email.header import decode_header, make_header
from email.message import Message
from typing import IO, Iterator

from ..sections import Section, one_after_another
from .html import read_html
from .encoding import decode_text

MAX_MESSAGES = 1_000_000  # then the rest of the mailbox is reported as a skipped part


def read_eml(raw: bytes, path: str) -> list[Section]:
    if not re.match(rb"\s*[\w-]+:", raw[:1024]):
        raise ValueError("not an e-mail message (no header lines)")
    return one_after_another(_message(raw, place=""))


def read_mbox(raw: bytes, path: str) -> list[Section]:
    return list(_mbox(io.BytesIO(raw)))


def stream_mbox(path: str) -> Iterator[Section]:
    """The sections of a mailbox, read from disk a message at a time (lines numbered on)."""
    with open(path, "rb") as f:
        yield from _mbox(f)


def _mbox(f: IO[bytes]) -> Iterator[Section]:
    line = 1
    for number, raw in enumerate(_messages(f), start=1):
        if number > MAX_MESSAGES:
            yield Section("", location=f"messages {number}-", skipped=f"over {MAX_MESSAGES:,} messages: not read")
            return
        try:
            sections = _message(raw, place=f"message {number}")
        except Exception as e:  # one odd message costs only itself
            sections = [Section("", location=f"message {number}",
                                skipped=f"unreadable message ({type(e).__name__}: {str(e)[:60]})")]
        for s in sections:  # as sections.one_after_another, a message at a time
            yield replace(s, first_line=line)
            line += s.text.count("\n") + 1


def _messages(f: IO[bytes]) -> Iterator[bytes]:
    """Each message's bytes (past its "From " separator line), one at a time."""
    lines: list[bytes] | None = None
    for text in f:
        if text.startswith(b"From "):
            if lines is not None:
                yield b"".join(lines)
            lines = []
        elif lines is None:
            if text.strip():
                raise ValueError("not an mbox mailbox (it does not start with a \"From \" line)")
        else:
            lines.append(text)
    if lines is None:
        raise ValueError("not an mbox mailbox (it does not start with a \"From \" line)")
    yield b"".join(lines)


def _message(raw: bytes, place: str) -> list[Section]:
    # compat32, the stdlib's classic parser: the modern policy parses every header into
    # objects and took 3x as long per message; kb needs only a few headers' text.
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _header(message, "subject")
    lines = [f"{name}: {value}" for name in ("From", "To", "Date") if (value := _header(message, name.lower()))]
    body = _body(message)
    text = "\n".join(lines) + ("\n\n" + body if body else "")
    sections = [Section(text, title=subject, location=place or None)] if text.strip() else []
    for part in message.walk():
        if part.get_filename() and not part.is_multipart():
            sections.extend(_attachment(part, subject, place))
    return sections


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    try:
        value = str(make_header(decode_header(str(value))))  # =?utf-8?q?...?= words decoded
    except Exception:  # a malformed encoded word: keep the header as it stands
        value = str(value)
    return " ".join(value.split())


def _body(message: Message) -> str:
    """The first text/plain part that is not an attachment, else the first text/html one."""
    parts = [p for p in message.walk() if not p.is_multipart() and not p.get_filename()
             and p.get_content_maintype() == "text"]
    part = next((p for p in parts if p.get_content_subtype() == "plain"), None) or \
        next((p for p in parts if p.get_content_subtype() == "html"), None)
    if part is None:
        return ""
    payload = part.get_payload(decode=True) or b""
    try:
        content = payload.decode(part.get_content_charset() or "utf-8")
    except (LookupError, UnicodeDecodeError):  # an unknown or wrong charset: guess it from the bytes
        try:
            content = decode_text(payload)
        except ValueError:
            return ""
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        return "\n\n".join(s.text for s in read_html(content.encode("utf-8"), "message.html"))
    return content.strip("\n")


def _attachment(part: Message, subject: str, place: str) -> list[Section]:
    from . import READERS  # the registry imports this module: look it up when needed

    name = os.path.basename(_decoded_name(part.get_filename() or ""))
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


def _decoded_name(name: str) -> str:
    try:
        return str(make_header(decode_header(name)))
    except Exception:
        return name
