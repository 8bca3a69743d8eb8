"""What checking an index for damage costs (kb.store.checksums, kb.ingest.pipeline's verify).

    python bench/verify_cost.py INDEX

On a copy of an index (build one with bench/scale.py): recording every derived file's
CRC-32 (a run that rewrites everything), the check a reader makes when it opens a
generation (sizes, CRC of files up to VERIFY_ON_OPEN_BYTES), the full check every
`kb index` makes, and PRAGMA quick_check of the database; best of 3, page cache warm.
Read-only: nothing in INDEX is changed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import machine  # noqa: E402

from kb.store import checksums  # noqa: E402
from kb.store.vector_index import VectorLayout  # noqa: E402


def best(fn, runs: int = 3):
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(index: Path) -> None:
    print(machine.line())
    conn = sqlite3.connect(f"file:{index / 'kb.sqlite'}?mode=ro", uri=True)
    meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    passages = conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
    layout = VectorLayout.from_dict(meta["vectors"])
    names = checksums.generation_files(index, meta["lexical"], layout.files())
    size = sum((index / n).stat().st_size for n in names)
    t_record, recorded = best(lambda: checksums.record(index, names))
    t_open, _ = best(lambda: checksums.damaged(index, recorded, names, limit=checksums.VERIFY_ON_OPEN_BYTES))
    t_full, _ = best(lambda: checksums.damaged(index, recorded, names))
    t_check, check = best(lambda: conn.execute("PRAGMA quick_check").fetchone()[0])
    database = (index / "kb.sqlite").stat().st_size
    print(f"{passages} passages, derived files {size / 1e6:.0f} MB in {len(names)} files, kb.sqlite {database / 1e6:.0f} MB")
    print(f"record every checksum: {t_record * 1000:.0f} ms; verify at open: {t_open * 1000:.1f} ms; "
          f"verify every byte (kb index): {t_full * 1000:.0f} ms; PRAGMA quick_check: {t_check * 1000:.0f} ms ({check})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
