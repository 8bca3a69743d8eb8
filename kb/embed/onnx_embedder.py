"""The fast backend: the packaged model exported to ONNX, run by onnxruntime, no torch.

Importing sentence-transformers costs seconds before any work is done; onnxruntime and
`tokenizers` cost a tenth of that and embed faster. sentence-transformers stays the
reference: it exports the model once (`export_onnx`), and the ONNX file must reproduce
the reference vectors stored beside it, so a broken or mismatched file is refused
instead of giving wrong answers.

Everything that does not depend on the question is paid once, at export, not by every
`kb ask` process:
- the graph is saved already optimised (attention, GELU and layer norms fused), so a
  session loads it without optimising it again;
- its weights sit in a separate file that onnxruntime memory-maps instead of parsing
  90 MB of protobuf (session creation drops from ~0.2 s to a few hundredths);
- the parity check runs once per file, not per load: a record beside the files says
  which exact files passed (device, inode, size, mtime and ctime of each, and the
  onnxruntime version). A replaced file has another inode; a file written in place has
  another ctime, which no program can set back. Either way the record no longer
  matches and the check runs again before the file is used.

The files live in kb's per-user cache under onnx/<weights sha256>/fp32/: one 90 MB copy
per model, shared by every index built with it; deleting them only costs a re-export.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import first_line
from .model import ModelFiles, cache_dir, load_tokenizer
from .partial_tokenizer import shared_tokenizer

ONNX_FILE = "model.onnx"
TOKEN_OUTPUT = "token_embeddings"  # the last hidden state, beside the pooled vector (add_token_output)
DATA_FILE = "model.onnx.data"  # the weights, memory-mapped by onnxruntime
REFERENCE_FILE = "reference.json"
VERIFIED_FILE = "verified.json"
REFERENCE_FORMAT = 1
VERIFIED_FORMAT = 1
OPSET = 17
MIN_COSINE = 0.9999  # what "the same vectors" means: the parity bar for the fast path
# The int8 variant's own bar against sentence-transformers, checked once at its export
# (it measured 0.987 at worst over 800 SciFact and XQuAD texts, see bench/int8.py).
INT8_MIN_COSINE = 0.98
# How much one run of the model takes. Runs of ~1,000 word pieces keep a layer's
# activations in cache: on these CPUs they embed 15-25 % more per CPU-second than runs
# of 32 full-size passages (bench/embed_rate.py, kb-b1 ... kb-b32), while short texts
# (questions) still share runs. int8 runs each text alone: its activations are scaled
# per run, so batch-mates would change a text's vector (see export_int8).
TOKENS_PER_RUN = 1024
BATCH_SIZE = {"fp32": 64, "int8": 1}  # texts per run, at most
# A file changed within this long before its check began could be changed again without
# its ctime moving (clock ticks are coarse), so its check is not recorded (as git does
# with "racily clean" files): the next load checks it again.
RACY_NS = 1_000_000_000

# Embedded at export by sentence-transformers, and again whenever a file is checked.
# The long probe changes topic after ~120 and after ~256 word pieces, so a tokenizer left
# at tokenizer.json's 128 (or not truncating at all) gives a visibly different vector.
PROBES = (
    "Why did junior doctors vote to strike?",
    "Junior doctors in England voted overwhelmingly for strike action after years of pay "
    "erosion, saying their real-terms earnings had fallen by more than a quarter since 2008. "
    "The British Medical Association argued that trainees were leaving the NHS for Australia "
    "and New Zealand, that rota gaps endangered patients, and that the government's offer "
    "ignored inflation. Ministers replied that the settlement recommended by the independent "
    "pay review body was final and that walkouts would lengthen waiting lists. "
    "Volcanic eruptions on Iceland's Reykjanes peninsula have sent lava fountains across "
    "fissures near Grindavik, forcing the evacuation of the fishing town and the closure of "
    "the Blue Lagoon spa. Geologists measuring ground deformation with satellite radar and "
    "GPS stations expect magma to keep rising into the dyke for months, while engineers build "
    "earth barriers to steer the flows away from the geothermal power plant at Svartsengi that "
    "supplies hot water to twenty thousand people on the peninsula. "
    "To make a classic French omelette, whisk three eggs with a pinch of salt, melt butter in "
    "a nonstick pan over medium heat, pour in the eggs and stir quickly with a fork while "
    "shaking the pan, then roll the soft curds onto a warm plate before they brown. Serve it "
    "at once with a green salad dressed in mustard vinaigrette, a glass of dry white wine from "
    "the Loire and crusty bread; leftover herbs such as chives, chervil and tarragon can be "
    "folded into the eggs just before they set, which is how Parisian bistros have done it "
    "for well over a century.",
)


class OnnxUnavailable(Exception):
    """The ONNX model is missing, unreadable or disagrees with its reference vectors."""


def onnx_path(model: ModelFiles) -> Path:
    """Where the ONNX export of this model's weights and variant lives (existing or not)."""
    return cache_dir() / "onnx" / model.weights_sha256 / model.variant / ONNX_FILE


