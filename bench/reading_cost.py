"""What reading a folder costs and what the model will read: passages, tokens, CPU seconds.

    PYTHONPATH=<checkout> .venv/bin/python bench/reading_cost.py FOLDER

Run it with PYTHONPATH set to two checkouts (e.g. main and this one) to compare two ways
of reading the same files: the model's time follows the tokens embedded, the vector
index's size and a question's candidates follow the passages.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

from kb.embed.model import TokenCounter, packaged_model  # noqa: E402
from kb.ingest.documents import discover  # noqa: E402
from kb.ingest.passages import ChunkSettings  # noqa: E402
from kb.ingest.prepare import read_and_chunk  # noqa: E402


def main() -> None:
    counter = TokenCounter(packaged_model().tokenizer_file)
    files = discover([sys.argv[1]]).files
    started = time.process_time()
    texts = []
    for f in files:
        result = read_and_chunk(f, counter, ChunkSettings())
        if isinstance(result, tuple):
            texts += [p.embedding_text for p in result[1]]
    seconds = time.process_time() - started
    counts = counter.count(texts)
    print(" ".join(f"{k}={v}" for k, v in machine.describe().items()))
    print(f"{len(files)} files, {len(texts)} passages, {sum(counts)} tokens embedded "
          f"(median {statistics.median(counts):.0f}, {sum(c < 32 for c in counts)} under 32); "
          f"read and chunked in {seconds:.1f} s CPU")


if __name__ == "__main__":
    main()
