"""Serve: kb over the wire. `kb serve` (server, web/ page), `kb mcp` (mcp_server),
`kb ask --server` (client), and the indexed files they may show (sources).

May import knowledge_base and every stage below it; nothing imports serve but the CLI.
"""
