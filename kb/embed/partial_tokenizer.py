"""The model's tokenizer for a process that asks a question or two: only the vocabulary
its texts reach.

Building the `tokenizers` WordPiece model from its 30,522-entry vocabulary holds the GIL
for 40-70 ms, the largest piece of a cold `kb ask` after the imports, for a question and
a few hits that match a few hundred entries. So a process that may ask only once hands
the library a vocabulary of just the entries its texts will match, with the whole
vocabulary's ids (PartialTokenizer._choose says why that tokenises exactly as the whole
does). The library's own normaliser, pre-tokeniser, WordPiece and post-processor do all
the tokenising; this module only finds the words they will see and the entries WordPiece
will match in them, and rebuilds (under a millisecond) when new words bring new entries.

A process that goes on asking switches to the whole vocabulary (expect_many(), which
the embedder calls where it prepacks the model, or once the chosen part grows past
FULL_AFTER entries), so a server pays the full build once and nothing per question.
The parsed vocabulary is kept in kb's cache beside a fingerprint of tokenizer.json:
`marshal` reads it in a third of the time `json` needs for the file itself.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from .model import cache_dir, file_identity, fit_window, load_tokenizer, write_cache_file

FULL_AFTER = 4_000  # entries chosen: past this, a rebuild costs ~6 ms, a tenth of the whole build
CACHE_FORMAT = 2  # 2: the longest entry's length kept beside the vocabulary
# Whitespace to BERT's normaliser and pre-tokeniser alike (Python's str.split would also
# split at \x1c-\x1f, control characters the normaliser deletes, joining their neighbours).
_BREAKS = re.compile(r"[ \t\n\r]+")


@lru_cache(maxsize=4)
def shared_tokenizer(tokenizer_file: Path, *, max_length: int | None = None) -> "PartialTokenizer":
    """The process's one PartialTokenizer for this file (the embedder and the highlighter
    share it, so the vocabulary one chose serves the other)."""
    return PartialTokenizer(tokenizer_file, max_length)


class PartialTokenizer:
    """encode / encode_batch / token_to_id of a `tokenizers.Tokenizer`, built over the
    vocabulary entries its texts need until expect_many() hands everything to the whole
    tokenizer (kb.embed.model.load_tokenizer). Safe across threads."""

    def __init__(self, tokenizer_file: Path, max_length: int | None = None):
        self.tokenizer_file = Path(tokenizer_file)
        self.max_length = max_length
        self._lock = threading.Lock()
        self._full = None
        self._tokenizer = None  # the partial one, set up on first use (never, after expect_many)

    def prepare(self) -> None:
        """Read the vocabulary now rather than at the first text (kb.embed.onnx_embedder does this
        while onnxruntime builds its session on another thread)."""
        with self._lock:
            if self._full is None and self._tokenizer is None:
                self._set_up()

    def _set_up(self) -> None:
        spec, vocab, self._longest = _parsed(self.tokenizer_file)
        if not _partial_is_exact(spec, vocab):  # another kind of tokenizer: only the whole one is right
            self.expect_many()
            return
        self._spec, self._vocab = spec, vocab
        model = spec["model"]
        self._prefix = model["continuing_subword_prefix"]
        self._max_chars = int(model["max_input_chars_per_word"])
        specials = [t["content"] for t in spec["added_tokens"]]
        self._specials = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True))))
        self._chosen = {content: vocab[content] for content in specials if content in vocab}
        self._chosen[model["unk_token"]] = vocab[model["unk_token"]]
        self._seen: set[str] = set()  # words
        self._seen_chunks: set[str] = set()  # stretches of raw text between breaks
        self._tokenizer = self._build()
        self._normalizer, self._pre_tokenizer = self._tokenizer.normalizer, self._tokenizer.pre_tokenizer

    @property
    def is_partial(self) -> bool:
        return self._full is None

    def expect_many(self) -> None:
        """From now on, the whole vocabulary (built once, as kb.embed.model.load_tokenizer does)."""
        if self._full is None:
            self._full = load_tokenizer(self.tokenizer_file, max_length=self.max_length)

    def encode(self, text: str, add_special_tokens: bool = True):
        return self._covering([text]).encode(text, add_special_tokens=add_special_tokens)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True):
        texts = list(texts)
        return self._covering(texts).encode_batch(texts, add_special_tokens=add_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        if self._full is None:
            self.prepare()
        full = self._full
        return full.token_to_id(token) if full is not None else self._vocab.get(token)

    # -- choosing the vocabulary ---------------------------------------------------------
    def _covering(self, texts: Iterable[str]):
        """A tokenizer whose vocabulary holds every entry WordPiece will match in these texts."""
        if self._full is not None:
            return self._full
        with self._lock:
            if self._full is None and self._tokenizer is None:
                self._set_up()
            if self._full is not None:
                return self._full
            before = len(self._chosen)
            self._choose(self._new_words(texts))
            if len(self._chosen) > FULL_AFTER:
                self.expect_many()
                return self._full
            if len(self._chosen) != before:
                self._tokenizer = self._build()
            return self._tokenizer

    def _new_words(self, texts: Iterable[str]) -> set[str]:
        """The words WordPiece will see in these texts that no earlier text had.

        Nothing the tokenizer does joins text across a space, tab or line break, so a
        stretch between them reads the same wherever it occurs: only stretches not seen
        before are read. They are read as one text, joined by line breaks (the normaliser
        works character by character and the pre-tokeniser splits at whitespace, so the
        words of the whole are the words of its parts): three calls, not three per text."""
        chunks = {c for text in texts for c in _BREAKS.split(text)} - self._seen_chunks
        if not chunks:
            return set()
        self._seen_chunks |= chunks
        words = set()
        for piece in self._specials.split("\n".join(chunks)):  # added tokens are matched before normalising
            if piece:
                normalized = self._normalizer.normalize_str(piece)
                words.update(w for w, _ in self._pre_tokenizer.pre_tokenize_str(normalized))
        words -= self._seen
        self._seen |= words
        return words

    def _choose(self, words: Iterable[str]) -> None:
        """Add the vocabulary entries WordPiece will match in these words.

        WordPiece reads a word greedily: from the start, the longest piece in the
        vocabulary, then the longest from where that piece ends, and so on ([UNK] for the
        whole word when no piece fits somewhere). The same walk over the whole
        vocabulary finds the pieces it will match. No entry longer than them can be in
        the chosen part (it is not in the whole), so the library's own walk over the
        chosen part takes the same pieces, start after start."""
        vocab, chosen, prefix, longest = self._vocab, self._chosen, self._prefix, self._longest
        for word in words:
            n = len(word)
            if n > self._max_chars:
                continue  # [UNK] without a lookup
            start = 0
            while start < n:
                for end in range(min(n, start + longest), start, -1):
                    piece = word[start:end] if start == 0 else prefix + word[start:end]
                    found = vocab.get(piece)
                    if found is not None:
                        chosen[piece] = found
                        break
                else:
                    break  # nothing fits here: the word is [UNK]
                start = end

    def _build(self):
        from tokenizers import Tokenizer

        spec = dict(self._spec, model=dict(self._spec["model"], vocab=self._chosen))
        return fit_window(Tokenizer.from_str(json.dumps(spec)), self.max_length)


def _partial_is_exact(spec: dict, vocab: dict[str, int]) -> bool:
    """True for a WordPiece tokenizer whose added tokens are matched on the raw text as is
    (BERT's): the case PartialTokenizer._choose's argument covers."""
    model = spec.get("model") or {}
    plain = all(not t.get("normalized") and not t.get("single_word") and not t.get("lstrip")
                and not t.get("rstrip") for t in spec.get("added_tokens") or [])
    return (model.get("type") == "WordPiece" and model.get("unk_token") in vocab and bool(spec.get("added_tokens"))
            and spec.get("normalizer") is not None and spec.get("pre_tokenizer") is not None and plain)


def _parsed(tokenizer_file: Path) -> tuple[dict, dict[str, int], int]:
    """(tokenizer.json without its vocabulary, the vocabulary, its longest entry's length),
    from kb's cache when it was written from this very file (kb.embed.model.file_identity); the
    length is kept too, as finding it again costs 2 ms of a cold `kb ask`."""
    identity = file_identity(tokenizer_file)
    path = cache_dir() / "tokenizer" / (hashlib.sha256(identity[0].encode()).hexdigest()[:32] + ".marshal")
    try:
        cached = marshal.loads(path.read_bytes())
        if (cached["format"] == CACHE_FORMAT and cached["identity"] == identity
                and isinstance(cached["spec"], dict) and isinstance(cached["vocab"], dict)
                and isinstance(cached["longest"], int)):
            return cached["spec"], cached["vocab"], cached["longest"]
    except (OSError, ValueError, EOFError, TypeError, KeyError):
        pass
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    vocab = (spec.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict):
        return spec, {}, 0
    spec["model"] = {k: v for k, v in spec["model"].items() if k != "vocab"}
    longest = max(map(len, vocab), default=0)
    write_cache_file(path, marshal.dumps({"format": CACHE_FORMAT, "identity": identity, "spec": spec, "vocab": vocab,
                                          "longest": longest}))
    return spec, vocab, longest