# -- export (needs torch; runs once per model and user) ---------------------------------
def export_onnx(st_model, dest: Path) -> Path:
    """Export a loaded mean-pooled SentenceTransformer to `dest`, with reference vectors.

    Mean pooling is part of the graph, so the runtime only tokenizes and normalises.
    The graph is fused and optimised here, once, and saved with its weights in a
    separate file. All files are written to a temp folder that replaces dest's folder
    in one rename: a concurrent reader sees the old files or the new ones, never a mix.
    """
    modules = list(st_model)
    pooling = modules[1].get_config_dict() if len(modules) > 1 else {}
    if len(modules) != 3 or pooling.get("pooling_mode") != "mean" or type(modules[2]).__name__ != "Normalize":
        raise ValueError("only Transformer + mean Pooling + Normalize models can be exported")
    dest = Path(dest)
    with _export_folder(dest) as work:
        reference = {
            "format": REFERENCE_FORMAT,
            "max_seq_length": int(st_model.max_seq_length),
            "texts": list(PROBES),
            "vectors": st_model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False).tolist(),
        }
        raw = _export_graph(st_model, work / "raw.onnx")
        config = st_model[0].auto_model.config
        fused = _fuse_transformer(raw, work / "fused.onnx", config.num_attention_heads, config.hidden_size)
        _save_optimised(fused, work / dest.name)
        add_token_output(work / dest.name)
        raw.unlink(missing_ok=True)
        fused.unlink(missing_ok=True)
        (work / REFERENCE_FILE).write_text(json.dumps(reference))
    # Exports before the cache had per-variant folders left a single-file model here.
    for old in (dest.parent.parent / ONNX_FILE, dest.parent.parent / REFERENCE_FILE):
        old.unlink(missing_ok=True)
    return dest


def _export_graph(st_model, dest: Path) -> Path:
    """torch.onnx.export of BERT + mean pooling, with BERT's plain ("eager") attention.

    The plain attention exports as MatMul/Softmax nodes that onnxruntime's transformer
    optimiser recognises and fuses; the default SDPA attention exports as a pattern it
    does not. Both compute the same thing; the caller's model gets its setting back.
    """
    import torch

    bert = st_model[0].auto_model
    attention = getattr(bert.config, "_attn_implementation", None)
    sample = st_model.tokenizer(["a short text", "a somewhat longer text to pad the batch"],
                                padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    try:
        if attention and attention != "eager" and hasattr(bert, "set_attn_implementation"):
            bert.set_attn_implementation("eager")
        # The tracer warns about Python control flow in BERT that does not affect this graph.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _mean_pooled(bert, names).eval(),
                tuple(sample[n] for n in names),
                str(dest),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "sentence_embedding": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        if attention and getattr(bert.config, "_attn_implementation", None) != attention:
            bert.set_attn_implementation(attention)
    return dest


def _mean_pooled(bert, names: list[str]):
    """BERT called with keyword arguments (transformers 5 needs it) plus masked mean pooling."""
    import torch

    class MeanPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, *inputs):
            kwargs = dict(zip(names, inputs))
            hidden = self.bert(**kwargs).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    return MeanPooled()


