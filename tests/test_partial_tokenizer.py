"""A process that asks once tokenises over part of the vocabulary, exactly as the whole
tokenizer would, and a process that asks many times gets the whole one."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np

import kb.embed.partial_tokenizer
from kb.embed.model import load_tokenizer
from kb.embed.partial_tokenizer import PartialTokenizer, shared_tokenizer

from .test_onnx import QUESTIONS, varied_texts

ODD = [
    "x[MASK]y [CLS]a[SEP] [PAD][UNK] [mask]", "[[SEP]]", "a" * 99, "b" * 100, "c" * 101, "d" * 101 + " e",
    "unaffable supercalifragilisticexpialidocious antidisestablishmentarianism", "naïve café Ωmega ß",
    "e\u0301clair \u200b zero\u200bwidth \ufeffbom \x00nul \x07bell", "東京で医者 한국어 ภาษาไทย", "ﬁnance ｆｕｌｌ",
    "tab\tand\nnewline\r\n", "unit sep", "unit\x1fsep", "''\"\"--..", "3.14e-10 0x1F #hashtag @user", "",
]


def _random_texts(count: int) -> list[str]:
    rng = random.Random(11)
    alphabet = "abcdefghijklmnopqrstuvwxyz ÀÉîøüßçñ東京한Ωπ  \t\n.,;!?'\"-[](){}#0123456789\u0301\u200b\x00"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))) for _ in range(count)]


def _same(a, b) -> None:
    assert [e.ids for e in a] == [e.ids for e in b]
    assert [e.tokens for e in a] == [e.tokens for e in b]
    assert [e.offsets for e in a] == [e.offsets for e in b]


def test_part_of_the_vocabulary_tokenises_every_text_as_the_whole_does(model, monkeypatch):
    monkeypatch.setattr(kb.embed.partial_tokenizer, "FULL_AFTER", 10**9)  # stay partial throughout
    whole = load_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    partial = PartialTokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    texts = varied_texts() + ODD + _random_texts(300)
    for start in range(0, len(texts), 9):  # the vocabulary grows batch by batch
        batch = texts[start : start + 9]
        for specials in (True, False):
            _same(partial.encode_batch(batch, add_special_tokens=specials),
                  whole.encode_batch(batch, add_special_tokens=specials))
    for text in ODD:
        _same([partial.encode(text)], [whole.encode(text)])
    for token in ("[CLS]", "[UNK]", "the", "strike", "##ing", "doctors", "nosuchtoken"):
        assert partial.token_to_id(token) == whole.token_to_id(token)
    assert partial.is_partial
    assert len(partial._chosen) < whole.get_vocab_size() // 2


def test_many_texts_or_expect_many_hand_over_to_the_whole_vocabulary(model, monkeypatch):
    whole = load_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    asked = PartialTokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    asked.encode(QUESTIONS[0])
    assert asked.is_partial
    asked.expect_many()
    assert not asked.is_partial and asked.encode_batch(QUESTIONS)[0].ids == whole.encode(QUESTIONS[0]).ids

    grown = PartialTokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    grown.encode(QUESTIONS[0])
    assert grown.is_partial
    monkeypatch.setattr(kb.embed.partial_tokenizer, "FULL_AFTER", len(grown._chosen))  # any new entry passes it
    _same(grown.encode_batch(QUESTIONS), whole.encode_batch(QUESTIONS))
    assert not grown.is_partial


def test_the_cached_vocabulary_follows_its_file(model, tmp_path, monkeypatch):
    """The parsed vocabulary is cached by the file's identity: a replaced tokenizer.json
    (or a damaged cache) is read again, never served from the old parse."""
    monkeypatch.setenv("KB_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "tokenizer.json"
    shutil.copy(model.tokenizer_file, copy)
    before = PartialTokenizer(copy).encode("strike vote").ids
    (cached,) = (tmp_path / "cache" / "tokenizer").iterdir()

    spec = json.loads(copy.read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab["strike"], vocab["vote"] = vocab["vote"], vocab["strike"]
    replacement = tmp_path / "replacement.json"
    replacement.write_text(json.dumps(spec), encoding="utf-8")
    os.replace(replacement, copy)
    after = PartialTokenizer(copy).encode("strike vote").ids
    assert after == load_tokenizer(copy).encode("strike vote").ids != before

    cached.write_bytes(b"not a cache")
    assert PartialTokenizer(copy).encode("strike vote").ids == after


def test_a_one_question_embedder_reads_part_of_the_vocabulary_and_the_same_vectors(model, embedder):
    from kb.embed.onnx_embedder import OnnxEmbedder, onnx_path

    shared_tokenizer.cache_clear()
    try:
        once = OnnxEmbedder(model, onnx_path(model), prepack=None, threads=2, workers=1)
        first = once.embed(QUESTIONS[:2])
        assert once._tokenizer.is_partial
        # Unprepacked kernels and the whole vocabulary, as before this tokenizer existed.
        shared_tokenizer.cache_clear()
        plain = OnnxEmbedder(model, onnx_path(model), prepack=False, threads=2, workers=1)
        assert not plain._tokenizer.is_partial
        assert np.array_equal(first, plain.embed(QUESTIONS[:2]))
        once.embed(QUESTIONS[2:4])  # a second call: the process asks many
        assert not once._tokenizer.is_partial
    finally:
        shared_tokenizer.cache_clear()


def test_an_indexing_or_serving_embedder_uses_the_whole_vocabulary(model, embedder):
    from kb.embed.onnx_embedder import OnnxEmbedder, onnx_path

    shared_tokenizer.cache_clear()
    try:
        assert not OnnxEmbedder(model, onnx_path(model), prepack=True, threads=1)._tokenizer.is_partial
    finally:
        shared_tokenizer.cache_clear()


def test_threads_growing_one_vocabulary_each_get_exact_tokens(model, monkeypatch):
    """A server's workers share the highlighter's tokenizer: texts arriving at once on
    several threads each get the whole tokenizer's reading."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(kb.embed.partial_tokenizer, "FULL_AFTER", 10**9)
    whole = load_tokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    shared = PartialTokenizer(model.tokenizer_file, max_length=model.max_seq_length)
    texts = varied_texts()
    batches = [texts[n::8] for n in range(8)]
    with ThreadPoolExecutor(4) as pool:
        read = list(pool.map(lambda batch: [e.ids for e in shared.encode_batch(batch)], batches))
    assert read == [[e.ids for e in whole.encode_batch(batch)] for batch in batches]
    assert shared.is_partial
