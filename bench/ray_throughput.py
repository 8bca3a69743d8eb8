"""Indexing on Ray against indexing here: passages/s, Ray's start-up cost, shipping bytes.

Copies a slice of the .txt/.md files of DATA (round-robin across its folders, up to
--bytes; default data: ../shared/data/scale-docs, see the README) to a temp folder, then
builds a fresh index of it, round-robin over --repeats, with:
  local        LocalExecutor in this machine's one process (ONNX, every core)
  ray          `--ray`: a private local Ray instance, --workers workers x 1 thread,
               the driver shipping each file's bytes to the workers
  ray-shared   the same, workers opening the files' paths (shared-storage mode)
  cluster      a simulated 2-node cluster (ray.cluster_utils.Cluster, one CPU per node,
               started once by this bench), joined by address, --workers workers
Each build is a fresh process running KnowledgeBase.index; it reports the run's seconds,
when the first vectors came back, Ray's start (ray.init or connect) and the workers'
start (model loaded). "excl. start" passages/s leave Ray's and the workers' start out. Also timed on their own: `ray.init()` of a local instance and the start
of the 2-node cluster.

    .venv/bin/python bench/ray_throughput.py [DATA] [--bytes 300000] [--repeats 2] [--workers 2]

The machine is shared: compare the ratios within one run, and the load printed with each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from index_throughput import take_slice
from query_latency import ROOT, machine_report

BUILD_SCRIPT = """
import json, sys, time
from kb import KnowledgeBase
from kb.ingest.prepare import Vectors
config, corpus, index_dir, address, workers = sys.argv[1:6]
executor = None
if config != "local":
    from kb.ingest.prepare_ray import RayExecutor
    executor = RayExecutor(address or None, workers=int(workers), local_below=0, ship_bytes=config != "ray-shared")
marks = {}
started = time.perf_counter()
if executor is not None:
    prepare = executor.prepare
    def timed_prepare(*args, **kwargs):
        for item in prepare(*args, **kwargs):
            if isinstance(item, Vectors):
                marks.setdefault("first_vectors", time.perf_counter() - started)
                marks["last_vectors"] = time.perf_counter() - started
            yield item
    executor.prepare = timed_prepare
else:
    from kb.ingest.prepare import LocalExecutor
    original = LocalExecutor.prepare
    def timed_prepare(self, *args, **kwargs):
        for item in original(self, *args, **kwargs):
            if isinstance(item, Vectors):
                marks.setdefault("first_vectors", time.perf_counter() - started)
                marks["last_vectors"] = time.perf_counter() - started
            yield item
    LocalExecutor.prepare = timed_prepare
report = KnowledgeBase(index_dir).index([corpus], executor=executor)
print(json.dumps({"passages": report.passages, "embedded": report.passages_embedded, "seconds": report.seconds,
                  **marks, **(executor.timings if executor else {})}))
"""

INIT_SCRIPT = """
import os, time, secrets
os.environ.setdefault("RAY_AUTH_MODE", "token"); os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
started = time.perf_counter()
import ray
ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=512 << 20, include_dashboard=False,
         logging_level="ERROR", log_to_driver=False)
print(time.perf_counter() - started)
ray.shutdown()
"""

# The one writer's ceiling: a build with the stand-in embedder (no model) reads, chunks
# and writes in one process; on Ray the reading and chunking move to the workers, so the
# writer alone is faster still. Also: how fast this process ships file bytes to Ray.
WRITER_SCRIPT = """
import json, os, sys, time, secrets
from kb import KnowledgeBase
from kb.embed.embedding import HashEmbedder
from kb.embed.model import packaged_model
report = KnowledgeBase(sys.argv[2], embedder=HashEmbedder(packaged_model())).index([sys.argv[1]])
files = [os.path.join(d, f) for d, _, names in os.walk(sys.argv[1]) for f in names]
os.environ.setdefault("RAY_AUTH_MODE", "token"); os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
import ray
ray.init(address="local", num_cpus=1, object_store_memory=512 << 20, include_dashboard=False,
         logging_level="ERROR", log_to_driver=False)
started = time.perf_counter()
size = 0
for path in files:
    with open(path, "rb") as f:
        raw = f.read()
    size += len(raw)
    ray.get(ray.put(raw))
