"""`kb mcp`'s stdio transport: every request that carries a readable id gets an answer.

The MCP SDK's stdio reader hands a line it cannot validate to the session as an
exception, which logs it and replies nothing; a client that sent `"jsonrpc": "1.0"`,
no method, string params or truncated JSON with an id then waits forever. So each line
is checked here first, and a bad one is answered here with the standard JSON-RPC error:

    -32700  parse error: not JSON (truncated, not UTF-8), or a string holding a lone
            surrogate (valid JSON escapes, but not Unicode: nothing could encode it back)
    -32600  invalid request: not an object, "jsonrpc" other than "2.0", no method
    -32602  invalid params: params that are not an object

with the request's id when one can be read (from a truncated line too, so the client's
pending call ends), else null. A notification (no id) that is broken gets no answer, as
JSON-RPC says, only a line on stderr. A line over MAX_LINE_BYTES is refused (-32600)
without being held in memory. Lines that pass go to the SDK unchanged.

As the SDK's own transport does, fd 0 and fd 1 are moved out of the way while serving
(to /dev/null and to stderr), so nothing a library prints can corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio

from ..errors import first_line

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602
# A request is a question and a few options: a longer line is refused (as `kb serve`
# refuses bodies over 1 MB), and its rest discarded unread, so it cannot fill memory.
MAX_LINE_BYTES = 4 * 1024 * 1024
# The id of a line too broken to parse: the first "id" member with a number or string value.
_ID = re.compile(rb'"id"\s*:\s*(-?\d+(?![.eE\d])|"(?:[^"\\]|\\.)*")')


class Refusal(Exception):
    """A line the server answers itself: its JSON-RPC error code, message and id."""

    def __init__(self, code: int, message: str, request_id: Any = None, *, answer: bool = True):
        super().__init__(message)
        self.code, self.message, self.request_id = code, message, request_id
        self.answer = answer  # False for a notification: JSON-RPC never answers one

    def reply(self) -> str:
        return json.dumps({"jsonrpc": "2.0", "id": self.request_id,
                           "error": {"code": self.code, "message": self.message}}, separators=(",", ":"))


def check_line(line: bytes) -> str | None:
    """The line as text if the SDK may have it; None for a blank line; Refusal otherwise."""
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8")
        message = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "not valid JSON"
        raise Refusal(PARSE_ERROR, f"Parse error: the line is {reason}", _salvaged_id(line)) from None
    if not isinstance(message, dict):
        raise Refusal(INVALID_REQUEST, "Invalid request: a message must be a JSON object (batches are not supported)")
    answer = "id" in message
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        if answer:  # present but unusable: answered with a null id
            raise Refusal(INVALID_REQUEST, "Invalid request: id must be a string or an integer")
        request_id = None

    def refuse(code: int, why: str) -> Refusal:
        return Refusal(code, why, request_id, answer=answer)

    if has_lone_surrogate(message):
        request_id = _unicode_id(request_id)
        raise refuse(PARSE_ERROR, "Parse error: a string holds a lone surrogate (\\ud800-\\udfff), "
                                  "which is not Unicode")
    if message.get("jsonrpc") != "2.0":
        raise refuse(INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"')
    if "method" in message:
        if not isinstance(message["method"], str):
            raise refuse(INVALID_REQUEST, "Invalid request: method must be a string")
        if "params" in message and not isinstance(message["params"], dict):
            raise refuse(INVALID_PARAMS, "Invalid params: params must be an object")
    elif "result" not in message and "error" not in message:  # a reply to the server carries one of them
        raise refuse(INVALID_REQUEST, "Invalid request: no method")
    from mcp_types import jsonrpc_message_adapter

    try:  # what the SDK's reader will check: anything it would drop is answered here
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except Exception as e:  # noqa: BLE001 - a ValidationError, or worse (RecursionError on deep params)
        raise refuse(INVALID_REQUEST, f"Invalid request ({first_line(e)})") from None
    return text


def _salvaged_id(line: bytes) -> Any:
    match = _ID.search(line)
    if not match:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return _unicode_id(value)


def _unicode_id(value: Any) -> Any:
    """The id, if it can be sent back (a string id with a lone surrogate cannot)."""
    return None if isinstance(value, str) and has_lone_surrogate(value) else value


def has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string that is not Unicode: JSON's "\\ud800"
    escapes parse, but nothing can encode the result back (a reply would fail)."""
    pending = [value]  # a loop, not recursion: JSON may nest deeper than Python's stack
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class _Wire:
    """The protocol's two descriptors: lines in, whole lines out (one writer at a time)."""

    def __init__(self, fd_in: int, fd_out: int):
        self.input = os.fdopen(fd_in, "rb", closefd=False)
        self.output = os.fdopen(fd_out, "wb", closefd=False)
        self._lock = threading.Lock()

    def send(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace") + b"\n"
        with self._lock:
            self.output.write(data)
            self.output.flush()

    def _skip_line(self) -> None:
        while True:
            chunk = self.input.readline(1 << 20)
            if not chunk or chunk.endswith(b"\n"):
                return

    async def lines(self) -> AsyncIterator[str]:
        """The lines the SDK may read; the others are answered here and not passed on."""
        while True:
            line = await anyio.to_thread.run_sync(self.input.readline, MAX_LINE_BYTES + 1, abandon_on_cancel=True)
            if not line:
                return
            try:
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    await anyio.to_thread.run_sync(self._skip_line, abandon_on_cancel=True)
                if len(line) > MAX_LINE_BYTES:
                    raise Refusal(INVALID_REQUEST, f"Invalid request: a message over {MAX_LINE_BYTES >> 20} MB",
                                  _salvaged_id(line[:4096]))
                text = check_line(line)
            except Refusal as refusal:
                print(f"kb: mcp: {refusal.message}", file=sys.stderr, flush=True)
                if refusal.answer:
                    await anyio.to_thread.run_sync(self.send, refusal.reply())
                continue
            if text is not None:
                yield text


class _AsyncOut:
    """What the SDK's stdio_server writes its replies to."""

    def __init__(self, wire: _Wire):
        self.wire = wire
        self._pending = ""

    async def write(self, text: str) -> None:
        self._pending += text
        if self._pending.endswith("\n"):
            line, self._pending = self._pending[:-1], ""
            await anyio.to_thread.run_sync(self.wire.send, line)

    async def flush(self) -> None:
        pass


@asynccontextmanager
async def checked_stdio():
    """(read_stream, write_stream) for the SDK's session, over the process's stdin and
    stdout, with every line checked first (see the module's notes)."""
    from mcp.server.stdio import stdio_server

    sys.stdout.flush()
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # stray prints go to stderr, never onto the wire
    wire = _Wire(wire_in, wire_out)
    try:
        async with stdio_server(stdin=wire.lines(), stdout=_AsyncOut(wire)) as streams:
            yield streams
    finally:
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)
        os.close(wire_in)
        os.close(wire_out)
