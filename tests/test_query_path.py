"""Light commands stay light: `kb ask` never imports torch; `--help` and `info` embed nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ["faiss", "onnxruntime", "sentence_transformers", "tokenizers", "torch", "transformers"]

# Runs the real CLI entry point in a fresh interpreter, then reports what got imported.
PROBE = """
import json, sys
sys.argv = ["kb"] + json.loads(sys.argv[1])
from kb.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"exit": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def run_kb(args: list[str]) -> tuple[dict, list[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "KB_EMBEDDER"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1], done.stderr


def test_ask_embeds_without_torch(article_index):
    report, output, stderr = run_kb(["ask", "Why did junior doctors vote to strike?", "--json", "-k", "3",
                                     "--index", str(article_index)])
    assert report["exit"] == 0, stderr
    assert stderr == ""  # no fallback note: the ONNX file exported at index time was used
    assert len(json.loads(output[0])["results"]) == 3
    assert "onnxruntime" in report["loaded"]
    assert "faiss" not in report["loaded"]  # a small exact index is searched with numpy
    assert not {"torch", "transformers", "sentence_transformers"} & set(report["loaded"])


def test_help_and_info_load_no_model_and_no_vectors(article_index):
    for args in (["--help"], ["info", "--index", str(article_index)], ["info", "--json", "--index", str(article_index)]):
        report, output, stderr = run_kb(args)
        assert report["exit"] == 0, stderr
        assert output
        assert report["loaded"] == [], args


# Runs `kb ask` in a fresh interpreter, then reports each BLAS library's thread count
# (numpy's loaded by the ask; FAISS's loaded afterwards) and what the environment holds.
BLAS_PROBE = """
import json, os, sys
sys.argv = ["kb"] + json.loads(sys.argv[1])
from kb.cli import main
try:
    main()
except SystemExit:
    pass
import faiss, threadpoolctl
threads = {("numpy" if "scipy_openblas" in p["filepath"] else "faiss"): p["num_threads"]
           for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openblas"}
print(json.dumps({"threads": threads, "env": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


def blas_after_ask(article_index, env_extra: dict) -> dict:
    # Without any thread-count setting of the caller's: both libraries' own defaults.
    unset = ("KB_EMBEDDER", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    args = ["ask", "Why did junior doctors vote to strike?", "--json", "-k", "2", "--index", str(article_index)]
    done = subprocess.run([sys.executable, "-c", BLAS_PROBE, json.dumps(args)], capture_output=True, text=True,
                          env={**env, **env_extra}, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ask_starts_no_blas_threads_for_numpy_and_leaves_faiss_its_own(article_index):
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: OpenBLAS starts no worker threads either way")
    report = blas_after_ask(article_index, {})
    # numpy's BLAS, which kb never calls, on one thread: no worker spinning beside the ask...
    assert report["threads"]["numpy"] == 1
    # ...and nothing left behind: FAISS, loaded later, still gets every core for indexing.
    assert report["env"] is None
    assert report["threads"]["faiss"] == cores
    # A user's own setting is theirs.
    assert blas_after_ask(article_index, {"OPENBLAS_NUM_THREADS": "2"})["threads"]["numpy"] == 2
