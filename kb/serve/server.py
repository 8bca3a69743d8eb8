"""`kb serve`: one warm process that answers over HTTP, for scripts, notebooks and a web page.

    GET  /ask?q=...&k=&mode=&min_score=&path=&mmr=&highlight=   one question -> `kb ask --json`'s object
    POST /ask {"questions": [...], "k": ..., ...}                a batch -> {"answers": [...]}
    GET  /info    `kb info --json`        GET /health   liveness, no data
    GET  /source?source=&line_start=&line_end=&page=&record=&context=   lines around a citation
    GET  /        the web page (kb/web/: plain HTML, CSS and JS, no build step, no CDN)

Why Starlette on uvicorn: the API is five small routes whose validation must speak kb's
error language (one line, the CLI's exit code) rather than a framework's; Starlette is
the small ASGI core that FastAPI and the MCP SDK are built on (the SDK brings it anyway).
FastAPI's free /docs would load Swagger UI from a CDN, which cannot work offline.

Concurrency: a KnowledgeBase is not made for concurrent calls, so the server keeps a
small pool of them over the same index, each used by one worker thread at a time (the
embedding model is shared per process). Searching is CPU-bound and runs in those
threads, never on the event loop; onnxruntime, FAISS and SQLite release the GIL, so two
workers overlap on two cores. Each KnowledgeBase notices a newly committed generation
by itself (one PRAGMA per call) and never sees a half-written index.

Every response to a user's mistake is JSON `{"error": "...", "exit_code": N}` with the
CLI's exit code, never a traceback; see STATUS for the HTTP statuses.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import queue
import socket
import sys
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import EXIT_IO_ERROR, BadInput, KbError, NotIndexed, classify
from ..knowledge_base import KnowledgeBase
from ..query.render import hits_json, hits_payload
from .mcp_stdio import has_lone_surrogate
from .sources import find_indexed, source_view

WEB_DIR = Path(__file__).resolve().parent / "web"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Two workers: on 2 cores they beat one behind a lock by overlapping the GIL-free parts
# (see the README's serve figures); each holds its own copy of the vector index.
DEFAULT_WORKERS = 2
MAX_K = 100  # a page or an agent never reads more; a huge k would only allocate
MAX_QUESTIONS = 256  # per POST /ask
MAX_BODY_BYTES = 1 << 20
MAX_CONTEXT_LINES = 200

# Exit code -> HTTP status. No results (1) is not an error on the web: 200 with "results": [].
# An I/O condition (8: disk full, too many open files, an I/O error) is the server's state,
# not the request's and not damage: 503, as for a busy index, so clients retry.
STATUS = {2: 400, 3: 503, 4: 503, 5: 500, 6: 503, EXIT_IO_ERROR: 503}
PUBLIC_PATHS = ("/", "/health", "/favicon.ico")  # no index data: reachable without a token
ASK_PARAMS = ("q", "k", "mode", "min_score", "path", "mmr", "highlight")
SOURCE_PARAMS = ("source", "line_start", "line_end", "page", "record", "context")

log = logging.getLogger("kb.server")


class Pool:
    """KnowledgeBase objects over one index, each lent to one worker thread at a time."""

    def __init__(self, index_dir: str | os.PathLike, workers: int = DEFAULT_WORKERS):
        self.index_dir = Path(index_dir)
        self.workers = workers
        self._idle: queue.SimpleQueue[KnowledgeBase] = queue.SimpleQueue()
        for _ in range(workers):
            self._idle.put(KnowledgeBase(index_dir, many_questions=True))
        self._limiter = anyio.CapacityLimiter(workers)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(kb, *args) in a worker thread, off the event loop."""
        return await anyio.to_thread.run_sync(self._call, fn, args, limiter=self._limiter)

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        kb = self._idle.get()
        try:
            return fn(kb, *args)
        finally:
            self._idle.put(kb)

    def warm_up(self) -> str | None:
        """Open the index and load the model in every worker, so the first request is
        fast; returns why that was not possible (no index yet...), else None."""
        problem = None
        kbs = [self._idle.get() for _ in range(self.workers)]
        try:
            for kb in kbs:
                try:
                    kb.ask("warm up", k=1)
                except KbError as e:
                    problem = str(e)
        finally:
            for kb in kbs:
                self._idle.put(kb)
        return problem


