"""A watcher's claim on an index folder: at most one `kb watch` (or server --watch) per index.

A watcher holds an exclusive flock on `.kb.watch` for its whole life; the kernel drops it
when the process ends, however it ends (kill -9 included), so a claim is never stale. Beside
it, `.kb.watch.json` says who holds it: pid, since when, the folders watched and the last
update, rewritten atomically (temp file + rename) after each update. The writer lock
(`.kb.lock`, kb.knowledge_base) is a separate thing, held only while an update writes: a
watcher between updates is "attached", not writing, and readers never wait for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import IndexBusy

WATCH_LOCK = ".kb.watch"
WATCH_STATE = ".kb.watch.json"


class WatcherClaim:
    """This process's claim; raises IndexBusy (exit 6) at once when another watcher holds it."""

    def __init__(self, index_dir: str | os.PathLike, paths: Sequence[str]):
        self.index_dir = Path(index_dir)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.index_dir / WATCH_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(5):  # `kb info` takes a shared lock for a moment to look
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 4:
                    os.close(self._fd)
                    other = attached_watcher(self.index_dir) or {}
                    who = f" (pid {other['pid']}, since {other.get('since')})" if other.get("pid") else ""
                    raise IndexBusy(f"another watcher{who} already follows {self.index_dir}; "
                                    f"stop it first (one watcher per index)") from None
                time.sleep(0.01)
        self.state = {"pid": os.getpid(), "since": _now(), "paths": [str(p) for p in paths], "last_update": None}
        self._write_state()

    def record(self, update: dict) -> None:
        """Note an update (kb.watch.Update.to_dict()) as the last one, for `kb info`."""
        self.state["last_update"] = {"at": _now(), **update}
        self._write_state()

    def release(self) -> None:
        if self._fd is None:
            return
        (self.index_dir / WATCH_STATE).unlink(missing_ok=True)
        os.close(self._fd)  # drops the flock
        self._fd = None

    def _write_state(self) -> None:
        temporary = self.index_dir / f"{WATCH_STATE}.{os.getpid()}"
        temporary.write_text(json.dumps(self.state))
        os.replace(temporary, self.index_dir / WATCH_STATE)


def attached_watcher(index_dir: str | os.PathLike) -> dict | None:
    """The watcher following this index (pid, since, paths, last_update), or None."""
    path = Path(index_dir) / WATCH_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it: no watcher (the file outlives the last one)
        except BlockingIOError:
            pass
    finally:
        os.close(fd)
    try:
        return json.loads((Path(index_dir) / WATCH_STATE).read_text())
    except (OSError, ValueError):  # claimed a moment ago, not yet described
        return {"pid": None, "since": None, "paths": [], "last_update": None}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
