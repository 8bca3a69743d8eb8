"""Hostile input, one table for every front end: `kb ask` (CLI), `kb serve` (HTTP) and
`kb mcp` (MCP). tests/test_hostile.py drives each row through all three.

A row is a question and search options as a user, a script or an agent would send them,
and what each front end must answer:
  cli   the exit code of `kb ask` (None: the input cannot be given on a command line)
  http  the status of POST /ask (400 for bad input, as the CLI's exit 2)
  mcp   "ok", "tool-error" (a result with isError: the agent reads the message and can
        correct itself) or a JSON-RPC error code (-32602 invalid params, -32700 parse error)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAN, INF = float("nan"), float("inf")
QUESTION = "How big was the vote in favour of striking?"
# More --path globs than SQLite's expression tree allows as an OR of GLOBs (1000 deep).
MANY_GLOBS = [f"nowhere-{i}/*.txt" for i in range(300)] + ["*"]


@dataclass(frozen=True)
class Hostile:
    name: str
    question: str = QUESTION
    options: dict[str, Any] = field(default_factory=dict)  # k, mode, min_score, paths
    cli: int | None = 2
    http: int = 400
    mcp: str | int = "tool-error"
    message: str = ""  # a phrase the error must hold (CLI stderr, HTTP error, MCP text)


ROWS = [
    Hostile("empty question", question="", message="question is empty"),
    Hostile("blank question", question=" \t ", message="question is empty"),
    Hostile("min_score nan", options={"min_score": NAN}, message="finite"),
    Hostile("min_score inf", options={"min_score": INF}, message="finite"),
    Hostile("min_score -inf", options={"min_score": -INF}, message="finite"),
    Hostile("k zero", options={"k": 0}),
    Hostile("k huge", options={"k": 10**9}),
    Hostile("unknown mode", options={"mode": "telepathy"}),
    Hostile("empty path glob", options={"paths": [" "]}, message="--path needs a pattern"),
    # A lone surrogate is valid JSON ("\ud800") but not Unicode: HTTP and MCP refuse it;
    # on a command line it can only come from undecodable bytes, which kb cleans and asks.
    Hostile("lone surrogate in question", question="strike \ud800 vote", cli=0, http=400, mcp=-32700,
            message="lone surrogate"),
    Hostile("lone surrogate in a path glob", options={"paths": ["\udc80*"]}, cli=None, http=400, mcp=-32700,
            message="lone surrogate"),
    # Not errors: these must simply work.
    Hostile("300 path globs", options={"paths": MANY_GLOBS}, cli=0, http=200, mcp="ok"),
    Hostile("control characters", question="strike\x00\x07\x1b[31m vote", cli=0, http=200, mcp="ok"),
    Hostile("100 KB question", question="strike " * 15_000, cli=0, http=200, mcp="ok"),
]

# `kb ask --server URL` with a URL no client could use: one line, exit 2, no traceback.
BAD_SERVER_URLS = ["http://[::1", "http://local host:8765", "http://localhost:abc", "http://localhost:99999",
                   "http://", "ftp://localhost/", "http://localhost\n:8765"]

# Raw lines on `kb mcp`'s stdin -> (JSON-RPC error code, id of the reply). Every one that
# carries a readable id must get an answer with that id; none may hang the client.
MCP_LINES = [
    (b'{"jsonrpc":"2.0","id":101}', -32600, 101),  # no method
    (b'{"jsonrpc":"1.0","id":102,"method":"tools/list"}', -32600, 102),
    (b'{"id":103,"method":"tools/list"}', -32600, 103),  # no "jsonrpc"
    (b'{"jsonrpc":"2.0","id":104,"method":"tools/list","params":"x"}', -32602, 104),  # string params
    (b'{"jsonrpc":"2.0","id":105,"method":"tools/list","params":[1]}', -32602, 105),
    (b'{"jsonrpc":"2.0","id":106,"method":7}', -32600, 106),
    (b'{"jsonrpc":"2.0","id":107,"method":"tools/call","params":{"name":"search","arguments":{"question":"\\ud800"}}}',
     -32700, 107),  # a lone surrogate
    (b'{"jsonrpc":"2.0","id":108,"method":"tools/call","params":{"name":"sea', -32700, 108),  # truncated
    (b'{"jsonrpc":"2.0","id":"str-109","method":"tools/li', -32700, "str-109"),
    (b'{"jsonrpc":"2.0","id":110,"method":"tools/list"}\xff', -32700, 110),  # not UTF-8
    (b'{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}', -32600, None),  # an id that is no id
    (b'[{"jsonrpc":"2.0","id":111,"method":"tools/list"}]', -32600, None),  # a batch
    (b'"just a string"', -32600, None),
    (b"not json at all", -32700, None),
    (b'{"jsonrpc":"2.0","id":112,"method":"tools/call","params":{"name":"search","arguments":{"question":"'
     + b"x" * (5 << 20) + b'"}}}', -32600, 112),  # 5 MB: over the line limit
    (b'{"jsonrpc":"2.0","id":113,"method":"tools/list","params":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     -32700, 113),  # nested deeper than any parser's stack
    (b'{"jsonrpc":"2.0","id":114,"method":"nope"}', -32601, 114),  # the SDK's own answer, kept
]