def create_app(index_dir: str | os.PathLike, *, token: str | None = None, workers: int = DEFAULT_WORKERS,
               allowed_hosts: Sequence[str] | None = None, on_ready: Callable[[], None] | None = None,
               watching: bool = False) -> Starlette:
    """The ASGI app over one index.

    token: when set, every route but the page and /health needs `Authorization: Bearer
    TOKEN`. allowed_hosts: when set, requests naming another Host are refused, which stops
    DNS-rebinding pages from reading a localhost server. on_ready: called once warm.
    watching: a watcher in this process keeps the index up to date (kb.watch).
    """
    pool = Pool(index_dir, workers)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        problem = await anyio.to_thread.run_sync(pool.warm_up)
        if problem and watching:
            # The watcher's catch-up is building it (its own errors are its notes).
            print("kb: note: the index is not ready yet; answering 503 until the watcher has indexed the folder",
                  file=sys.stderr, flush=True)
        elif problem:
            print(f"kb: note: {problem}; answering 503 until it is fixed", file=sys.stderr, flush=True)
        if on_ready:
            on_ready()
        yield

    async def ask_get(request: Request) -> Response:
        params = request.query_params
        _only(params.keys(), ASK_PARAMS)
        question = _one(params, "q", required=True)
        options = _ask_options({key: _one(params, key) for key in ASK_PARAMS if key not in ("q", "path")},
                               params.getlist("path"), strings=True)
        hits = (await pool.run(_ask, [question], options))[0]
        return Response(hits_json(question, hits), media_type="application/json")

    async def ask_post(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise BadInput('the body must be a JSON object like {"questions": ["..."]}')
        _only(body.keys(), ("questions", "k", "mode", "min_score", "paths", "mmr", "highlight"))
        questions = body.get("questions")
        if not isinstance(questions, list) or not questions or not all(isinstance(q, str) for q in questions):
            raise BadInput('"questions" must be a non-empty list of strings')
        if len(questions) > MAX_QUESTIONS:
            raise BadInput(f"at most {MAX_QUESTIONS} questions per request")
        paths = body.get("paths", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadInput('"paths" must be a list of glob strings')
        options = _ask_options({k: v for k, v in body.items() if k not in ("questions", "paths")}, paths,
                               strings=False)
        answers = await pool.run(_ask, questions, options)
        return JSONResponse({"answers": [hits_payload(q, hits) for q, hits in zip(questions, answers)]})

    async def info(request: Request) -> Response:
        _only(request.query_params.keys(), ())
        return JSONResponse(await pool.run(lambda kb: kb.info()))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": version()})

    async def source(request: Request) -> Response:
        params = request.query_params
        _only(params.keys(), SOURCE_PARAMS)
        name = _one(params, "source", required=True)
        line_start = _int(_one(params, "line_start", required=True), "line_start", 1)
        line_end = _one(params, "line_end")
        page = _one(params, "page")
        view = dict(
            line_start=line_start,
            line_end=line_start if line_end is None else _int(line_end, "line_end", line_start),
            page=None if page is None else _int(page, "page", 1),
            record=_one(params, "record"),
            context=_int(_one(params, "context") or "10", "context", 0, MAX_CONTEXT_LINES),
        )
        return JSONResponse(await pool.run(lambda kb: source_view(find_indexed(kb, name), **view)))

    async def page(request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/ask", ask_get, methods=["GET"]),
        Route("/ask", ask_post, methods=["POST"]),
        Route("/source", source, methods=["GET"]),
        Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        KbError: _kb_error, HTTPException: _http_error, Exception: _unclassified_error,
    })
    return _Guard(app, token=token, allowed_hosts=allowed_hosts)


# -- requests -------------------------------------------------------------------------------
def _ask(kb: KnowledgeBase, questions: list[str], options: dict) -> list:
    return kb.ask_many(questions, **options)


def _ask_options(values: Mapping[str, Any], paths: Sequence[str], *, strings: bool) -> dict:
    """ask_many's keyword arguments from query strings (strings=True) or JSON values."""
    def number(key: str) -> float | None:
        value = values.get(key)
        if value is None:
            return None
        if strings:
            try:
                value = float(value)
            except ValueError:
                raise BadInput(f"{key} must be a number, not {values[key]!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadInput(f"{key} must be a number, not {values[key]!r} (a finite one, not NaN or infinity)")
        return float(value)

    k = values.get("k")
    k = 5 if k is None else _int(k, "k", 1, MAX_K) if strings else _int_value(k, "k", 1, MAX_K)
    mode = values.get("mode") or "hybrid"  # checked by the library: one list of modes
    if not isinstance(mode, str):
        raise BadInput(f"mode must be a string, not {mode!r}")
    mmr = number("mmr")
    if mmr is not None and not 0.0 <= mmr <= 1.0:
        raise BadInput("mmr must be between 0 and 1")
    highlight = values.get("highlight")
    if highlight is None:
        highlight = True
    elif strings:
        highlight = _bool(highlight, "highlight")
    elif not isinstance(highlight, bool):
        raise BadInput(f"highlight must be true or false, not {highlight!r}")
    return {"k": k, "mode": mode, "min_score": number("min_score"), "paths": list(paths), "mmr": mmr,
            "best_sentence": highlight}


def _only(keys, allowed: Sequence[str]) -> None:
    """Unknown parameters are refused: a misspelt `min-score` must not be silently ignored."""
    for key in keys:
        if key not in allowed:
            expected = ", ".join(allowed) or "none"
            raise BadInput(f"unknown parameter {key!r} (expected: {expected})")


def _one(params, key: str, *, required: bool = False) -> str | None:
    values = params.getlist(key)
    if len(values) > 1:
        raise BadInput(f"{key} given {len(values)} times")
    if not values:
        if required:
            raise BadInput(f"missing parameter {key!r}")
        return None
    return values[0]


def _int(text: str, key: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be a whole number, not {text!r}") from None
    return _int_value(value, key, low, high)


def _int_value(value: Any, key: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{key} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise BadInput(f"{key} must be between {low} and {high}" if high is not None else f"{key} must be at least {low}")
    return value


def _bool(text: Any, key: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BadInput(f"{key} must be true or false, not {text!r}")


async def _json_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"the request body is over {MAX_BODY_BYTES // 1024} KB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request body is over {MAX_BODY_BYTES // 1024} KB")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:
        raise BadInput(f"the body is not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if has_lone_surrogate(body):
        raise BadInput("the body holds a lone surrogate (\\ud800-\\udfff), which is not Unicode")
    return body


# -- errors: one JSON line with the CLI's exit code ---------------------------------------
def error_response(status: int, message: str, exit_code: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "exit_code": exit_code}, status_code=status, headers=headers)


async def _kb_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, KbError)
    status = 404 if isinstance(e, NotIndexed) else STATUS.get(e.exit_code, 500)
    return error_response(status, str(e), e.exit_code,
                          {"Retry-After": "5"} if e.exit_code in (6, EXIT_IO_ERROR) else None)


async def _http_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, HTTPException)
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, e.detail)
    return error_response(e.status_code, message, 2, e.headers)


async def _unclassified_error(request: Request, e: Exception) -> Response:
    """What the library let through: kb.errors.classify names it (as the CLI does), else a bug."""
    error = classify(e)
    return await (_kb_error(request, error) if error is not None else _internal_error(request, e))


async def _internal_error(request: Request, e: Exception) -> Response:
    # A bug, not the user's doing: the details go to the server's log, not to the client.
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=e)
    return error_response(500, f"internal error ({type(e).__name__}); see the server's log", 1)


