"""Hostile input through every front end: the CLI (CliRunner), a real `kb serve` and a
real `kb mcp` subprocess fed raw JSON-RPC lines. The rows are in tests/hostile.py.

Every reply is waited for with a timeout, so a front end that hangs fails the test
instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest
from click.testing import CliRunner

from kb.cli import cli

from .conftest import KB, running_server
from .hostile import BAD_SERVER_URLS, MCP_LINES, ROWS, Hostile

REPLY_TIMEOUT = 120.0  # generous (a shared machine, a model to load): only a hang reaches it


# -- the CLI -----------------------------------------------------------------------------------
def cli_args(row: Hostile, index_dir) -> list[str]:
    args = ["ask", row.question, "--index", str(index_dir)]
    for key, value in row.options.items():
        if key == "paths":
            for glob in value:
                args += ["--path", glob]
        else:
            args += [{"k": "-k", "mode": "--mode", "min_score": "--min-score"}[key], str(value)]
    return args


@pytest.mark.parametrize("row", [r for r in ROWS if r.cli is not None], ids=lambda r: r.name)
def test_cli(article_index, row):
    result = CliRunner().invoke(cli, cli_args(row, article_index))
    assert result.exit_code == row.cli, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if row.cli == 2:  # one `kb: ` line, or click's own usage error for a value it checks itself
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kb: ") or lines[-1].startswith("Error: "), result.stderr
        assert row.message in lines[-1]
    else:
        assert result.stdout.startswith("1. ")


# -- HTTP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_http(server, row):
    body = json.dumps({"questions": [row.question], **row.options}).encode()  # "\ud800" and NaN as JSON spells them
    status, _, reply = server.request("/ask", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert status == row.http, reply
    answer = json.loads(reply)
    if status == 200:
        assert answer["answers"][0]["results"]
    else:
        assert answer["exit_code"] == 2 and row.message in answer["error"]


# -- MCP over raw stdio --------------------------------------------------------------------------
class RawMcp:
    """`kb mcp` as a subprocess, spoken to in raw lines; replies collected by id."""

    def __init__(self, index_dir):
        self.process = subprocess.Popen([str(KB), "mcp", "--index", str(index_dir)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        self.replies: dict = {}
        self.anonymous: list[dict] = []  # replies with a null id, in order
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # never let stderr fill up
        self.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}))
        assert "result" in self.reply("init")
        self.send('{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def _read(self):
        for line in self.process.stdout:
            message = json.loads(line)  # every line the server writes must be JSON
            with self.changed:
                if message.get("id") is None:
                    self.anonymous.append(message)
                else:
                    self.replies[message["id"]] = message
                self.changed.notify_all()

    def send(self, line: str | bytes) -> None:
        self.process.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        self.process.stdin.flush()

    def reply(self, request_id) -> dict:
        with self.changed:
            if not self.changed.wait_for(lambda: request_id in self.replies or self.process.poll() is not None,
                                         REPLY_TIMEOUT):
                raise AssertionError(f"kb mcp sent no reply to id {request_id!r} within {REPLY_TIMEOUT:.0f} s")
        assert request_id in self.replies, f"kb mcp exited ({self.process.returncode}) without answering"
        return self.replies.pop(request_id)

    def anonymous_reply(self, line: bytes) -> dict:
        with self.changed:
            seen = len(self.anonymous)
        self.send(line)
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.anonymous) > seen, REPLY_TIMEOUT), f"no reply to {line!r}"
            return self.anonymous[seen]

    def close(self):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def mcp(article_index):
    client = RawMcp(article_index)
    yield client
    client.close()


_ids = iter(range(1000, 10**6))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_mcp(mcp, row):
    request_id = next(_ids)
    mcp.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                         "params": {"name": "search", "arguments": {"question": row.question, **row.options}}}))
    reply = mcp.reply(request_id)
    if isinstance(row.mcp, int):
        assert reply["error"]["code"] == row.mcp, reply
        assert row.message in reply["error"]["message"]
    else:
        result = reply["result"]
        assert result["isError"] is (row.mcp == "tool-error"), result
        if row.mcp == "ok":
            assert result["structuredContent"]["results"]
        else:
            assert row.message in result["content"][0]["text"]


@pytest.mark.parametrize("line, code, request_id", MCP_LINES, ids=[str(i) for i in range(len(MCP_LINES))])
def test_mcp_malformed_lines_get_answers(mcp, line, code, request_id):
    if request_id is None:
        reply = mcp.anonymous_reply(line)
    else:
        mcp.send(line)
        reply = mcp.reply(request_id)
    assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == code, reply
    assert reply["id"] == request_id
    # ...and the server still answers a good request afterwards.
    mcp.send(json.dumps({"jsonrpc": "2.0", "id": "after", "method": "tools/list"}))
    assert {t["name"] for t in mcp.reply("after")["result"]["tools"]} == {"search", "info"}


def test_mcp_broken_notification_gets_no_answer(mcp):
    # JSON-RPC never answers a notification, broken or not: the next reply is the next request's.
    with mcp.changed:
        before = len(mcp.anonymous)
    mcp.send('{"jsonrpc":"1.0","method":"notifications/initialized"}')
    mcp.send('{"jsonrpc":"2.0","method":"notifications/x","params":"oops"}')
    mcp.send(json.dumps({"jsonrpc": "2.0", "id": "next", "method": "tools/list"}))
    assert "result" in mcp.reply("next")
    with mcp.changed:  # replies are written in order: anything for the notifications came first
        assert len(mcp.anonymous) == before


# -- the client --------------------------------------------------------------------------------
@pytest.mark.parametrize("url", BAD_SERVER_URLS)
def test_malformed_server_url_is_one_line(url):
    result = CliRunner().invoke(cli, ["ask", "anything", "--server", url])
    assert result.exit_code == 2, (result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kb: ") and "--server" in lines[0], result.stderr


@pytest.mark.parametrize("token", ["тайна-σ-秘密", "café-latin-1"])
def test_non_latin1_token_works_with_kb_client_and_raw_utf8(article_index, token):
    """The server compares the token's UTF-8 bytes; kb's client must send those (as curl does)."""
    import http.client
    import urllib.parse

    with running_server(article_index, "--token", token) as running:
        ask = subprocess.run([str(KB), "ask", "How big was the vote?", "-k", "1", "--json", "--server", running.url,
                              "--token", token], capture_output=True, text=True, timeout=REPLY_TIMEOUT)
        assert ask.returncode == 0, ask.stderr
        assert "Traceback" not in ask.stderr and json.loads(ask.stdout)["results"]
        wrong = subprocess.run([str(KB), "ask", "vote", "--server", running.url, "--token", token + "x"],
                               capture_output=True, text=True, timeout=REPLY_TIMEOUT)
        assert wrong.returncode == 2 and "wrong token" in wrong.stderr
        # A raw client sending the UTF-8 bytes, as curl -H "Authorization: Bearer $TOKEN" does.
        address = urllib.parse.urlsplit(running.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=REPLY_TIMEOUT)
        connection.putrequest("GET", "/info")
        connection.putheader("Authorization", b"Bearer " + token.encode("utf-8"))
        connection.endheaders()
        assert connection.getresponse().status == 200


def test_token_with_a_line_break_is_refused_by_the_client():
    result = CliRunner().invoke(cli, ["ask", "x", "--server", "http://127.0.0.1:1", "--token", "a\nb"])
    assert result.exit_code == 2 and "control characters" in result.stderr
