"""The installed `kb` entry point, run as a real process, as users and scripts run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ARTICLE

KB = Path(sys.executable).parent / "kb"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if not KB.exists():
        pytest.fail(f"the kb console script is not installed next to {sys.executable}")
    work = tmp_path_factory.mktemp("proc")
    (work / "corpus").mkdir()
    shutil.copy(ARTICLE, work / "corpus" / ARTICLE.name)
    return work


def kb(*args, cwd, input=None, env=None):
    return subprocess.run([str(KB), *args], cwd=cwd, input=input, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_index_then_ask_as_processes(workdir):
    indexed = kb("index", cwd=workdir)
    assert indexed.returncode == 0, indexed.stderr
    assert "1 files" in indexed.stdout and "Traceback" not in indexed.stderr
    assert indexed.stderr == "", "no progress bar or noise when stderr is not a terminal"

    asked = kb("ask", "How big was the vote in favour of striking?", "--json", "-k", "2", cwd=workdir)
    assert asked.returncode == 0, asked.stderr
    result = json.loads(asked.stdout)
    assert "98 per cent" in result["results"][0]["text"]
    source = workdir / result["results"][0]["source"]
    hit = result["results"][0]
    assert source.read_text(encoding="utf-8")[hit["char_start"] : hit["char_end"]] == hit["text"]


def test_batch_over_a_pipe(workdir):
    kb("index", cwd=workdir)
    asked = kb("ask", "-", "--json", cwd=workdir, input="Who wrote this?\nWhen is the first strike?\n")
    assert asked.returncode == 0, asked.stderr
    assert [json.loads(line)["question"] for line in asked.stdout.splitlines()] == [
        "Who wrote this?", "When is the first strike?"]


def test_errors_as_processes(workdir):
    missing = kb("ask", "anything", "--index", "does-not-exist", cwd=workdir)
    assert missing.returncode == 3
    assert missing.stderr.strip() == "kb: no index at does-not-exist; run `kb index` first"
    bad_path = kb("index", "nope", "--index", "elsewhere", cwd=workdir)
    assert bad_path.returncode == 2 and bad_path.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"], ["info"], ["serve", "--help"], ["mcp", "--help"]])
def test_light_commands_do_not_load_heavy_libraries(workdir, argv):
    kb("index", cwd=workdir)
    probe = (
        "import sys\n"
        f"sys.argv = ['kb', *{argv!r}]\n"
        "from kb.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'faiss', 'onnxruntime', 'starlette', 'uvicorn',"
        " 'mcp'}\n"
        "print('LOADED', sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"
