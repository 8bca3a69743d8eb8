"""Does the int8 embedder earn its place? kb's int8 variant against its fp32 embedder.

kb offers its int8 variant (`kb index --int8`) because it measured >= 1.5x faster than
kb's fp32 embedder and lost <= 0.005 nDCG@10 on SciFact test. The variant is
kb.embed.onnx_embedder.export_int8: onnxruntime's dynamic quantisation of kb's own fp32
export (int8 weights per output channel, every op it knows: MatMul, Attention,
EmbedLayerNormalization), each text run on its own. For comparison, a milder recipe
built here:
  int8-matmul  only the plain MatMul nodes quantised (feed-forward and attention
               output); fused attention and the embeddings stay fp32
Measured:
  vectors   cosine to sentence-transformers over SciFact abstracts and claims and XQuAD
            questions (min, 1st percentile, median), each text embedded alone and in
            batches of 32 (int8's activation scale is per run: batch-mates move a vector)
  quality   `kb eval` (kb.evaluate) on SciFact test and XQuAD, dense and hybrid, each
            variant with an index of its own (cached under --cache: the first run embeds
            SciFact once per variant, 10+ minutes each on 2 cores)
  speed     passages/s is bench/embed_rate.py's job: --settings kb,int8,int8-b32,int8-matmul

    .venv/bin/python bench/int8.py [--scifact DIR] [--xquad DIR] [--cache DIR] [--skip-quality]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES = {"int8-matmul": ["MatMul"]}  # recipe -> op types quantised (kb's own int8 is not built here)


def int8_path(model, recipe: str) -> Path:
    """Where an int8 model lives: kb's own variant in kb's cache, a recipe of this bench beside it."""
    from kb.embed.model import cache_dir, packaged_model
    from kb.embed.onnx_embedder import onnx_path

    if recipe == "int8":
        return onnx_path(packaged_model("int8"))
    return cache_dir() / "bench-int8" / model.weights_sha256 / recipe / "model.onnx"


def build(model, recipe: str) -> Path:
    """Quantise kb's fp32 export with `recipe`, save it optimised, with reference vectors of
    its own (so kb's OnnxEmbedder loads and checks it like any export). Idempotent."""
    dest = int8_path(model, recipe)
    if recipe == "int8":
        from kb.embed.embedding import load_embedder
        from kb.embed.model import packaged_model

        return load_embedder(packaged_model("int8"), for_indexing=True).path
    if dest.is_file():
        return dest
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from kb.embed.embedding import load_embedder
    from kb.embed.onnx_embedder import PROBES, REFERENCE_FILE, REFERENCE_FORMAT, _quiet_logging, _save_optimised, onnx_path

    load_embedder(model, for_indexing=True)  # makes sure kb's export exists
    work = Path(tempfile.mkdtemp(prefix="kb-int8-"))
    try:
        quantised = work / "quantised.onnx"
        with _quiet_logging():
            quantize_dynamic(str(onnx_path(model)), str(quantised), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=RECIPES[recipe],
                             # kb's graph holds onnxruntime's fused ops, whose types shape inference cannot see
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        folder = work / "out"
        folder.mkdir()
        _save_optimised(quantised, folder / "model.onnx")
        vectors = raw_embed(folder / "model.onnx", model, list(PROBES))
        (folder / REFERENCE_FILE).write_text(json.dumps({
            "format": REFERENCE_FORMAT, "max_seq_length": model.max_seq_length, "texts": list(PROBES),
            "vectors": vectors.tolist()}))
        dest.parent.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest.parent, ignore_errors=True)
        os.replace(folder, dest.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def raw_embed(path: Path, model, texts: list[str]):
    """Vectors from a bare onnxruntime session, one text at a time (to write a reference)."""
    import numpy as np
    import onnxruntime as ort

    from kb.embed.model import load_tokenizer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokenizer = load_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    names = [i.name for i in session.get_inputs()]
    rows = []
    for text in texts:
        ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        rows.append(session.run(None, {n: feed[n] for n in names})[0][0])
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sample_texts(scifact: Path, xquad: Path, count: int = 400) -> list[str]:
    """Abstracts and claims of SciFact and questions of XQuAD: what kb would embed."""
    import gzip

    texts = []
    corpus = scifact / "corpus.jsonl.gz"
    opener = gzip.open if corpus.exists() else open
    with opener(corpus if corpus.exists() else scifact / "corpus.jsonl", "rt", encoding="utf-8") as f:
        for line, _ in zip(f, range(count)):
            record = json.loads(line)
            texts.append(f"{record.get('title', '')}\n{record['text']}".strip())
    for folder in (scifact, xquad):
        with open(folder / "queries.jsonl", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line, _ in zip(f, range(count // 2))]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--xquad", default=str(ROOT.parent / "shared" / "data" / "xquad-en"))
    parser.add_argument("--cache", default=None, help="where the eval indexes are kept (default: kb's cache)")
    parser.add_argument("--recipes", default="int8,int8-matmul")
    parser.add_argument("--skip-quality", action="store_true", help="vectors only, no kb eval")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # numba's type-safety chatter from ranx

    import numpy as np

    from query_latency import machine_report

    from kb.embed.embedding import SentenceTransformerEmbedder, load_embedder
    from kb.evaluate import evaluate
    from kb.embed.model import cache_dir, packaged_model
    from kb.embed.onnx_embedder import OnnxEmbedder

    model = packaged_model()
    recipes = [r for r in args.recipes.split(",") if r]
    print(machine_report())
    embedders = {"fp32 (kb)": load_embedder(model, for_indexing=True)}
    for recipe in recipes:
        path = build(model, recipe)
        embedders[recipe] = OnnxEmbedder(packaged_model("int8") if recipe == "int8" else model, path)
    sizes = {name: sum(p.stat().st_size for p in e.path.parent.iterdir()) for name, e in embedders.items()}

    texts = sample_texts(Path(args.scifact), Path(args.xquad))
    reference = SentenceTransformerEmbedder(model).embed(texts)
    print(f"\ncosine to sentence-transformers over {len(texts)} texts (SciFact abstracts and claims, XQuAD questions):")
    for name, embedder in embedders.items():
        for how, batch in (("alone", 1), ("batches of 32", 32)):
            embedder.batch_size = batch
            cosines = np.sum(embedder.embed(texts) * reference, axis=1)
            print(f"  {name:<12} {how:<14} min {cosines.min():.4f}  1st percentile {np.percentile(cosines, 1):.4f}  "
                  f"median {np.median(cosines):.4f}   files {sizes[name] / 1e6:.0f} MB")
        embedder.batch_size = 32 if name.startswith("fp32") else 1
    if args.skip_quality:
        return

    cache = Path(args.cache) if args.cache else cache_dir() / "bench-int8"
    datasets = [("SciFact test", args.scifact, "nDCG@10", "ndcg@10"), ("XQuAD", args.xquad, "hit@1", "hit@1")]
    results: dict[tuple[str, str], dict] = {}
    for name, embedder in embedders.items():
        variant = "fp32" if name.startswith("fp32") else name
        for label, path, _, _ in datasets:
            folder = cache / "eval" / variant / Path(path).name
            # kb's own embedder for fp32, so the index is the one `kb eval` would build.
            # kb's own variants as `kb eval [--int8]` runs them; the bench's recipe through its embedder.
            own = variant in ("fp32", "int8")
            results[(name, label)] = evaluate(path, split="test", modes=("dense", "hybrid"), cache=folder,
                                              variant=variant if own else "fp32",
                                              embedder=None if own else embedder)["modes"]
            print(f"  evaluated {name} on {label}", flush=True)
    print("\nquality (dense / hybrid), change from fp32 in brackets:")
    for label, _, metric, key in datasets:
        base = results[("fp32 (kb)", label)]
        print(f"  {label} {metric}:")
        for name in embedders:
            row = results[(name, label)]
            cells = [f"{row[m][key]:.4f} ({row[m][key] - base[m][key]:+.4f})" for m in ("dense", "hybrid")]
            print(f"    {name:<12} " + " / ".join(cells))
    print(f"\nload average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
