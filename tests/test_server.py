"""`kb serve` as users run it: a real process, real HTTP, the real model and index.

Every test here talks to a running server over a socket, so none can pass without one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner

from kb.cli import cli

from .conftest import ARTICLE, KB, running_server

QUESTION = "How big was the vote in favour of striking?"


def q(**params) -> str:
    return urllib.parse.urlencode(params, doseq=True)


def kb_ask_json(index_dir, *args) -> str:
    result = CliRunner().invoke(cli, ["ask", *args, "--json", "--index", str(index_dir)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# -- the API contract -----------------------------------------------------------------------
def test_health_and_info(server, article_index):
    status, health = server.json("/health")
    assert status == 200 and health["status"] == "ok"
    status, info = server.json("/info")
    cli_info = json.loads(CliRunner().invoke(cli, ["info", "--json", "--index", str(article_index)]).stdout)
    assert status == 200
    assert {k: info[k] for k in ("documents", "passages", "model", "generation", "chunking")} == \
           {k: cli_info[k] for k in ("documents", "passages", "model", "generation", "chunking")}


@pytest.mark.parametrize("params, cli_args", [
    ({"q": QUESTION}, [QUESTION]),
    ({"q": QUESTION, "k": 2, "mode": "lexical"}, [QUESTION, "-k", "2", "--mode", "lexical"]),
    ({"q": "Who is Jeremy Hunt?", "k": 3, "mode": "dense", "mmr": 0.5, "highlight": "false"},
     ["Who is Jeremy Hunt?", "-k", "3", "--mode", "dense", "--mmr", "0.5", "--no-highlight"]),
    ({"q": QUESTION, "path": ["nowhere/*", "*.txt"], "min_score": 0.2},
     [QUESTION, "--path", "nowhere/*", "--path", "*.txt", "--min-score", "0.2"]),
])
def test_get_ask_answers_exactly_what_kb_ask_json_prints(server, article_index, params, cli_args):
    status, headers, body = server.request(f"/ask?{q(**params)}")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert body.decode() == kb_ask_json(article_index, *cli_args)
    results = json.loads(body)["results"]
    assert results and all(set(r) >= {"rank", "score", "source", "line_start", "char_start", "sentence_start"}
                           for r in results)


def test_post_ask_answers_a_batch_in_order(server, article_index):
    questions = ["When is the first strike?", QUESTION, "What does ACAS do?"]
    status, answer = server.json("/ask", method="POST",
                                 body=json.dumps({"questions": questions, "k": 2, "mode": "hybrid"}).encode(),
                                 headers={"Content-Type": "application/json"})
    assert status == 200
    assert [a["question"] for a in answer["answers"]] == questions
    for a in answer["answers"]:
        assert a == json.loads(kb_ask_json(article_index, a["question"], "-k", "2"))


def test_no_results_is_an_empty_list_not_an_error(server):
    status, answer = server.json(f"/ask?{q(q=QUESTION, min_score=0.99)}")
    assert status == 200 and answer == {"question": QUESTION, "results": []}


BAD_GETS = [
    ("/ask", 400, "missing parameter 'q'"),
    (f"/ask?{q(q='')}", 400, "the question is empty"),
    (f"/ask?{q(q='   ')}", 400, "the question is empty"),
    (f"/ask?{q(q='x', k=0)}", 400, "k must be between 1 and 100"),
    (f"/ask?{q(q='x', k=10**12)}", 400, "k must be between 1 and 100"),
    (f"/ask?{q(q='x', k='five')}", 400, "k must be a whole number"),
    (f"/ask?{q(q='x', mode='fuzzy')}", 400, "unknown mode 'fuzzy'"),
    (f"/ask?{q(q='x', min_score='nan')}", 400, "min_score must be a number"),
    (f"/ask?{q(q='x', mmr=2)}", 400, "mmr must be between 0 and 1"),
    (f"/ask?{q(q='x', highlight='maybe')}", 400, "highlight must be true or false"),
    (f"/ask?{q(q=['x', 'y'])}", 400, "q given 2 times"),
    (f"/ask?{q(q='x')}&min-score=0.3", 400, "unknown parameter 'min-score'"),
    ("/info?verbose=1", 400, "unknown parameter 'verbose'"),
    ("/nothing-here", 404, "no such endpoint: GET /nothing-here"),
]


@pytest.mark.parametrize("path, status, message", BAD_GETS)
def test_bad_requests_get_one_line_json_errors(server, path, status, message):
    got, headers, body = server.request(path)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert message in error["error"] and "\n" not in error["error"] and "Traceback" not in error["error"]
    assert error["exit_code"] == 2


BAD_POSTS = [
    (b"{not json", 400, "the body is not valid JSON"),
    (b'["a list"]', 400, "must be a JSON object"),
    (b'{"questions": []}', 400, '"questions" must be a non-empty list of strings'),
    (b'{"questions": "one string"}', 400, '"questions" must be a non-empty list of strings'),
    (b'{"questions": [1, 2]}', 400, '"questions" must be a non-empty list of strings'),
    (b'{"questions": [""]}', 400, "the question is empty"),
    (b'{"questions": ["x"], "k": "5"}', 400, "k must be a whole number"),
    (b'{"questions": ["x"], "k": true}', 400, "k must be a whole number"),
    (b'{"questions": ["x"], "paths": "docs/*"}', 400, '"paths" must be a list'),
    (b'{"questions": ["x"], "highlight": "no"}', 400, "highlight must be true or false"),
    (b'{"questions": ["x"], "top_k": 3}', 400, "unknown parameter 'top_k'"),
    (json.dumps({"questions": ["x"] * 257}).encode(), 400, "at most 256 questions"),
]


@pytest.mark.parametrize("body, status, message", BAD_POSTS)
def test_bad_posts_get_one_line_json_errors(server, body, status, message):
    got, _, answer = server.request("/ask", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert got == status, answer
    error = json.loads(answer)
    assert message in error["error"] and "\n" not in error["error"]
    assert error["exit_code"] == 2


def test_an_oversized_body_is_refused_before_it_is_read(server):
    # Raw HTTP: the server answers from the declared length, without reading the megabytes.
    host, port = urllib.parse.urlsplit(server.url).hostname, urllib.parse.urlsplit(server.url).port
    with socket.create_connection((host, port), timeout=60) as conn:
        conn.sendall(b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n{\"questions\": [")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply
    assert json.loads(body) == {"error": "the request body is over 1024 KB", "exit_code": 2}


def test_method_not_allowed(server):
    got, _, body = server.request("/ask", method="DELETE")
    assert got == 405 and json.loads(body)["exit_code"] == 2


# -- the citation view: indexed files only ------------------------------------------------
def test_source_shows_the_lines_around_a_hit(server):
    hit = server.json(f"/ask?{q(q=QUESTION, k=1)}")[1]["results"][0]
    status, view = server.json("/source?" + q(source=hit["source"], line_start=hit["line_start"],
                                                line_end=hit["line_end"], context=2))
    assert status == 200 and view["stale"] is False
    numbers = [line["number"] for line in view["lines"]]
    assert numbers == list(range(max(1, hit["line_start"] - 2), hit["line_end"] + 3))
    text = ARTICLE.read_text(encoding="utf-8")
    for line in view["lines"]:  # each line is the file's own line, at its own offset
        assert text[line["start"] : line["start"] + len(line["text"])] == line["text"]
        assert text.split("\n")[line["number"] - 1] == line["text"]
    passage = [line for line in view["lines"] if hit["line_start"] <= line["number"] <= hit["line_end"]]
    assert passage[0]["start"] <= hit["char_start"] and hit["sentence_end"] <= passage[-1]["start"] + len(passage[-1]["text"])


@pytest.mark.parametrize("source", [
    "../../../../etc/passwd", "/etc/passwd", "{article}/../../../../../../etc/passwd", "{folder}/../corpus/{name}",
    "{folder}/./{name}", "{folder}//{name}", "{folder}/%2e%2e/%2e%2e/etc/passwd", "{article}\x00.png", "{folder}",
    "{article} ", "",
])
def test_source_serves_indexed_files_only(server, article_source, source):
    article = Path(article_source)
    source = source.format(article=article_source, folder=article.parent, name=article.name)
    status, _, body = server.request("/source?" + q(source=source, line_start=1))
    assert status == 404, body
    error = json.loads(body)
    assert "is not in the index" in error["error"] and error["exit_code"] == 2
    assert b"root:" not in body


def test_source_of_a_file_beside_the_indexed_one_is_refused(server, article_index):
    # A real file right next to the indexed one, which the server could open: not served.
    hit = server.json(f"/ask?{q(q=QUESTION, k=1)}")[1]["results"][0]
    article = ARTICLE.resolve()
    folder = Path(article_index).parent / "corpus"
    assert (folder / article.name).exists()
    for name in (str(Path(__file__).resolve()), str(folder / "kb.sqlite"), str(Path(article_index) / "kb.sqlite"),
                 hit["source"].replace(article.name, "../index/kb.sqlite"), str(article)):
        status, _, body = server.request("/source?" + q(source=name, line_start=1))
        assert status == 404 and b"not in the index" in body, name


@pytest.fixture(scope="module")
def article_source(server) -> str:
    """The article as the index cites it."""
    return server.json(f"/ask?{q(q=QUESTION, k=1)}")[1]["results"][0]["source"]


@pytest.mark.parametrize("params, status, message", [
    ({"line_start": 0}, 400, "line_start must be"),
    ({"line_start": 5, "line_end": 2}, 400, "line_end must be"),
    ({"line_start": 9999}, 404, "has no line 9999"),
    ({"line_start": 1, "context": 100000}, 400, "context must be between 0 and 200"),
    ({"line_start": 1, "page": 2}, 404, "has no line 1 on page 2"),
])
def test_source_bad_lines(server, article_source, params, status, message):
    got, _, body = server.request("/source?" + q(source=article_source, **params))
    assert got == status, body
    assert message in json.loads(body)["error"]


# -- concurrency ------------------------------------------------------------------------------
def test_eight_clients_at_once_all_get_right_answers(server):
    expected = server.json(f"/ask?{q(q=QUESTION, k=1, highlight='false')}")[1]
    failures: list = []

    def client():
        for _ in range(4):
            status, answer = server.json(f"/ask?{q(q=QUESTION, k=1, highlight='false')}")
            if status != 200 or answer != expected:
                failures.append((status, answer))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert "98 per cent" in expected["results"][0]["text"]


# -- re-indexing while serving ----------------------------------------------------------------
@pytest.fixture
def bird_corpus(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("The secret bird of the expedition is the albatross.\n\n"
                                      "Supplies were loaded at dawn and the ship left the harbour.\n", encoding="utf-8")
    return corpus


def test_the_server_answers_from_each_new_index_and_never_a_half_written_one(tmp_path, bird_corpus):
    index_dir = tmp_path / "index"

    def kb_index(env=None):
        return subprocess.run([str(KB), "index", str(bird_corpus), "--index", str(index_dir)], capture_output=True,
                              text=True, timeout=300, env={**__import__("os").environ, **(env or {})})

    with running_server(index_dir) as server:
        # No index yet: 503 with the CLI's exit code 3, and no restart needed once it exists.
        status, error = server.json(f"/ask?{q(q='Which bird?')}")
        assert status == 503 and error["exit_code"] == 3 and "run `kb index`" in error["error"]
        assert server.json("/info")[0] == 503

        assert kb_index().returncode == 0
        bird = lambda: server.json(f"/ask?{q(q='What is the secret bird?', k=1)}")  # noqa: E731
        status, answer = bird()
        assert status == 200 and "albatross" in answer["results"][0]["text"]

        (bird_corpus / "notes.txt").write_text(
            "The secret bird of the expedition is the pelican.\n\nSupplies were loaded at noon.\n", encoding="utf-8")
        # A `kb index` killed in the middle of writing: the server keeps the last complete index.
        crashed = kb_index({"KB_CRASH_AT": "writing"})
        assert crashed.returncode == -9
        assert "albatross" in bird()[1]["results"][0]["text"]

        # Hammer the server while a real re-index runs: every answer is one whole generation.
        seen, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                status, answer = bird()
                results = answer.get("results") if status == 200 else None
                text = results[0]["text"] if results else f"HTTP {status}: {answer}"
                seen.append((("albatross" in text) + 2 * ("pelican" in text), text))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            assert kb_index().returncode == 0
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        odd = [text for kind, text in seen if kind not in (1, 2)]
        assert seen and not odd, odd[:3]  # 1: old, 2: new; never neither or both
        status, answer = bird()
        assert "pelican" in answer["results"][0]["text"]
        assert server.json("/info")[1]["generation"] == 2


# -- security ----------------------------------------------------------------------------------
def test_token_guards_the_api_but_not_the_page(article_index, article_source):
    with running_server(article_index, "--token", "s3cret-token") as server:
        assert server.request("/health")[0] == 200
        assert server.request("/")[0] == 200
        assert server.request("/static/app.js")[0] == 200
        for path in ("/info", f"/ask?{q(q=QUESTION)}", "/source?" + q(source=article_source, line_start=1)):
            status, headers, body = server.request(path)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer")
            assert "needs a token" in json.loads(body)["error"]
            status, _, body = server.request(path, headers={"Authorization": "Bearer wrong"})
            assert status == 401 and json.loads(body)["error"] == "wrong token"
            assert server.request(path, headers={"Authorization": "Bearer s3cret-token"})[0] == 200


def test_a_localhost_server_refuses_foreign_host_headers(server):
    # A page on evil.example that rebinds its name to 127.0.0.1 must not read the index.
    status, _, body = server.request("/info", headers={"Host": "evil.example:8765"})
    assert status == 400 and b"Host" in body
    assert server.request("/info", headers={"Host": "localhost:1234"})[0] == 200


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "lets the network read the index"),
    (["--host", "0.0.0.0", "--token", "t", "--no-auth"], "exclude each other"),
    (["--token", "  "], "the token is empty"),
])
def test_serving_beyond_localhost_needs_a_token(tmp_path, args, message):
    done = subprocess.run([str(KB), "serve", "--index", str(tmp_path), "--port", "0", *args], capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in __import__("os").environ.items()
                                                       if k != "KB_TOKEN"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and done.stdout == ""


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([str(KB), "serve", "--index", str(tmp_path), "--port", str(port)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 8
    assert done.stderr.strip() == f"kb: cannot listen on 127.0.0.1:{port}: Address already in use"


# -- `kb ask --server`: the same output and exit codes as a local `kb ask` -------------------
def run_kb(*args, env=None, input=None, cwd=None):
    import os

    return subprocess.run([str(KB), *args], capture_output=True, text=True, timeout=300, input=input, cwd=cwd,
                          env={**{k: v for k, v in os.environ.items() if k not in ("KB_SERVER", "KB_TOKEN")},
                               **(env or {})})


@pytest.mark.parametrize("args", [
    [QUESTION, "-k", "2"],
    [QUESTION, "-k", "2", "--json"],
    ["When is the first strike?", "--mode", "lexical", "--no-highlight", "--json"],
    [QUESTION, "--min-score", "0.99"],
    [QUESTION, "--min-score", "0.99", "--json"],
    ["   ", "--json"],
    [QUESTION, "--mode", "dense", "--path", "nowhere/*"],
])
def test_kb_ask_server_prints_and_exits_like_kb_ask(server, article_index, args):
    local = run_kb("ask", *args, "--index", str(article_index))
    remote = run_kb("ask", *args, "--server", server.url)
    via_env = run_kb("ask", *args, env={"KB_SERVER": server.url})
    assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr)
    assert (via_env.returncode, via_env.stdout) == (local.returncode, local.stdout)


def test_kb_ask_server_batch_matches_local(server, article_index):
    lines = "When is the first strike?\n\n\x07\nWho is Jeremy Hunt?\n"
    local = run_kb("ask", "-", "--json", "-k", "2", "--index", str(article_index), input=lines)
    remote = run_kb("ask", "-", "--json", "-k", "2", "--server", server.url, input=lines)
    assert local.returncode == remote.returncode == 0
    assert remote.stdout == local.stdout and len(local.stdout.splitlines()) == 2


def test_kb_ask_server_errors(server, article_index, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    refused = run_kb("ask", "x", "--server", dead)
    assert refused.returncode == 3 and refused.stderr.startswith(f"kb: no kb server answering at {dead}")
    both = run_kb("ask", "x", "--server", server.url, "--index", str(article_index))
    assert both.returncode == 2 and "exclude each other" in both.stderr
    bad_url = run_kb("ask", "x", "--server", "localhost:8765")
    assert bad_url.returncode == 2 and "http:// or https://" in bad_url.stderr
    with running_server(tmp_path / "empty") as empty:
        no_index = run_kb("ask", "x", "--server", empty.url)
        assert no_index.returncode == 3 and no_index.stderr.count("\n") == 1 and "run `kb index`" in no_index.stderr
    with running_server(article_index, "--token", "abc") as guarded:
        anonymous = run_kb("ask", "x", "--server", guarded.url)
        assert anonymous.returncode == 2 and "give --token or set KB_TOKEN" in anonymous.stderr
        assert run_kb("ask", QUESTION, "--server", guarded.url, "--token", "abc").returncode == 0
        assert run_kb("ask", QUESTION, "--server", guarded.url, env={"KB_TOKEN": "abc"}).returncode == 0
    for result in (refused, both, bad_url, no_index, anonymous):
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_kb_ask_server_stays_light(server):
    probe = ("import sys\n"
             f"sys.argv = ['kb', 'ask', {QUESTION!r}, '--server', {server.url!r}, '--json']\n"
             "from kb.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "heavy = {'numpy', 'faiss', 'onnxruntime', 'tokenizers', 'torch', 'starlette', 'kb.knowledge_base'}\n"
             "print('LOADED', sorted(heavy & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[0])["results"] and lines[-1] == "LOADED []"


# -- `kb ask -`: each line answered as it arrives ------------------------------------------
@pytest.mark.parametrize("where", ["local", "server"])
def test_ask_stdin_answers_each_line_as_it_arrives(server, article_index, where):
    import os

    target = ["--index", str(article_index)] if where == "local" else ["--server", server.url]
    process = subprocess.Popen([str(KB), "ask", "-", "--json", "-k", "1", *target], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if k != "KB_SERVER"})
    try:
        # A co-process: the next question is written only after the answer to the last one
        # was read, which deadlocks unless each answer is flushed as soon as it exists.
        for question in ("When is the first strike?", QUESTION, "Who is Jeremy Hunt?"):
            process.stdin.write(question + "\n")
            process.stdin.flush()
            answer = _readline(process, timeout=120)
            assert answer is not None, f"no answer to {question!r} while stdin stays open"
            assert json.loads(answer)["question"] == question
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _readline(process, timeout):
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines and lines[0] else None


def test_the_listening_socket_is_tcp_so_answers_are_not_delayed():
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with proto 0 every
    # answer after the first on a keep-alive connection waited ~40 ms (Nagle vs delayed ACK).
    from kb.serve.server import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_the_cli_default_workers_is_the_servers():
    from kb.serve.server import DEFAULT_WORKERS

    workers = next(p for p in cli.commands["serve"].params if p.name == "workers")
    assert workers.default == DEFAULT_WORKERS
