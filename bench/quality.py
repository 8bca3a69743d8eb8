"""Retrieval quality per mode on SciFact (train and test) and XQuAD, via `kb eval`'s library.

    .venv/bin/python bench/quality.py [--scifact DIR] [--xquad DIR] [--cache DIR] [--json]

Defaults read ../shared/data/{scifact,xquad-en} relative to the repo root. Each corpus is
indexed once (cached under --cache, default kb's user cache) and every later run only
asks questions. Prints the machine, library versions and one table per dataset/split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from kb.evaluate import evaluate  # noqa: E402
from kb.embed.model import cache_dir  # noqa: E402
from kb.query.render import eval_text  # noqa: E402

MODES = ["dense", "lexical", "hybrid", "hybrid-rrf", "hybrid-minmax"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--xquad", default=str(ROOT.parent / "shared" / "data" / "xquad-en"))
    parser.add_argument("--cache", default=str(cache_dir() / "bench"), help="where built indexes are kept")
    parser.add_argument("--mode", action="append", help=f"modes to run (default: {', '.join(MODES)})")
    parser.add_argument("--vector-index", choices=["auto", "exact", "ivf"], default=None,
                        help="force the vector index kind (ivf: measure approximate search at these sizes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # numba's type-safety chatter from ranx

    runs = [("scifact", args.scifact, "train"), ("scifact", args.scifact, "test"), ("xquad", args.xquad, "test")]
    report = {"machine": machine.describe(), "results": []}
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in report["machine"].items()))
    for name, path, split in runs:
        cache = Path(args.cache) / (name if not args.vector_index else f"{name}-{args.vector_index}")
        plain = Path(args.cache) / name
        if args.vector_index and not cache.exists() and plain.exists():
            shutil.copytree(plain, cache)  # its stored vectors: only the vector index is built again
        result = evaluate(path, split=split, modes=args.mode or MODES, cache=cache, vector_index=args.vector_index)
        report["results"].append(result)
        if not args.json:
            print()
            print(eval_text(result))
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