def _fuse_transformer(source: Path, dest: Path, heads: int, hidden: int) -> Path:
    """onnxruntime's BERT optimiser: one Attention node per layer, fused embeddings,
    layer norms and GELU (~10 % faster on these CPUs). Its ops are onnxruntime's own
    (com.microsoft), portable across CPUs; if it cannot fuse, the plain graph is kept."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with _quiet_logging():
            optimised = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
                                       opt_level=0)
            optimised.save_model_to_file(str(dest))
        return dest
    except Exception:  # a newer exporter's pattern it does not know: slower, still correct
        return source


def _save_optimised(source: Path, dest: Path) -> None:
    """Let onnxruntime optimise the graph once and save the result, weights apart.

    ORT_ENABLE_EXTENDED, not ALL: ALL adds layout changes tied to this CPU, and the
    cache may be shared by machines (a network home folder). The weights file is what
    onnxruntime memory-maps at load.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dest)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def add_token_output(path: Path) -> bool:
    """Give a saved graph a second output, TOKEN_OUTPUT: the last hidden state, the token
    vectors that mean pooling averages (kb.embed.pooling.pool_spans pools them per
    sentence). The graph computes them anyway; exposing them costs a copy. Rewrites only
    the graph file (the weights file stays). False if the graph already has it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if any(o.name == TOKEN_OUTPUT for o in graph.output):
        return False
    producer = {out: node for node in graph.node for out in node.output}

    def from_mask(name: str, depth: int = 4) -> bool:
        node = producer.get(name)
        return name == "attention_mask" or (depth > 0 and node is not None
                                            and any(from_mask(i, depth - 1) for i in node.input))

    # sentence_embedding = Div(ReduceSum(Mul(hidden, mask)), count): hidden is the Mul's other input.
    node = producer[graph.output[0].name]
    while node.op_type != "Mul":
        node = producer[node.input[0]]
    hidden = next(i for i in node.input if not from_mask(i))
    graph.node.append(onnx.helper.make_node("Identity", [hidden], [TOKEN_OUTPUT]))
    graph.output.append(onnx.helper.make_tensor_value_info(TOKEN_OUTPUT, onnx.TensorProto.FLOAT, None))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return True


@contextmanager
def _export_folder(dest: Path) -> Iterator[Path]:
    """A work folder beside dest's folder; if the block succeeds it becomes dest's folder
    (by _publish), and either way the work folder is gone afterwards."""
    import shutil

    folder = dest.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(f".{folder.name}.{os.getpid()}.export")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
        _publish(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(work: Path, folder: Path) -> None:
    """Put the folder `work` in place of `folder` by renames only.

    Sessions already open keep the files they mapped (renaming never changes a file's
    contents). If another process publishes its export at the same moment, either
    one wins; both are complete and checked before use.
    """
    import shutil

    try:
        os.replace(work, folder)
        return
    except OSError:
        if not folder.exists():
            raise
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(folder, old)
    except FileNotFoundError:
        pass
    try:
        os.replace(work, folder)
    except OSError:
        if not folder.exists():
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def export_int8(fp32: Path, dest: Path, model: ModelFiles) -> Path:
    """Quantise kb's (checked) fp32 export at `fp32` into the int8 variant at `dest`. No torch.

    onnxruntime's dynamic quantisation: int8 weights, one scale per output channel;
    activations are scaled per run. That scale spans a whole batch, so an int8 vector
    would depend on which texts shared its batch: the int8 embedder runs each text on its
    own (its fastest way anyway, see bench/embed_rate.py). The reference beside it holds
    its own vectors of the probes, which later checks must reproduce, once they were
    found within INT8_MIN_COSINE of sentence-transformers' ones.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest = Path(dest)
    with _export_folder(dest) as work:
        reference = json.loads((Path(fp32).parent / REFERENCE_FILE).read_text())
        quantised = work / "quantised.onnx"
        with _quiet_logging():
            quantize_dynamic(str(fp32), str(quantised), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=not _has_vnni(),
                             # the graph holds onnxruntime's fused ops, whose types shape inference cannot see
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        _save_optimised(quantised, work / dest.name)
        quantised.unlink()
        session = _session(work / dest.name, threads=1, prepack=False)
        tokenizer = load_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
        vectors = _vectors_alone(session, tokenizer, reference["texts"])
        cosine = float(np.min(np.sum(vectors * np.asarray(reference["vectors"], dtype=np.float32), axis=1)))
        del session
        if not cosine >= INT8_MIN_COSINE:
            raise OnnxUnavailable(f"the int8 model strays from sentence-transformers (cosine {cosine:.4f})")
        reference.update(vectors=vectors.tolist(), cosine_to_sentence_transformers=cosine)
        (work / REFERENCE_FILE).write_text(json.dumps(reference))
    return dest


def _has_vnni() -> bool:
    """Whether the CPU has VNNI (int8 dot products). Without it, onnxruntime's u8 x s8
    kernels can saturate 16-bit sums: on an AVX2 EPYC, 8-bit weights gave cosine 0.976
    with sentence-transformers, under INT8_MIN_COSINE. Its documented remedy is 7-bit
    weights (reduce_range), used there."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class _quiet_logging:
    """onnxruntime's export tools log advice through the root logger, which would set up
    a handler printing to kb's stderr; swallow it (and theirs) while they run."""

    def __enter__(self):
        import logging

        self._root = logging.getLogger()
        self._level, self._handler = self._root.level, logging.NullHandler()
        self._root.addHandler(self._handler)
        self._root.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._root.setLevel(self._level)
        self._root.removeHandler(self._handler)
        return False


# -- use (no torch) ----------------------------------------------------------------------
class OnnxEmbedder:
    """The packaged model through onnxruntime + `tokenizers`: same vectors, no torch.

    Raises OnnxUnavailable at construction if the files are missing, unreadable, or do
    not reproduce the reference vectors written at export. The check (all probes, the
    long one included, ~0.15 s) runs only when no record says these exact files passed
    it; `recheck=True` runs it anyway.

    Each run of the model uses `threads` cores (onnxruntime's intra-op threads), and up
    to `workers` batches run at once, each on its own core. One thread per run and
    several runs at once is the default: a question then never waits for a second core,
    and a busy core slows only its own batches, not every layer of every batch (see
    bench/embed_rate.py and bench/query_threads.py for the figures).

    batch_size: texts per run at most (by default BATCH_SIZE for the model's variant);
    tokens_per_run: word pieces per run at most, padding included (None: no limit).

    prepack: onnxruntime rearranges the weights for its matrix kernels when a session
    starts (~50 ms), which makes every later small run faster. True: do it at once (an
    indexing run); None: start without, and prepack at the second call, once the process
    has shown it asks more than one question (a `kb ask` pays nothing, a server pays
    once); False: never.
    """

    def __init__(
        self,
        model: ModelFiles,
        path: Path | None = None,
        *,
        threads: int = 1,
        workers: int | None = None,
        batch_size: int | None = None,
        tokens_per_run: int | None = TOKENS_PER_RUN,
        prepack: bool | None = True,
        recheck: bool = False,
    ):
        self.model = model
        self.path = Path(path) if path else onnx_path(model)
        self.threads = max(1, threads)
        self.workers = max(1, workers if workers is not None else cores() // self.threads)
        self.batch_size = batch_size or BATCH_SIZE.get(model.variant, 1)
        self.tokens_per_run = tokens_per_run
        self.verified_by = ""  # "check" or "record": how this load knew the file is right
        self._calls = 0
        if not self.path.is_file():
            raise OnnxUnavailable(f"no ONNX model at {self.path}")
        started_ns = time.time_ns()
        identity = _identity(self.path.parent)  # before anything is read: see _record_check
        # onnxruntime lets go of the GIL while it builds a session (`tokenizers` does not
        # while it builds its vocabulary), so the session is built on another thread while
        # this one reads the vocabulary. A process that may ask only once takes just the
        # entries its texts need (kb.embed.partial_tokenizer: 25-40 ms off a cold `kb ask`).
        self._prepack_later = prepack is None
        session = _session_in_background(self.path, self.threads, prepack=bool(prepack))
        self._tokenizer = shared_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
        if self._prepack_later:
            self._tokenizer.prepare()
        else:
            self._tokenizer.expect_many()
        self._session = session()
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._token_output = TOKEN_OUTPUT in self._outputs
        self._lock = threading.Lock()
        dimension = self._session.get_outputs()[0].shape[-1]
        if "input_ids" not in self._inputs or "attention_mask" not in self._inputs or not isinstance(dimension, int):
            raise OnnxUnavailable(f"{self.path} is not a sentence-embedding graph kb exported")
        self.dimension = dimension
        if recheck or not _recorded(self.path.parent, identity, self._facts()):
            self._check_reference(self.path.parent / REFERENCE_FILE)
            self.verified_by = "check"
            _record_check(self.path.parent, identity, self._facts(), started_ns)
        else:
            self.verified_by = "record"

    def expect_many(self) -> None:
        """Many calls will follow: prepack now rather than at the second call."""
        if self._prepack_later:
            self._prepack_later = False
            self._session = _session(self.path, self.threads, prepack=True)
            self._tokenizer.expect_many()

    def embed(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in the order given."""
        return self._embed(texts, None, progress)[0]

    def embed_with_sentences(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                             progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """The texts' vectors, and for each text one unit vector per span of it (character
        offsets into the text): its token vectors from the same run, mean-pooled over the
        span (kb.embed.pooling.pool_spans). No model time beyond embed()'s."""
        if not self._token_output:
            self._add_token_output()
        return self._embed(texts, spans, progress)

    def _add_token_output(self) -> None:
        """A graph exported by an older kb lacks the token output: add it (graph file only), once."""
        with self._lock:
            if self._token_output:
                return
            add_token_output(self.path)
            self._session = _session(self.path, self.threads, prepack=not self._prepack_later)
            self._outputs = [o.name for o in self._session.get_outputs()]
            self._token_output = TOKEN_OUTPUT in self._outputs

    def _embed(self, texts: Sequence[str], spans, progress) -> tuple[np.ndarray, list[np.ndarray]]:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        pooled: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        if not len(texts):
            return out, pooled
        self._calls += 1
        if self._prepack_later and self._calls == 2:
            self.expect_many()
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Batches of similar length waste less time on padding; a few texts are spread
        # over the workers rather than packed into one batch on one core.
        order = np.argsort(lengths, kind="stable")
        most = max(1, min(self.batch_size, -(-len(texts) // self.workers)))
        batches = _batches(lengths[order], most, self.tokens_per_run, order)
        wanted = self._outputs[:1] if spans is None else [self._outputs[0], TOKEN_OUTPUT]

        def run(batch: np.ndarray) -> np.ndarray:
            ids = np.zeros((len(batch), int(lengths[batch].max())), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = encodings[i].ids
            mask = (np.arange(ids.shape[1]) < lengths[batch, None]).astype(np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            results = self._session.run(wanted, {n: feed[n] for n in self._inputs})
            if spans is not None:
                from .pooling import pool_spans

                for row, i in enumerate(batch):
                    e = encodings[i]
                    pooled[i] = pool_spans(results[1][row, : lengths[i]], e.offsets, e.special_tokens_mask, spans[i])
            return results[0]

        if len(batches) == 1 or self.workers == 1:
            done = ((batch, run(batch)) for batch in batches)
            for batch, vectors in done:
                out[batch] = vectors
                if progress:
                    progress(len(batch))
        else:
            from concurrent.futures import ThreadPoolExecutor

            # onnxruntime releases the GIL while it runs, so these threads use separate cores.
            with ThreadPoolExecutor(min(self.workers, len(batches))) as pool:
                for batch, vectors in zip(batches, pool.map(run, batches)):
                    out[batch] = vectors
                    if progress:
                        progress(len(batch))
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out, pooled

    def _facts(self) -> dict:
        """What else a recorded check depends on besides the files themselves."""
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "model": self.model.name, "weights_sha256": self.model.weights_sha256,
                "max_seq_length": self.model.max_seq_length, "min_cosine": MIN_COSINE}

    def _check_reference(self, reference_file: Path) -> None:
        try:
            reference = json.loads(reference_file.read_text())
            expected = np.asarray(reference["vectors"], dtype=np.float32)
            texts = [str(t) for t in reference["texts"]]
            fmt, max_len = reference["format"], reference["max_seq_length"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OnnxUnavailable(f"unreadable reference vectors {reference_file}: {first_line(e)}") from None
        if fmt != REFERENCE_FORMAT or max_len != self.model.max_seq_length:
            raise OnnxUnavailable(f"{reference_file} was written for another format or sequence length")
        try:
            got = _vectors_alone(self._session, self._tokenizer, texts)
        except Exception as e:  # a graph that loads but cannot run is just as unusable
            raise OnnxUnavailable(f"{self.path} fails to run: {first_line(e)}") from None
        if got.shape != expected.shape:
            raise OnnxUnavailable(f"{self.path} gives {got.shape[1]}-d vectors, expected {expected.shape[1]}")
        cosine = float(np.min(np.sum(got * expected, axis=1)))
        if not cosine >= MIN_COSINE:
            whose = "sentence-transformers" if self.model.variant == "fp32" else "its reference vectors"
            raise OnnxUnavailable(f"{self.path} disagrees with {whose} (cosine {cosine:.6f})")


def _batches(sorted_lengths: np.ndarray, most: int, tokens: int | None, order: np.ndarray) -> list[np.ndarray]:
    """Cut `order` (texts by increasing length) into runs of at most `most` texts and
    `tokens` word pieces, padding included (the longest text sets a run's width)."""
    batches, start, count = [], 0, len(order)
    while start < count:
        end = min(start + most, count)
        if tokens:
            # Longest first in a run is its last; its length times the run's size must fit.
            fits = (np.arange(start + 1, end + 1) - start) * sorted_lengths[start:end] <= tokens
            end = start + max(1, int(np.argmin(fits)) if not fits.all() else end - start)
        batches.append(order[start:end])
        start = end
    return batches


def _vectors_alone(session, tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Each text run on its own (no batch-mates, no padding): what a check compares."""
    names = [i.name for i in session.get_inputs()]
    rows = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        rows.append(session.run(None, {n: feed[n] for n in names})[0][0])
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _session_in_background(path: Path, threads: int, prepack: bool) -> Callable:
    """Start building the session on a thread; returns a function that waits for it.

    Returns once that thread is about to enter onnxruntime, which then lets go of the
    GIL, so the caller's next Python work overlaps the session's build.
    """
    import threading

    outcome: dict = {}
    entering = threading.Event()

    def build() -> None:
        try:
            outcome["session"] = _session(path, threads, prepack, entering.set)
        except BaseException as e:  # handed to the waiting caller
            outcome["error"] = e
        finally:
            entering.set()

    thread = threading.Thread(target=build, name="kb-onnx-session", daemon=True)
    thread.start()
    entering.wait()

    def wait():
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["session"]

    return wait


def cores() -> int:
    """Cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _session(path: Path, threads: int, prepack: bool, entering: Callable[[], None] | None = None):
    """An onnxruntime session on the saved, already optimised graph (entering() is
    called just before onnxruntime builds it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads burn a core that another job (or our other worker) could use.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # done at export
    options.log_severity_level = 3  # errors surface as exceptions, not log spam
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if entering:
        entering()
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind types for bad files
        raise OnnxUnavailable(f"cannot load {path}: {first_line(e)}") from None
    _live_sessions.add(session)
    return session


# A process forked after a session was built can run that session, but destroying it there
# waits forever for thread-pool threads that only the parent has (a script that asks, then
# forks workers that ask too: their second question replaces the session, and hung). In a
# child, every inherited session is therefore kept alive for good: it costs nothing, the
# weights are the parent's pages.
_live_sessions: "weakref.WeakSet" = weakref.WeakSet()


def _keep_inherited_sessions() -> None:
    import ctypes

    for session in list(_live_sessions):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))
    _live_sessions.clear()


os.register_at_fork(after_in_child=_keep_inherited_sessions)


def _identity(folder: Path) -> dict[str, list[int]]:
    """What distinguishes these files from any other version of them, from stat alone."""
    files = {}
    try:
        for entry in os.scandir(folder):
            if entry.name != VERIFIED_FILE and not entry.name.startswith(".") and entry.is_file():
                st = entry.stat()
                files[entry.name] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    except OSError:
        return {}
    return files


def _recorded(folder: Path, identity: dict, facts: dict) -> bool:
    """True if the record says a check of exactly these files passed, under these facts."""
    try:
        record = json.loads((folder / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("format") == VERIFIED_FORMAT
            and record.get("files") == identity and record.get("facts") == facts and bool(identity))


def _record_check(folder: Path, identity: dict, facts: dict, started_ns: int) -> None:
    """Remember that these files passed, unless a change could hide from their ctime.

    `identity` was taken before any file was read; if the files changed since, or changed
    so shortly before the check that a further change might keep the same timestamps,
    nothing is recorded and the next load checks again. Best effort: a read-only cache
    only costs the check.
    """
    if not identity or _identity(folder) != identity:
        return
    if any(max(mtime, ctime) >= started_ns - RACY_NS for _, _, _, mtime, ctime in identity.values()):
        return
    record = {"format": VERIFIED_FORMAT, "files": identity, "facts": facts, "checked_at_ns": started_ns}
    tmp = folder / f".{VERIFIED_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, folder / VERIFIED_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)
