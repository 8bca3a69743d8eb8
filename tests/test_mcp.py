"""`kb mcp` driven by the official SDK's own client over stdio, as an agent's host runs it."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from .conftest import ARTICLE, KB


def with_session(index_dir, check) -> None:
    """Start `kb mcp` as a subprocess, initialize, and run check(session, init) against it."""
    params = StdioServerParameters(command=str(KB), args=["mcp", "--index", str(index_dir)], env=dict(os.environ))

    async def main():
        with anyio.fail_after(300):
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    init = await session.initialize()
                    await check(session, init)

    anyio.run(main)


def test_initialize_list_tools_search_and_cite(article_index):
    async def check(session, init):
        assert init.server_info.name == "kb"
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"search", "info"}
        assert {"question", "k", "mode", "paths"} <= set(tools["search"].input_schema["properties"])
        assert tools["search"].input_schema["required"] == ["question"]

        result = await session.call_tool("search", {"question": "How big was the vote in favour of striking?",
                                                    "k": 2})
        assert not result.is_error
        hits = result.structured_content["results"]
        assert len(hits) == 2 and "98 per cent" in hits[0]["text"]
        # The citation points at the real lines of the real file.
        source = Path(hits[0]["source"])
        assert source.name == ARTICLE.name
        text = source.read_text(encoding="utf-8") if source.is_absolute() else ARTICLE.read_text(encoding="utf-8")
        assert text[hits[0]["char_start"] : hits[0]["char_end"]] == hits[0]["text"]
        citation = f"{hits[0]['source']}:{hits[0]['line_start']}-{hits[0]['line_end']}"
        assert f"1. [{hits[0]['score']:.3f}] {citation}" in result.content[0].text

        info = await session.call_tool("info", {})
        assert not info.is_error and info.structured_content["passages"] > 0
        assert "passages" in info.content[0].text

    with_session(article_index, check)


def test_search_filters_and_errors_reach_the_agent(article_index):
    async def check(session, init):
        filtered = await session.call_tool("search", {"question": "strike", "paths": ["nowhere/*"]})
        assert not filtered.is_error and filtered.structured_content["results"] == []
        lexical = await session.call_tool("search", {"question": "ACAS", "mode": "lexical", "k": 1})
        assert "ACAS" in lexical.structured_content["results"][0]["text"]
        empty = await session.call_tool("search", {"question": "   "})
        assert empty.is_error and "the question is empty" in empty.content[0].text
        huge = await session.call_tool("search", {"question": "x", "k": 10**9})
        assert huge.is_error and "k must be between 1 and 100" in huge.content[0].text
        bad_mode = await session.call_tool("search", {"question": "x", "mode": "fuzzy"})
        assert bad_mode.is_error

    with_session(article_index, check)


def test_indexed_files_are_resources_and_nothing_else_is(article_index):
    async def check(session, init):
        resources = (await session.list_resources()).resources
        assert [Path(r.name).name for r in resources] == [ARTICLE.name]
        content = await session.read_resource(resources[0].uri)
        assert content.contents[0].text == ARTICLE.read_text(encoding="utf-8")
        for uri in ("file:///etc/passwd", str(resources[0].uri).replace(ARTICLE.name, "../index/kb.sqlite"),
                    Path(__file__).resolve().as_uri(), "https://example.com/"):
            with pytest.raises(MCPError, match="not a file in the index"):
                await session.read_resource(uri)

    with_session(article_index, check)


def test_no_index_is_a_tool_error_not_a_crash(tmp_path):
    async def check(session, init):
        result = await session.call_tool("search", {"question": "anything"})
        assert result.is_error and "no index at" in result.content[0].text
        assert (await session.list_resources()).resources == []

    with_session(tmp_path / "missing", check)
