"""`kb ask --server URL`: ask a running `kb serve` instead of opening the index.

Standard library only (urllib, json): a script that runs `kb ask` per question pays
for Python and click, not for numpy, FAISS or the model. RemoteKnowledgeBase answers
like KnowledgeBase.ask_many, and the server's JSON errors come back as the KbError the
local library would have raised, so output and exit codes are the same either way.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

from ..errors import (
    BadInput,
    CorruptIndex,
    IndexBusy,
    IndexMismatch,
    KbError,
    NoIndex,
    NoResults,
)
from ..query.hits import Hit

# The server sends exit codes; each error class carries its own (kb.errors).
_ERRORS = {cls.exit_code: cls for cls in (NoResults, BadInput, NoIndex, IndexMismatch, CorruptIndex, IndexBusy)}


class ServerError(KbError):
    """An error the server reported with an exit code that has no class of its own (8: I/O)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class RemoteKnowledgeBase:
    """A `kb serve` at url, asked over HTTP."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 600.0):
        self.url = _checked_url(url).rstrip("/")
        self.token = token
        # The token travels as its UTF-8 bytes (the bytes of the command line or the
        # environment it came from), as curl sends it and as the server compares it:
        # http.client would send Latin-1 or fail on anything else.
        self._authorization = b"Bearer " + os.fsencode(token) if token else None
        if self._authorization is not None and re.search(rb"[\x00-\x1f\x7f]", self._authorization):
            raise BadInput("--token cannot hold line breaks or other control characters")
        self.timeout = timeout  # generous: the first question may wait for the model to load

    def ask_many(self, questions: Sequence[str], k: int = 5, *, mode: str = "hybrid", min_score: float | None = None,
                 paths: Sequence[str] = (), mmr: float | None = None, best_sentence: bool = True) -> list[list[Hit]]:
        """The same as KnowledgeBase.ask_many, answered by the server (POST /ask)."""
        body = {"questions": list(questions), "k": k, "mode": mode, "min_score": min_score, "paths": list(paths),
                "mmr": mmr, "highlight": best_sentence}
        answer = self._request("/ask", {key: value for key, value in body.items() if value is not None})
        try:
            return [[Hit.from_dict(h) for h in a["results"]] for a in answer["answers"]]
        except (KeyError, TypeError) as e:
            raise ServerError(f"{self.url} sent an answer kb cannot read ({type(e).__name__}: {e})", 1) from None

    def _request(self, path: str, body: dict) -> dict:
        headers: dict[str, str | bytes] = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise self._error(e) from None
        except (socket.timeout, TimeoutError):
            raise ServerError(f"{self.url} did not answer within {self.timeout:.0f} s", 8) from None
        except urllib.error.URLError as e:
            reason = getattr(e.reason, "strerror", None) or e.reason
            raise NoIndex(f"no kb server answering at {self.url} ({reason}); start one with `kb serve`") from None
        except ValueError:
            raise ServerError(f"{self.url} did not answer with JSON; is it a kb server?", 1) from None

    def _error(self, e: urllib.error.HTTPError) -> KbError:
        try:
            data = json.loads(e.read())
            message, code = str(data["error"]), int(data["exit_code"])
        except (ValueError, KeyError, TypeError):
            return ServerError(f"{self.url} answered HTTP {e.code}; is it a kb server?", 1)
        if e.code == 401:
            hint = "give --token or set KB_TOKEN" if not self.token else "check --token / KB_TOKEN"
            return BadInput(f"{self.url}: {message} ({hint})")
        cls = _ERRORS.get(code)
        return cls(message) if cls else ServerError(message, code)


def _checked_url(url: str) -> str:
    """The --server URL, or BadInput naming what is wrong with it (one line, exit 2)."""
    def bad(why: str) -> BadInput:
        return BadInput(f"--server: {url!r} is not a usable URL ({why})")

    if not url.startswith(("http://", "https://")):
        raise BadInput(f"--server must be an http:// or https:// URL, not {url!r}")
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise bad("it holds a space or a control character")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as e:
        raise bad(str(e)) from None
    if not parts.hostname:
        raise bad("no host name")
    try:
        parts.hostname.encode("idna" if not parts.hostname.isascii() else "ascii")
    except UnicodeError:
        raise bad("the host name cannot be encoded") from None
    return url
