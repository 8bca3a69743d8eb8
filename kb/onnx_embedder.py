"""The fast backend: the packaged model exported to ONNX, run by onnxruntime, no torch.

Importing sentence-transformers costs seconds before any work is done; onnxruntime and
`tokenizers` cost a tenth of that and embed faster. sentence-transformers stays the
reference: it exports the model once (`export_onnx`), and every load of the ONNX file
checks it still reproduces the reference vectors stored beside it, so a broken or
mismatched file is refused instead of giving wrong answers.

The file lives in kb's per-user cache under onnx/<weights sha256>/: one 90 MB copy per
model, shared by every index built with it; deleting it only costs a re-export.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .model import ModelFiles, cache_dir, load_tokenizer

ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
OPSET = 17
MIN_COSINE = 0.9999  # what "the same vectors" means: the parity bar for the fast path

# Embedded at export by sentence-transformers, and again by every load of the ONNX file.
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
    """Where the ONNX export of this model's weights lives (whether or not it exists yet)."""
    return cache_dir() / "onnx" / model.weights_sha256 / ONNX_FILE


def export_onnx(st_model, dest: Path) -> Path:
    """Export a loaded mean-pooled SentenceTransformer to `dest`, with reference vectors.

    Mean pooling is part of the graph, so the runtime only tokenizes and normalises.
    Both files are written to a temp name and renamed: a concurrent reader sees an old
    complete file or the new one, never half of one.
    """
    import torch

    modules = list(st_model)
    pooling = modules[1].get_config_dict() if len(modules) > 1 else {}
    if len(modules) != 3 or pooling.get("pooling_mode") != "mean" or type(modules[2]).__name__ != "Normalize":
        raise ValueError("only Transformer + mean Pooling + Normalize models can be exported")
    bert = modules[0].auto_model
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    reference = {
        "format": REFERENCE_FORMAT,
        "max_seq_length": int(st_model.max_seq_length),
        "texts": list(PROBES),
        "vectors": st_model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False).tolist(),
    }
    sample = st_model.tokenizer(["a short text", "a somewhat longer text to pad the batch"],
                                padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        # The tracer warns about Python control flow in BERT that does not affect this graph.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _mean_pooled(bert, names).eval(),
                tuple(sample[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "sentence_embedding": {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        _write_atomically(dest.parent / REFERENCE_FILE, json.dumps(reference).encode())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
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


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class OnnxEmbedder:
    """The packaged model through onnxruntime + `tokenizers`: same vectors, no torch.

    Raises OnnxUnavailable at construction if the file is missing, unreadable, or does
    not reproduce the reference vectors written at export. The quick check embeds the
    short probe (~10 ms, affordable on every `kb ask`); full_check embeds all probes,
    the long one included (~0.15 s, done after export and at index time). threads: for
    onnxruntime's intra-op pool (default: every core; a Ray worker passes its CPUs).
    """

    batch_size = 32

    def __init__(self, model: ModelFiles, path: Path | None = None, *, full_check: bool = False,
                 threads: int | None = None):
        self.model = model
        self.path = Path(path) if path else onnx_path(model)
        if not self.path.is_file():
            raise OnnxUnavailable(f"no ONNX model at {self.path}")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors surface as exceptions, not log spam
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own pybind types for bad files
            raise OnnxUnavailable(f"cannot load {self.path}: {_first_line(e)}") from None
        self._inputs = [i.name for i in self._session.get_inputs()]
        dimension = self._session.get_outputs()[0].shape[-1]
        if "input_ids" not in self._inputs or "attention_mask" not in self._inputs or not isinstance(dimension, int):
            raise OnnxUnavailable(f"{self.path} is not a sentence-embedding graph kb exported")
        self.dimension = dimension
        self._tokenizer = load_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
        self._check_reference(self.path.parent / REFERENCE_FILE, full_check)

    def embed(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in the order given."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not len(texts):
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Batches of similar length waste less time on padding.
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(texts), self.batch_size):
            batch = order[start : start + self.batch_size]
            ids = np.zeros((len(batch), int(lengths[batch].max())), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = encodings[i].ids
            mask = (np.arange(ids.shape[1]) < lengths[batch, None]).astype(np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[batch] = self._session.run(None, {n: feed[n] for n in self._inputs})[0]
            if progress:
                progress(len(batch))
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _check_reference(self, reference_file: Path, full_check: bool) -> None:
        try:
            reference = json.loads(reference_file.read_text())
            expected = np.asarray(reference["vectors"], dtype=np.float32)
            texts = [str(t) for t in reference["texts"]]
            fmt, max_len = reference["format"], reference["max_seq_length"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OnnxUnavailable(f"unreadable reference vectors {reference_file}: {_first_line(e)}") from None
        if fmt != REFERENCE_FORMAT or max_len != self.model.max_seq_length:
            raise OnnxUnavailable(f"{reference_file} was written for another format or sequence length")
        if not full_check:
            texts, expected = texts[:1], expected[:1]
        try:
            got = self.embed(texts)
        except Exception as e:  # a graph that loads but cannot run is just as unusable
            raise OnnxUnavailable(f"{self.path} fails to run: {_first_line(e)}") from None
        if got.shape != expected.shape:
            raise OnnxUnavailable(f"{self.path} gives {got.shape[1]}-d vectors, expected {expected.shape[1]}")
        cosine = float(np.min(np.sum(got * expected, axis=1)))
        if not cosine >= MIN_COSINE:
            raise OnnxUnavailable(f"{self.path} disagrees with sentence-transformers (cosine {cosine:.6f})")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]