# -- the guard: token, Host and security headers ------------------------------------------
class _Guard:
    """ASGI middleware in front of everything.

    Checks the bearer token (constant-time) on every non-public path, refuses Host
    headers it does not know when the server is local (DNS rebinding), and adds headers
    that keep a browser from sniffing, framing or leaking the page.
    """

    def __init__(self, app, *, token: str | None, allowed_hosts: Sequence[str] | None):
        self.app = app
        self.token = os.fsencode(token) if token else None  # the bytes it was given as (UTF-8), as clients send it
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        refusal = self._refusal(scope["path"], headers)
        if refusal is not None:
            return await refusal(scope, receive, _with_security_headers(send))
        return await self.app(scope, receive, _with_security_headers(send))

    def _refusal(self, path: str, headers: dict[str, bytes]) -> Response | None:
        if self.allowed_hosts is not None and _host_name(headers.get("host", b"")) not in self.allowed_hosts:
            return error_response(400, "unexpected Host header (this server answers on localhost only)", 2)
        if self.token is None or path in PUBLIC_PATHS or path.startswith("/static/"):
            return None
        given = headers.get("authorization", b"")
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token):
            return None
        message = "this server needs a token: send Authorization: Bearer TOKEN" if not given else "wrong token"
        return error_response(401, message, 2, {"WWW-Authenticate": 'Bearer realm="kb"'})


