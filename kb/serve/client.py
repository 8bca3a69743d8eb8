"""`kb ask --server URL`: ask a running `kb serve` instead of opening the index.

Standard library only (urllib, json): a script that runs `kb ask` per question pays
for Python and click, not for numpy, FAISS or the model. RemoteKnowledgeBase answers
like KnowledgeBase.ask_many, and the server's JSON errors come back as the KbError the
local library would have raised, so output and exit codes are the same either way.
"""

from __future__ import annotations

import json
import socket
import urllib.error
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
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"--server must be an http:// or https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
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
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
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
