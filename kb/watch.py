"""`kb watch`: an index that follows its folders as they change.

    catch up   one ordinary KnowledgeBase.index(paths) run, so what changed while nothing
               watched is found (and a killed run, or watcher, is resumed)
    watch      the kernel's notifications (inotify on Linux, FSEvents on macOS) through
               watchdog; its observer thread blocks in read(), so an idle watcher costs no
               CPU. Polling (one stat walk a second) only where notifications cannot work:
               a network file system, or an exhausted inotify watch limit (a note says so)
    coalesce   paths collect until QUIET seconds pass with no event (MAX_BURST at most), so
               an editor's temp-file-and-rename is one update and a checkout of 500 files one
               or two; a file written in the last QUIET seconds waits for the next round, so
               a copy in progress is read once complete
    update     KnowledgeBase.index(paths, changed=...): only the touched files and folders
               are looked at (no walk of the tree), through the same pipeline as `kb index`:
               vectors reused by content (a rename embeds nothing), one atomic generation,
               resumable. An edit to a .gitignore/.kbignore re-walks everything once.

The guarantees of `kb index` hold: one writer (the writer lock is taken per update only,
so a hand-run `kb index` waits for the update in flight; kb.knowledge_base), one watcher
per index (kb.store.watcher_lock: a second one is refused at once), readers answering from
the last committed generation throughout. Events in the index folder, in hidden paths
(.git/ included) and in files of types kb does not read never cause an update.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import BadInput, IndexBusy, KbError
from .ingest.documents import DEFAULT_MAX_FILE_SIZE, IGNORE_FILES
from .store.watcher_lock import WatcherClaim

if TYPE_CHECKING:
    from .ingest.passages import ChunkSettings
    from .ingest.pipeline import IndexReport
    from .knowledge_base import KnowledgeBase

# A burst ends after this long without events. An editor's temp-file-and-rename spans 1 ms;
# the longest silence inside a 500-file `git checkout` or `cp -r` was 0.07-0.17 s on a busy
# 2-core machine (bench/watch_latency.py --gaps): 0.3 s bridges those with margin, and is a
# small part of the edit-to-answer latency (an update's durable commit takes more).
QUIET = 0.3
# ...or after this long, whatever keeps happening (a long copy is indexed as it goes).
MAX_BURST = 5.0
BUSY_RETRY = 1.0  # seconds between tries when a hand-run `kb index` holds the writer lock
POLL_INTERVAL = 1.0  # seconds between stat walks, where notifications cannot be used
NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre",
                        "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "davfs", "fuse.davfs2", "fuse.gcsfuse"}


@dataclass
class Update:
    """One batch of changes applied to the index."""

    kind: str  # "catch-up" (the first run), "update" (the touched paths), "rescan" (ignore files edited)
    report: IndexReport
    changed_paths: int  # paths the events named
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def did_something(self) -> bool:
        r = self.report
        return bool(r.added or r.changed or r.removed or r.skipped or self.kind == "catch-up")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "at": self.at, "changed_paths": self.changed_paths, **self.report.to_dict(),
                "summary": self.summary()}

    def summary(self) -> str:
        r = self.report
        what = []
        for verb, names in (("added", r.added), ("changed", r.changed), ("removed", r.removed)):
            if names:
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                what.append(f"{verb} {shown}")
        if r.skipped:
            what.append(f"skipped {len(r.skipped)}")
        head = "; ".join(what) or "no changes"
        return (f"{head}: {r.passages_embedded} passages embedded, {r.passages_reused} reused, "
                f"{r.documents} files, {r.passages} passages, {r.seconds:.2f} s")

    def line(self) -> str:
        """The one line `kb watch` prints on stderr."""
        label = {"catch-up": "caught up", "rescan": "re-scanned (ignore rules changed)"}.get(self.kind, "updated")
        return f"kb: watch: {label}: {self.summary()}"


class Watcher:
    """Keeps an index mirroring paths: run() catches up, then applies each burst of changes.

        watcher = Watcher(KnowledgeBase("index"), ["docs"], on_update=print)
        watcher.start()      # a thread (servers); or watcher.run() in this one (`kb watch`)
        ...
        watcher.stop()

    on_update(Update) is called after each update that changed something; on_note(str)
    with a one-line remark (polling fallback, waiting for a writer, a failed update).
    """

    def __init__(self, kb: KnowledgeBase, paths: Sequence[str | os.PathLike], *,
                 settings: ChunkSettings | None = None, max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
                 vector_index: str | None = None, variant: str | None = None, poll: bool = False,
                 quiet: float = QUIET, max_burst: float = MAX_BURST,
                 on_update: Callable[[Update], None] | None = None,
                 on_note: Callable[[str], None] | None = None):
        self.kb = kb
        self.paths = [os.fspath(p) for p in paths]
        for p in self.paths:
            if not os.path.lexists(p):
                raise BadInput(f"no such file or directory: {p}")
        self.roots = [os.path.abspath(p) for p in self.paths]
        self.index_options = dict(settings=settings, max_file_size=max_file_size, vector_index=vector_index,
                                  variant=variant)
        self.poll = poll
        self.on_update = on_update or (lambda update: None)
        self.on_note = on_note or (lambda note: print(f"kb: watch: {note}", file=sys.stderr, flush=True))
        self.updates = 0  # updates that changed the index (the catch-up not counted)
        self._index_dir = os.path.abspath(kb.index_dir)
        self.quiet = quiet
        self._inbox = _Inbox(quiet, max_burst)
        self._stop = threading.Event()
        self._claim: WatcherClaim | None = None
        self._thread: threading.Thread | None = None
        self._suffixes: set[str] = set()
        self._failed: set[str] = set()  # paths of a failed update, tried again with the next
        self.error: BaseException | None = None  # what ended a start()ed watcher early
        self.caught_up = False  # the first run is done: from here on, updates
        self.polling = False  # notifications unavailable: stat walks instead

    # -- life ----------------------------------------------------------------------------
    def attach(self) -> None:
        """Claim the index (IndexBusy, exit 6, when another watcher has it)."""
        if self._claim is None:
            self._claim = WatcherClaim(self.kb.index_dir, self.paths)

    def start(self) -> threading.Thread:
        """run() in a daemon thread (a server's); claims the index first, here."""
        self.attach()

        def main():
            try:
                self.run()
            except BaseException as e:  # noqa: BLE001 - reported; the server keeps answering
                self.error = e
                self.on_note(f"stopped: {e}")

        self._thread = threading.Thread(target=main, name="kb-watch", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Stop between updates (an update in flight is finished and committed first)."""
        self._stop.set()
        self._inbox.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Catch up, then watch until stop()."""
        from .ingest.documents import _readers

        self.attach()
        self._suffixes = set(_readers())
        observer = None
        try:
            observer = self._observe()  # before catching up: what changes meanwhile is queued
            self._apply("catch-up", None)
            self.caught_up = True
            how = "polling" if self.polling else "watching"
            self.on_note(f"{how} {', '.join(self.paths)} for changes")
            while not self._stop.is_set():
                batch = self._inbox.take(self._stop)
                if batch is None:
                    break
                self._update(batch)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(5)
            if self._claim is not None:
                self._claim.release()
                self._claim = None

    # -- events --------------------------------------------------------------------------
    def _observe(self):
        from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileClosedEvent,
                                     FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent)
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        kinds = [FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
                 DirCreatedEvent, DirDeletedEvent, DirMovedEvent]  # not opened/closed-unwritten: reads
        handler = _Handler(self)
        remote = sorted({fs for fs in map(_file_system, self.roots) if fs in NETWORK_FILE_SYSTEMS})
        poll = self.poll or bool(remote)
        if remote and not self.poll:
            self.on_note(f"{', '.join(remote)} gives no change notifications here: polling every "
                         f"{POLL_INTERVAL:.0f} s instead")
        observer = PollingObserver(timeout=POLL_INTERVAL) if poll else Observer()
        try:
            self._schedule(observer, handler, kinds)
            observer.start()
            self.polling = poll
        except OSError as e:
            if poll or e.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            self.on_note(f"{e.strerror or e}: polling every {POLL_INTERVAL:.0f} s instead (raise it with "
                         f"`sudo sysctl fs.inotify.max_user_watches=524288`, or "
                         f"fs.inotify.max_user_instances for 'instance limit')")
            observer.stop()
            observer = PollingObserver(timeout=POLL_INTERVAL)
            self._schedule(observer, handler, kinds)
            observer.start()
            self.polling = True
        return observer

    def _schedule(self, observer, handler, kinds) -> None:
        for root in self.roots:
            if os.path.isdir(root):
                observer.schedule(handler, root, recursive=True, event_filter=kinds)
            else:  # a file named on its own: its folder, not recursively
                observer.schedule(handler, os.path.dirname(root), recursive=False, event_filter=kinds)

    def relevant(self, path: str) -> bool:
        """Whether an event at path can matter: not in the index folder, not hidden below a
        watched folder (.git/ included), not a file of a type kb does not read."""
        path = os.path.normpath(path)
        if path == self._index_dir or path.startswith(self._index_dir + os.sep):
            return False
        for root in self.roots:
            if path == root:
                return True
            if not path.startswith(root.rstrip(os.sep) + os.sep) or not os.path.isdir(root):
                continue
            parts = os.path.relpath(path, root).split(os.sep)
            if any(p.startswith(".") for p in parts[:-1]):
                return False
            name = parts[-1]
            if name in IGNORE_FILES:
                return True
            if name.startswith("."):
                return False
            suffix = os.path.splitext(name)[1].lower()
            # A path of another type can matter only as a folder (present, or gone with what
            # was indexed under it), never as a file.
            return suffix in self._suffixes or not os.path.isfile(path)
        return False

    # -- updates -------------------------------------------------------------------------
    def _update(self, batch: set[str]) -> None:
        batch, self._failed = batch | self._failed, set()
        now = time.time()
        held = set()
        for path in batch:
            try:
                age = now - os.stat(path).st_mtime
            except OSError:
                continue
            if 0 <= age < self.quiet and os.path.isfile(path):
                held.add(path)  # still being written (the burst was cut at MAX_BURST)
        if held:
            self._inbox.put(held)
        ready = batch - held
        if not ready:
            return
        rescan = any(os.path.basename(p) in IGNORE_FILES for p in ready)
        self._apply("rescan" if rescan else "update", None if rescan else ready)

    def _apply(self, kind: str, changed: set[str] | None) -> None:
        """One index run (all paths, or only the changed ones), retried while a hand-run
        `kb index` holds the writer lock."""
        waited = False
        while True:
            try:
                report = self.kb.index(self.paths, changed=sorted(changed) if changed is not None else None,
                                       **self.index_options)
                break
            except IndexBusy:
                if not waited:
                    self.on_note("another `kb index` is writing the index; waiting for it")
                    waited = True
                if self._stop.wait(BUSY_RETRY):
                    return
            except KbError as e:
                if kind == "catch-up":
                    raise
                self.on_note(f"update failed ({e}); the next change retries it")
                self._failed |= changed or set()
                return
        update = Update(kind, report, len(changed) if changed is not None else 0)
        if update.did_something:
            self.updates += kind != "catch-up"
            if self._claim is not None:
                self._claim.record({"kind": update.kind, "summary": update.summary()})
            self.on_update(update)


class _Inbox:
    """Paths named by events, handed out a burst at a time."""

    def __init__(self, quiet: float, max_burst: float):
        self.quiet, self.max_burst = quiet, max_burst
        # Re-entrant: `kb watch`'s signal handler calls wake() in the thread that may hold it.
        self._cond = threading.Condition(threading.RLock())
        self._paths: set[str] = set()
        self._first = self._last = 0.0

    def put(self, paths) -> None:
        with self._cond:
            now = time.monotonic()
            if not self._paths:
                self._first = now
            self._paths.update(paths)
            self._last = now
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self, stop: threading.Event) -> set[str] | None:
        """Block (no CPU) for the first event, then until `quiet` seconds pass without one or
        `max_burst` since the first; None once stop is set."""
        with self._cond:
            while not self._paths:
                if stop.is_set():
                    return None
                self._cond.wait()
            while not stop.is_set():
                now = time.monotonic()
                left = min(self._last + self.quiet, self._first + self.max_burst) - now
                if left <= 0:
                    break
                self._cond.wait(left)
            if stop.is_set():
                return None
            taken, self._paths = self._paths, set()
            return taken


class _Handler:
    """watchdog's event handler: relevant paths into the inbox (runs in the observer's thread)."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher

    def dispatch(self, event) -> None:
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        relevant = [p for p in map(os.fsdecode, paths) if self.watcher.relevant(p)]
        if relevant:
            self.watcher._inbox.put(relevant)


def _file_system(path: str) -> str:
    """The type of the file system holding path (from /proc/self/mounts; "" if unknown)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fs in mounts:
        point = point.replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fs
    return kind

