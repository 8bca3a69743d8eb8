"""What every bench prints first: the machine, its load, and the library versions."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib import metadata

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
