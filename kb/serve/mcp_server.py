"""`kb mcp`: the index as a Model Context Protocol server over stdio, for AI agents.

Tools:
- `search`: the passages that best answer a question. The text content is what
  `kb ask` prints (rank, score, citation, headings, passage), which a model reads
  well; the structured content is the object `kb ask --json` prints (one schema).
- `info`: what the index holds (`kb info`).
Resources: every indexed file, as the text kb indexed from it (a `file://` URI, listed
fresh on each request, so a re-index shows up). Only indexed files can be read, and
only while their bytes are the ones kb indexed (kb.serve.sources checks the SHA-256).

Built on the official `mcp` SDK (MCPServer), behind kb's own stdio reader
(kb.serve.mcp_stdio), which answers malformed JSON-RPC that the SDK would drop. Tools
run in the SDK's worker threads; one KnowledgeBase behind a lock answers them, since a
stdio server has one client. stdout carries the protocol, so nothing here prints; kb's
notes go to stderr.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal, Sequence
from urllib.parse import unquote, urlparse

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, TextContent
from mcp_types import Resource as McpResource

from ..errors import KbError, classify
from ..knowledge_base import KnowledgeBase
from ..query.render import hits_payload, hits_text, info_text
from .server import start_watcher, version
from .sources import IndexedFile, document_text, indexed_files

INSTRUCTIONS = """kb searches a local knowledge base of the user's documents.
Call `search` with a plain-English question; every hit carries its citation
(file:first-last line, plus page or record) and a score (hybrid: 0.85 x (0.5 x
cosine + 0.5 x BM25 share) + 0.15 x best sentence's cosine, 0.05 of it for question
words found near each other; answerable questions
mostly score 0.35-0.7, off-topic ones below 0.3). Quote the citation when you use a passage. Indexed files can be read
as resources."""


class KbMcpServer(MCPServer):
    """MCPServer whose resources are the index's files, listed fresh on every request."""

    def __init__(self, index_dir: str | os.PathLike):
        # WARNING: the SDK would otherwise log every call (and FAISS its loading) on stderr.
        super().__init__(name="kb", instructions=INSTRUCTIONS, version=version(), log_level="WARNING")
        self.kb = KnowledgeBase(index_dir, many_questions=True)
        self.lock = threading.Lock()  # one KnowledgeBase, used by one tool call at a time
        self.add_tool(self.search, name="search", structured_output=False)
        self.add_tool(self.info, name="info", structured_output=False)

    def search(self, question: str, k: int = 5, mode: Literal["hybrid", "dense", "lexical"] = "hybrid",
               paths: list[str] | None = None, min_score: float | None = None) -> CallToolResult:
        """Find the passages of the user's indexed documents that best answer a question.

        question: plain English. k: how many passages (1-100). mode: hybrid (meaning and
        exact words, the default), dense (meaning only) or lexical (exact words only).
        paths: only files matching any of these globs (a folder means all under it).
        min_score: drop weaker hits. Each hit has its text, citation and scores.
        """
        if not 1 <= k <= 100:
            raise ToolError("k must be between 1 and 100")
        hits = self._call(lambda kb: kb.ask(question, k, mode=mode, paths=paths or (), min_score=min_score))
        text = hits_text(question, hits, color=False) if hits else "no passage matched"
        return CallToolResult(content=[TextContent(text=text)], structured_content=hits_payload(question, hits))

    def info(self) -> CallToolResult:
        """What the index holds: documents, passages, model, chunking, build time and size."""
        data = self._call(lambda kb: kb.info())
        return CallToolResult(content=[TextContent(text=info_text(data))], structured_content=data)

    def _call(self, fn):
        try:
            with self.lock:
                return fn(self.kb)
        except KbError as e:  # the model reads the one-line message and can correct itself
            raise ToolError(str(e)) from None
        except BaseException as e:  # what the library let through (a Rust panic is a BaseException)
            error = classify(e)
            if error is None:
                raise
            raise ToolError(str(error)) from None

    async def list_resources(self) -> list[McpResource]:
        try:
            files = indexed_files(self.kb)
        except KbError:
            return []
        return [McpResource(uri=Path(f.abspath).as_uri(), name=f.source, mime_type="text/plain",
                            description=f"{f.source} as kb indexed it ({Path(f.abspath).suffix.lstrip('.')} file)",
                            size=f.size)
                for f in files]

    async def read_resource(self, uri: Any, context: Any = None):
        file = self._indexed(str(uri))
        try:
            text = document_text(file)
        except KbError as e:
            raise ResourceNotFoundError(str(e)) from None
        return [ReadResourceContents(content=text, mime_type="text/plain")]

    async def run_stdio_async(self) -> None:
        """The SDK's stdio loop behind kb's checked reader: malformed requests get answers."""
        from .mcp_stdio import checked_stdio

        async with checked_stdio() as (read_stream, write_stream):
            await self._lowlevel_server.run(read_stream, write_stream,
                                            self._lowlevel_server.create_initialization_options())

    def _indexed(self, uri: str) -> IndexedFile:
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            path = unquote(parsed.path)
            try:
                for f in indexed_files(self.kb):
                    if f.abspath == path:
                        return f
            except KbError as e:
                raise ResourceNotFoundError(str(e)) from None
        raise ResourceNotFoundError(f"{uri} is not a file in the index")


def run(index_dir: str | os.PathLike, watch: Sequence[str] = ()) -> None:
    """Serve over stdio until the client closes the connection; watch: files and folders
    the index follows meanwhile (kb.watch, in a thread; its notes go to stderr)."""
    server = KbMcpServer(index_dir)
    watcher = start_watcher(index_dir, watch) if watch else None
    try:
        server.run("stdio")
    finally:
        if watcher is not None:
            watcher.stop(timeout=30)