shipped = time.perf_counter() - started
print(json.dumps({"passages": report.passages, "seconds": report.seconds, "bytes": size, "ship_seconds": shipped}))
"""

CONFIGS = ("local", "ray", "ray-shared", "cluster")


def start_cluster():
    """Two local Ray nodes of one CPU each, as the tests use; (cluster, seconds to start)."""
    import logging
    import secrets

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    node = {"num_cpus": 1, "object_store_memory": 256 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    logging.getLogger("ray").setLevel(logging.ERROR)
    return cluster, time.perf_counter() - started


def build(config: str, corpus: Path, index_dir: Path, address: str, workers: int) -> dict:
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, config, str(corpus), str(index_dir), address,
                           str(workers)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {config} build failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = load
    shutil.rmtree(index_dir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--bytes", type=int, default=300_000, help="size of the slice of .txt/.md files")
    parser.add_argument("--repeats", type=int, default=2, help="builds of each configuration (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (one CPU thread each)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"any of {','.join(CONFIGS)}")
    parser.add_argument("--writer-bytes", type=int, default=3_000_000,
                        help="slice for the writer's ceiling (stand-in embedder) and the shipping rate; 0: skip")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"bench: no data folder at {data}")
    configs = [c for c in args.configs.split(",") if c]

    work = Path(tempfile.mkdtemp(prefix="kb-bench-ray-"))
    cluster = None
    try:
        corpus = work / "slice"
        files, size = take_slice(data, corpus, args.bytes)
        print(f"setup: {files} files, {size / 1e6:.2f} MB from {data}")
        print(machine_report())
        from importlib import metadata

        print(f"ray {metadata.version('ray')}")
        inits = []
        for _ in range(args.repeats):
            done = subprocess.run([sys.executable, "-c", INIT_SCRIPT], capture_output=True, text=True, check=True)
            inits.append(float(done.stdout.strip().splitlines()[-1]))
        print(f"ray.init() of a local instance: {', '.join(f'{s:.1f}' for s in inits)} s")
        address = ""
        if "cluster" in configs:
            cluster, seconds = start_cluster()
            address = cluster.address
            print(f"2-node local cluster (ray.cluster_utils.Cluster) started in {seconds:.1f} s")
        # Untimed: the ONNX export exists, as after any first `kb index`.
        build("local", corpus, work / "warm-up", "", args.workers)

        runs: dict[str, list[dict]] = {c: [] for c in configs}
        for repeat in range(args.repeats):
            for config in configs:
                result = build(config, corpus, work / f"index-{config}-{repeat}",
                               address if config == "cluster" else "", args.workers)
                runs[config].append(result)
                print(f"  {config:10s} run {repeat + 1}: {json.dumps({k: round(v, 2) for k, v in result.items()})}",
                      flush=True)
        if args.writer_bytes:
            big = work / "big"
            take_slice(data, big, args.writer_bytes)
            for repeat in range(args.repeats):
                done = subprocess.run([sys.executable, "-c", WRITER_SCRIPT, str(big), str(work / f"w{repeat}")],
                                      capture_output=True, text=True, check=True)
                w = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"  writer, stand-in embedder: {w['passages']} passages in {w['seconds']:.1f} s = "
                      f"{w['passages'] / w['seconds']:.0f} passages/s ({w['bytes'] / w['passages']:.0f} bytes of file "
                      f"per passage); shipping {w['bytes'] / 1e6:.1f} MB into Ray: {w['ship_seconds']:.2f} s = "
                      f"{w['bytes'] / 1e6 / w['ship_seconds']:.0f} MB/s (load {os.getloadavg()[0]:.1f})", flush=True)
                shutil.rmtree(work / f"w{repeat}")
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    passages = runs[configs[0]][0]["passages"]
    print(f"\n{passages} passages; median of {args.repeats} builds each; {args.workers} Ray workers x 1 thread")
    print(f"{'':10s} {'run p/s':>8s} {'excl. start':>11s} {'ray start':>9s} {'workers':>8s} {'1st vectors':>11s}"
          f" {'load':>5s}")
    rate = {}
    for config, rows in runs.items():
        median = lambda key: statistics.median(r.get(key, 0.0) for r in rows)  # noqa: E731
        rate[config] = passages / median("seconds")
        steady = passages / statistics.median(r["seconds"] - r.get("ray_start", 0) - r.get("workers_start", 0)
                                              for r in rows)
        print(f"{config:10s} {rate[config]:8.1f} {steady:11.1f} {median('ray_start'):9.1f} {median('workers_start'):8.1f}"
              f" {median('first_vectors'):11.1f} {median('load'):5.1f}")
    if "local" in rate:
        print("\nwhole-run passages/s as a share of local:")
        for config in rate:
            print(f"  {config:10s} {rate[config] / rate['local']:.2f}x")
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
