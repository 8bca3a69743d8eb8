"""The embedder's own rate: kb's ONNX embedder against plain SentenceTransformer.encode.

The passages are kb's own: .txt/.md files of DATA read and chunked as `kb index` does
(default passage size). Two sets, both cut from the same files:
  short  the first --count passages of a round-robin slice of the folders, as
         bench/index_throughput.py takes them (mostly short: small files, short sections)
  full   --count passages of at least 180 word pieces: full-size, kb's passages hold
         at most 200 (~650 characters of prose; ~225 word pieces with a title)
Every setting runs in its own process; settings take turns, --runs rounds, so background
load hits all alike. A process loads its embedder, warms up on one batch, then times
embedding the whole set: the call alone, no reading, chunking or writing. --busy adds
a process, started here, spinning on one core during every timing ("a busy machine").

Settings (--settings, comma-separated):
  kb          OnnxEmbedder as `kb index` makes it
  int8        kb's int8 variant (`kb index --int8`): each text run on its own
  int8-matmul the milder int8 recipe of bench/int8.py (built there, untimed, if missing)
  ...-t2      threads = cores, one batch at a time (every layer split over the cores)
  ...-spin    with onnxruntime's default spinning threads and load-time optimisation
  ...-bN      batches of N texts, whatever their length (e.g. kb-b1, int8-b8, kb-t2-b32);
              kb's default is runs of at most 1,024 word pieces (kb.embed.onnx_embedder)
  old         kb before this change: unfused graph optimised at load, threads = cores,
              spinning threads, batches of 32 (exported here, untimed)
  st          SentenceTransformer.encode(batch_size=32), torch threads = cores: the
              baseline of bench/index_throughput.py
  st-t1       the same, one torch thread
  st-avx2     st with torch's own kernels, oneDNN and MKL held to AVX2 (what a CPU
              without AVX-512 would run; onnxruntime has no such switch)

    .venv/bin/python bench/embed_rate.py [DATA] [--count 256] [--runs 3] [--busy] [--settings kb,st]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from query_latency import ROOT, machine_report

DEFAULT_SETTINGS = "kb,kb-t2,kb-t2-spin,old,kb-b32,kb-b8,kb-b1,st,st-t1,st-avx2"
ONNX_SETTING = re.compile(r"(kb|int8|int8-matmul)(-t2)?(-spin)?(?:-b(\d+))?")
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
FULL_SIZE = 180  # word pieces: a passage at least this long counts as full-size


def make_sets(data: Path, count: int, dest: Path) -> dict:
    """Read and chunk files as `kb index` does; write {short, full} passage texts to dest."""
    from index_throughput import take_slice

    from kb.ingest.documents import discover, read_document
    from kb.embed.model import TokenCounter, packaged_model
    from kb.ingest.passages import ChunkSettings, make_passages

    counter = TokenCounter(packaged_model().tokenizer_file)
    with tempfile.TemporaryDirectory(prefix="kb-bench-embed-") as work:
        take_slice(data, Path(work), 8_000_000)
        texts = []
        for f in discover([work]).files:
            try:
                texts += [p.embedding_text for p in make_passages(read_document(f), counter, ChunkSettings())]
            except (OSError, ValueError):
                continue
    lengths = counter.count(texts)
    sets = {"short": texts[:count], "full": [t for t, n in zip(texts, lengths) if n >= FULL_SIZE][:count]}
    if len(sets["full"]) < count:
        sys.exit(f"bench: only {len(sets['full'])} full-size passages in {data}; lower --count")
    dest.write_text(json.dumps(sets))
    described = {}
    for name, chosen in sets.items():
        pieces = counter.count(chosen)
        described[name] = (len(chosen), statistics.mean(pieces), statistics.mean(len(t) for t in chosen))
    return described


def export_old(dest: Path) -> None:
    """The graph kb exported before: torch's export as it comes, no fusion, weights inline."""
    from kb.embed.model import offline_environment, packaged_model
    from kb.embed.onnx_embedder import OPSET, _mean_pooled

    offline_environment()
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(packaged_model().path), device="cpu")
    sample = st.tokenizer(["a short text", "a somewhat longer text"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_mean_pooled(st[0].auto_model, names).eval(), tuple(sample[n] for n in names), str(dest),
                          input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                        "sentence_embedding": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


def worker(setting: str, which: str, sets_file: Path, old_model: Path) -> None:
    """One process: load one embedder, warm it up, time one set; print JSON."""
    texts = json.loads(sets_file.read_text())[which]
    cores = len(os.sched_getaffinity(0))
    if setting.startswith("st"):
        from kb.embed.model import offline_environment, packaged_model

        offline_environment()
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1 if setting == "st-t1" else cores)
        st = SentenceTransformer(str(packaged_model().path), device="cpu")
        st.encode(texts[:32], batch_size=32)

        def embed(batch):
            return st.encode(batch, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    else:
        from kb.embed.model import packaged_model
        from kb.embed.onnx_embedder import OnnxEmbedder

        if setting == "old":
            name, t2, spin, batch = "kb", "-t2", "-spin", "32"  # batches of 32 texts, as before
        else:
            name, t2, spin, batch = ONNX_SETTING.fullmatch(setting).groups()
        options = {"threads": cores, "workers": 1} if t2 else {}
        if batch:
            options.update(batch_size=int(batch), tokens_per_run=None)
        model = packaged_model("int8" if name == "int8" else "fp32")
        if name == "int8-matmul":
            from int8 import int8_path

            options["path"] = int8_path(model, name)
            options.setdefault("batch_size", 1)  # as kb's int8: activations are scaled per run
        embedder = OnnxEmbedder(model, **options)
        if spin:
            import onnxruntime as ort

            session = ort.SessionOptions()
            session.intra_op_num_threads = embedder.threads
            session.inter_op_num_threads = 1
            session.log_severity_level = 3
            path = old_model if setting == "old" else embedder.path
            embedder._session = ort.InferenceSession(str(path), session, providers=["CPUExecutionProvider"])
        embedder.embed(texts[:32])
        embed = embedder.embed
    started = time.perf_counter()
    cpu = time.process_time()
    embed(texts)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                      "passages": len(texts)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--count", type=int, default=256, help="passages per set")
    parser.add_argument("--runs", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--sets", default="short,full")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], Path(args.worker[2]), Path(args.worker[3]))
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in ("old", "st", "st-t1", "st-avx2") and not ONNX_SETTING.fullmatch(s)]
    if unknown:
        sys.exit(f"bench: unknown setting {unknown[0]!r} (see --help)")
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"bench: no data folder at {data}")

    env = {k: v for k, v in os.environ.items() if k != "KB_EMBEDDER"}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))  # so the spinner is stopped
    work = Path(tempfile.mkdtemp(prefix="kb-bench-embed-"))
    spinner = None
    try:
        sets_file, old_model = work / "sets.json", work / "old.onnx"
        described = make_sets(data, args.count, sets_file)
        if "old" in settings:
            export_old(old_model)
        for recipe in {ONNX_SETTING.fullmatch(s).group(1) for s in settings if s.startswith("int8")}:
            from int8 import build

            from kb.embed.model import packaged_model

            build(packaged_model(), recipe)
        # Untimed: the export and its recorded check exist, as after any first `kb index`.
        subprocess.run([sys.executable, "-c", "from kb.embed.embedding import load_embedder; from kb.embed.model import "
                        "packaged_model; load_embedder(packaged_model(), for_indexing=True)"], env=env, check=True)
        print(machine_report())
        for name, (n, pieces, chars) in described.items():
            print(f"set {name}: {n} passages, mean {pieces:.0f} word pieces, {chars:.0f} characters")
        if args.busy:
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            print("one extra process spins on a core during every timing")
        loads = [os.getloadavg()[0]]
        rows: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.runs):
            for which in args.sets.split(","):
                for setting in settings:
                    extra = AVX2_ONLY if setting == "st-avx2" else {}
                    done = subprocess.run([sys.executable, __file__, "--worker", setting, which, str(sets_file),
                                           str(old_model)], env={**env, **extra}, capture_output=True, text=True)
                    if done.returncode:
                        sys.exit(f"bench: {setting} failed: {done.stderr.strip()[-400:]}")
                    rows.setdefault((which, setting), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians of {args.runs} rounds; load average {min(loads):.1f}-{max(loads):.1f} during the runs."
          "\n  wall: passages/s (min-max); / st: this setting's rate over st's in the same round"
          "\n  cpu: passages per CPU-second of the process (all its threads, spinning included), and over st's")
    for which in args.sets.split(","):
        print(f"\n{which:<12}{'wall':>8}{'(min-max)':>14}{'/ st':>8}{'cpu':>9}{'/ st':>8}")
        for setting in settings:
            wall = [r["passages"] / r["seconds"] for r in rows[(which, setting)]]
            cpu = [r["passages"] / r["cpu"] for r in rows[(which, setting)]]
            line = f"{setting:<12}{statistics.median(wall):8.1f}{f'({min(wall):.1f}-{max(wall):.1f})':>14}"
            if "st" in settings:
                base_wall = [r["passages"] / r["seconds"] for r in rows[(which, "st")]]
                base_cpu = statistics.median(r["passages"] / r["cpu"] for r in rows[(which, "st")])
                paired = statistics.median(w / b for w, b in zip(wall, base_wall))
                line += f"{paired:7.2f}x{statistics.median(cpu):9.1f}{statistics.median(cpu) / base_cpu:7.2f}x"
            else:
                line += f"{'':8}{statistics.median(cpu):9.1f}"
            print(line)
    print(f"\nload average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
