"""Approximate vector search on real embeddings: recall@10 against exact search, and time.

    .venv/bin/python bench/ann.py [--docs DIR] [--cache DIR] [--queries N]

Chunks a folder of real documents with kb's own chunker and embeds every passage with the
packaged model (once: vectors are cached in --cache, which takes about an hour on 2 cores
for the 75k passages of scale-docs). Held-out passages serve as queries ("more like this")
along with the first sentence of other held-out passages (short, question-like). For
growing prefixes of the corpus it prints, per index kind and parameter: recall@10 against
exact inner-product search, and single-thread milliseconds per query. This is what chose
kb.store.vector_index's FLAT_MAX, nlist_for and nprobe_for.

The default --docs is ../shared/data/scale-docs: 1,240 documentation files (Python, git,
Node.js, R and Debian manuals, each under its own free licence); any folder of real text
works.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from corpus import passages  # noqa: E402


def embeddings(texts: list[str], path: Path) -> np.ndarray:
    """Vectors of texts, embedded in chunks and cached at path (resumes where it stopped)."""
    from kb.embed.embedding import load_embedder
    from kb.embed.model import packaged_model

    done_file = path.with_suffix(".done")
    done = int(done_file.read_text()) if done_file.exists() and path.exists() else 0
    if done >= len(texts):
        return np.load(path, mmap_mode="r")
    mode = "r+" if done else "w+"
    out = np.lib.format.open_memmap(path, mode=mode, dtype=np.float32, shape=(len(texts), 384))
    embedder = load_embedder(packaged_model(), for_indexing=True)
    for start in range(done, len(texts), 2048):
        out[start : start + 2048] = embedder.embed(texts[start : start + 2048])
        out.flush()
        done_file.write_text(str(min(start + 2048, len(texts))))
        print(f"embedded {min(start + 2048, len(texts))}/{len(texts)}", file=sys.stderr, flush=True)
    return np.load(path, mmap_mode="r")


def ms_per_query(search, queries: np.ndarray) -> float:
    started = time.perf_counter()
    for q in queries:
        search(q[None, :])
    return 1000 * (time.perf_counter() - started) / len(queries)


def rescored(index, base: np.ndarray, queries: np.ndarray, k: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """kb's IVF search: factor x k candidates by the 8-bit codes, ranked by exact inner product."""
    _, found = index.search(queries, factor * k)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for row, (query, cand) in enumerate(zip(queries, found)):
        cand = cand[cand >= 0]
        exact = base[cand] @ query
        top = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(top)], ids[row, : len(top)] = exact[top], cand[top]
    return scores, ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--cache", default=None, help="where passages and vectors are kept")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries of each kind")
    parser.add_argument("--sizes", default="20000,50000,all")
    parser.add_argument("--passages", type=int, default=None,
                        help="embed only the first N passages (the full scale-docs take about an hour)")
    args = parser.parse_args()
    import faiss

    from kb.embed.model import cache_dir
    from kb.store.vector_index import RESCORE_FACTOR, nlist_for, nprobe_for

    print(machine.line())
    cache = Path(args.cache) if args.cache else cache_dir() / "bench" / "ann"
    rows = passages(Path(args.docs), cache)
    if args.passages:
        rows = rows[: args.passages]
    texts = [f"{r['ctx']}\n{r['text']}" if r["ctx"] else r["text"] for r in rows]
    name = f"vectors-{len(rows)}.npy" if args.passages else "vectors.npy"
    vectors = np.ascontiguousarray(embeddings(texts, cache / name))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(vectors))
    held = order[: 2 * args.queries]
    corpus = np.sort(order[2 * args.queries :])
    from kb.ingest.chunking import sentence_spans

    firsts = []
    for i in held[args.queries :]:
        a, b = (sentence_spans(rows[i]["text"]) or [(0, len(rows[i]["text"]))])[0]
        firsts.append(rows[i]["text"][a:b][:300])
    short = embeddings(firsts, cache / f"short-queries-{args.queries}.npy")
    query_sets = {"passages": np.ascontiguousarray(vectors[held[: args.queries]]),
                  "first sentences": np.ascontiguousarray(short)}
    print(f"{len(vectors)} passages embedded; {args.queries} queries of each kind held out")
    faiss.omp_set_num_threads(1)

    for size in args.sizes.split(","):
        n = len(corpus) if size == "all" else min(int(size), len(corpus))
        base = np.ascontiguousarray(vectors[corpus[:n]])
        flat = faiss.IndexFlatIP(base.shape[1])
        flat.add(base)
        print(f"\n## {n} passages")
        truths = {name: flat.search(q, 10)[1] for name, q in query_sets.items()}
        line = f"flat (exact): {ms_per_query(lambda q: flat.search(q, 50), query_sets['passages'][:200]):.2f} ms/query"
        print(line)
        default_nlist = nlist_for(n)
        for nlist in sorted({default_nlist // 2, default_nlist}):
            for kind in ("IVF-Flat", "IVF-SQ8"):
                quantizer = faiss.IndexFlatIP(base.shape[1])
                if kind == "IVF-Flat":
                    index = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
                else:
                    index = faiss.IndexIVFScalarQuantizer(quantizer, base.shape[1], nlist,
                                                          faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
                index.cp.niter = 10
                if kind == "IVF-SQ8":
                    index.by_residual = False  # as kb builds it
                step = max(1, n // (64 * nlist))
                started = time.perf_counter()
                index.train(base[::step][: 64 * nlist])
                index.add(base)
                built = time.perf_counter() - started
                searches = {kind: index.search}
                if kind == "IVF-SQ8":  # kb: RESCORE_FACTOR x k by the codes, re-scored with exact vectors
                    searches[f"{kind} re-scored"] = lambda q, k, index=index: rescored(index, base, q, k, RESCORE_FACTOR)
                for nprobe in sorted({max(1, nlist // 32), max(1, nlist // 16), nprobe_for(nlist), 2 * nprobe_for(nlist)}):
                    index.nprobe = nprobe
                    for label, search in searches.items():
                        cells = [f"{name} recall@10 {recall(search(q, 10)[1], truths[name]):.3f}"
                                 for name, q in query_sets.items()]
                        speed = ms_per_query(lambda q: search(q, 50), query_sets["passages"][:200])
                        mark = (" <- kb default" if (label, nlist, nprobe) == ("IVF-SQ8 re-scored", default_nlist,
                                                                                nprobe_for(nlist)) else "")
                        print(f"{label} nlist={nlist} nprobe={nprobe}: {', '.join(cells)}, {speed:.2f} ms/query"
                              f" (built in {built:.1f} s){mark}")
        # HNSW, for comparison: a graph index (no removals; its graph is read into memory).
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        hnsw = faiss.IndexHNSWFlat(base.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 64
        started = time.perf_counter()
        hnsw.add(base)
        built = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        for ef in (64, 96):
            hnsw.hnsw.efSearch = ef
            cells = [f"{name} recall@10 {recall(hnsw.search(q, 10)[1], truths[name]):.3f}" for name, q in query_sets.items()]
            speed = ms_per_query(lambda q: hnsw.search(q, 50), query_sets["passages"][:200])
            print(f"HNSW M=16 efSearch={ef}: {', '.join(cells)}, {speed:.2f} ms/query (built in {built:.1f} s)")


if __name__ == "__main__":
    main()
