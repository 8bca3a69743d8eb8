"""Real passages for the benches: kb's own chunks of a folder of documents, cached."""

from __future__ import annotations

import json
import os
from pathlib import Path


def passages(docs: Path, cache: Path) -> list[dict]:
    """kb's passages of every file under docs (cached as JSON lines)."""
    path = cache / "passages.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.open(encoding="utf-8")]
    from kb.ingest.documents import discover, read_document
    from kb.embed.model import TokenCounter, packaged_model
    from kb.ingest.passages import ChunkSettings, make_passages

    counter = TokenCounter(packaged_model().tokenizer_file)
    rows = []
    for f in discover([docs]).files:
        try:
            document = read_document(f)
        except (OSError, ValueError):
            continue
        rows.extend({"src": f.source, "text": p.text, "ctx": p.context}
                    for p in make_passages(document, counter, ChunkSettings()))
    cache.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path.with_suffix(".tmp"), path)
    return rows