def _with_security_headers(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"DENY"),
                        (b"content-security-policy",
                         b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'")]
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


def _host_name(host: bytes) -> str:
    """The name in a Host header, without the port ("[::1]:8765" -> "::1")."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def is_loopback(host: str) -> bool:
    """Whether binding to host keeps the server on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def version() -> str:
    """kb's installed version (for /health and the MCP handshake)."""
    try:
        return metadata.version("kb")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- running it -----------------------------------------------------------------------------
def serve(index_dir: str | os.PathLike, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          token: str | None = None, no_auth: bool = False, workers: int = DEFAULT_WORKERS,
          watch: Sequence[str] = ()) -> None:
    """Run `kb serve` until interrupted.

    watch: files and folders the index follows while serving (kb.watch, in a thread);
    questions are answered from the last committed generation throughout.

    Binding beyond localhost makes the index readable by the network, so it needs a token
    unless the user says --no-auth. The socket is bound here, before uvicorn starts, so a
    port in use is one clear line, and port 0 picks a free port that is then announced.
    """
    import uvicorn

    if token is not None and not token.strip():
        raise BadInput("the token is empty")
    if token and no_auth:
        raise BadInput("--token and --no-auth exclude each other")
    local = is_loopback(host)
    if not local and not token and not no_auth:
        raise BadInput(f"serving on {host} lets the network read the index: give --token (or set KB_TOKEN), "
                       "or --no-auth if that is really meant")
    sock = _listen(host, port)
    watcher = start_watcher(index_dir, watch) if watch else None
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}/"
    allowed = {"localhost", "127.0.0.1", "::1", host.lower().strip("[]")} if local else None

    def ready() -> None:
        auth = " (token required)" if token else ""
        print(f"kb: serving {index_dir} at {url}{auth}; Ctrl-C stops", flush=True)

    app = create_app(index_dir, token=token, workers=workers, allowed_hosts=allowed, on_ready=ready,
                     watching=watcher is not None)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.stop(timeout=30)


def start_watcher(index_dir: str | os.PathLike, paths: Sequence[str]):
    """A kb.watch.Watcher over paths in a thread of this server, reporting on stderr; a
    second watcher on the index is refused here (IndexBusy, exit 6), before serving."""
    from ..watch import Watcher

    watcher = Watcher(KnowledgeBase(index_dir), paths,
                      on_update=lambda update: print(update.line(), file=sys.stderr, flush=True))
    watcher.start()
    return watcher


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and
        # without it every answer after the first on a keep-alive connection waits ~40 ms
        # (Nagle's algorithm against the client's delayed ACK).
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except socket.gaierror as e:
        raise BadInput(f"cannot listen on {host}: {e.strerror}") from None
    except OSError as e:
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock
