"""What every bench prints first: the machine, its load, and the library versions."""

from __future__ import annotations

import compileall
import os
import platform
import sqlite3
import sys
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

PACKAGES = ("kb", "numpy", "faiss-cpu", "tantivy", "onnxruntime", "tokenizers", "torch", "sentence-transformers",
            "ranx", "bm25s")


def describe() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    cpu = platform.processor() or "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, **versions}


def line() -> str:
    return " ".join(f"{k}={v}" for k, v in describe().items())


def byte_compile_kb(folder: Path | None = None) -> str:
    """Make sure kb's own modules are byte-compiled, as `pip install` leaves an installed
    package, before any process is timed.

    An editable install has no .pyc files until Python writes them at first import, and
    with PYTHONDONTWRITEBYTECODE set (some containers and CI images set it) it never
    does: every process would then compile all of kb from source, ~0.1 s of a cold
    `kb ask` that no installed kb pays. folder: kb's package folder (default: the kb
    that imports here). Returns a line saying what was found.
    """
    if folder is None:
        spec = find_spec("kb")
        folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is None:
        return "kb: not found"
    compiled = compileall.compile_dir(str(folder), quiet=2)
    suppressed = "set" if sys.flags.dont_write_bytecode else "not set"
    return (f"kb's modules byte-compiled in {folder}{'' if compiled else ' (some failed)'}; "
            f"PYTHONDONTWRITEBYTECODE {suppressed}")
