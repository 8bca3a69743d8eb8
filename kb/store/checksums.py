"""Checksums of the derived files, recorded in SQLite, so changed bytes are caught.

The FAISS base, the exact vectors beside an IVF base and the files of a lexical folder
are derived from SQLite (kb.store.database). A changed byte in one of them does not
always stop it from opening: damaged float32 rows gave "cosines" of 1e18 that won every
question. So each file's size and CRC-32 are recorded in the meta table (`checksums`)
in the commit that names the generation, and checked:
- when a reader opens a generation: every size, the CRC of each file up to
  VERIFY_ON_OPEN_BYTES (tantivy's JSON files, small segments) and of a flat FAISS base,
  which FAISS reads whole anyway (31 MB at FLAT_MAX passages, ~10 ms). The mapped IVF
  lists and the exact rows are read a few pages per question: reading them whole at
  open would cost a cold question what the mapping saves, so their second line is the
  score check (a score outside its range is damage: kb.query.search);
- by every `kb index`, all of every file: what fails is written again from SQLite.

CRC-32 (zlib): 3.2 GB/s here against 0.7 for BLAKE2b (bench figures in notes); it is
meant to catch accidents (a bad disk, a stray write), not an attacker, who could edit
the database as easily.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Iterable

VERIFY_ON_OPEN_BYTES = 1 << 20
CHUNK = 1 << 20

Record = dict[str, list[int]]  # file name relative to the index folder -> [size, crc32]


def crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def generation_files(index_dir: Path, lexical: str | None, vector_files: Iterable[str]) -> list[str]:
    """Every derived file of a generation, relative to the index folder."""
    names = list(vector_files)
    if lexical and (index_dir / lexical).is_dir():
        names += sorted(f"{lexical}/{name}" for name in os.listdir(index_dir / lexical) if not name.endswith(".lock"))
    return names


def record(index_dir: Path, names: Iterable[str], previous: Record | None = None) -> Record:
    """The checksums of these files. A tantivy segment file never changes once written,
    and a new lexical folder holds hard links to the previous one's: a file of the same
    name and size as one already recorded (and verified by this run) keeps its CRC."""
    known = {_segment_name(name): value for name, value in (previous or {}).items() if _segment_name(name)}
    out: Record = {}
    for name in names:
        size = (index_dir / name).stat().st_size
        reused = known.get(_segment_name(name)) if _segment_name(name) else None
        out[name] = reused if reused and reused[0] == size else [size, crc32(index_dir / name)]
    return out


def damaged(index_dir: Path, recorded: Record, names: Iterable[str], *, limit: int | None = None) -> list[tuple[str, str]]:
    """(file, what is wrong) for each of these files that is missing or does not match
    its record (files with no record, from a kb that kept none, are not checked).
    limit: check the CRC only of files up to this size (sizes are always checked)."""
    problems = []
    for name in names:
        expected = recorded.get(name)
        if expected is None:
            continue
        path = index_dir / name
        try:
            size = path.stat().st_size
            if size != expected[0]:
                problems.append((name, f"its size is {size} bytes, not {expected[0]}"))
            elif (limit is None or size <= limit) and crc32(path) != expected[1]:
                problems.append((name, "its bytes changed (checksum mismatch)"))
        except FileNotFoundError:
            problems.append((name, "it is missing"))
    return problems


def _segment_name(name: str) -> str | None:
    """A lexical segment file's own name (same in every generation's folder), else None."""
    folder, _, base = name.partition("/")
    if not base or not folder.startswith("lexical.") or base.endswith(".json"):
        return None
    return base
