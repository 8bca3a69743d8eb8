"""Chunker properties, checked with the model's real tokenizer on generated text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kb.ingest.chunking import chunk_text, paragraph_spans, sentence_spans
from kb.embed.model import TokenCounter

WINDOW = 256  # the model's max_seq_length, [CLS] and [SEP] included


@pytest.fixture(scope="module")
def counter(model):
    return TokenCounter(model.tokenizer_file)


words = st.sampled_from(
    "the doctors BMA strike contract 98 per cent Hunt négociation e.g. Dr. U.S. "
    "patients’ “safe” weekend pay-rise (ACAS) NHS 1st December naïve 東京 🙂".split()
)
long_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=30, max_size=400)
sentence = st.builds(
    lambda ws, end: " ".join(ws).capitalize() + end,
    st.lists(st.one_of(words, words, words, long_word), min_size=1, max_size=60),
    st.sampled_from([".", "!", "?", "…", ".”", ""]),
)
paragraph = st.builds(" ".join, st.lists(sentence, min_size=1, max_size=12))
document = st.builds(
    lambda ps, sep: sep.join(ps),
    st.lists(paragraph, min_size=1, max_size=8),
    st.sampled_from(["\n\n", "\n \n", "\n\n\n", "\n"]),
)

budgets = st.sampled_from([(32, 0), (64, 16), (128, 32), (200, 40)])


def _chunks(text, counter, max_tokens, overlap, markdown=False, title=""):
    return chunk_text(text, counter.count, counter.token_ends, max_tokens=max_tokens,
                      overlap_tokens=overlap, markdown=markdown, title=title)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=document, budget=budgets)
def test_chunks_are_exact_in_order_and_within_window(counter, text, budget):
    max_tokens, overlap = budget
    chunks = _chunks(text, counter, max_tokens, overlap)
    assert chunks, "a non-blank document yields at least one passage"
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts)
    for c in chunks:
        assert 0 <= c.char_start < c.char_end <= len(text)
        piece = text[c.char_start : c.char_end]
        assert piece == piece.strip(), "passages are trimmed"
        assert counter.count([piece])[0] <= max_tokens
        assert counter.count([piece])[0] + 2 <= WINDOW


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=document, budget=budgets)
def test_every_character_and_sentence_lands_in_a_passage(counter, text, budget):
    max_tokens, overlap = budget
    chunks = _chunks(text, counter, max_tokens, overlap)
    covered = [False] * len(text)
    for c in chunks:
        covered[c.char_start : c.char_end] = [True] * (c.char_end - c.char_start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"text lost at {missing[:5]}"
    # A sentence that fits the budget is never cut: it lies whole inside one passage.
    for p_start, p_end in paragraph_spans(text):
        for s_start, s_end in sentence_spans(text, p_start, p_end):
            if counter.count([text[s_start:s_end]])[0] <= max_tokens:
                assert any(c.char_start <= s_start and s_end <= c.char_end for c in chunks), text[s_start:s_end]


def test_sentences_split_on_ends_but_not_abbreviations():
    text = "Dr. Smith met Mr. Jones on 1 Dec. at 9 a.m. in the U.K. office. “Is it over?” he asked. Yes! It was."
    sentences = [text[a:b] for a, b in sentence_spans(text)]
    assert sentences == [
        "Dr. Smith met Mr. Jones on 1 Dec. at 9 a.m. in the U.K. office.",
        "“Is it over?” he asked.",
        "Yes!",
        "It was.",
    ]


def test_paragraphs_pack_until_the_budget_then_break_at_a_paragraph(counter):
    paras = [f"Paragraph {i} says something short about topic {i}." for i in range(12)]
    text = "\n\n".join(paras)
    chunks = _chunks(text, counter, 40, 0)
    assert len(chunks) > 1
    for c in chunks:
        # each chunk starts and ends on paragraph boundaries: the paragraphs are short
        assert text[c.char_start :].startswith("Paragraph")
        assert text[: c.char_end].endswith(".")


def test_overlap_repeats_trailing_sentences_within_a_long_paragraph(counter):
    text = " ".join(f"Sentence number {i} talks about item {i} in some detail." for i in range(40))
    chunks = _chunks(text, counter, 64, 24)
    assert len(chunks) > 2
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start < a.char_end, "consecutive passages of one paragraph overlap"
        assert b.char_start > a.char_start


def test_a_sentence_longer_than_the_window_is_cut_at_token_boundaries(counter):
    text = "Start. " + " ".join(f"word{i}" for i in range(900)) + ". End."
    chunks = _chunks(text, counter, 100, 0)
    assert all(counter.count([text[c.char_start : c.char_end]])[0] <= 100 for c in chunks)
    joined = " ".join(text[c.char_start : c.char_end] for c in chunks)
    assert joined.split() == text.split()


def test_markdown_headings_travel_as_context(counter):
    text = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### Linux\n\nUse apt.\n\n## Usage\n\nAsk it things."
    chunks = _chunks(text, counter, 64, 0, markdown=True)
    by_text = {text[c.char_start : c.char_end]: c.context for c in chunks}
    assert by_text == {
        "Intro text.": "Guide",
        "Run the installer.": "Guide > Install",
        "Use apt.": "Guide > Install > Linux",
        "Ask it things.": "Guide > Usage",
    }


def test_context_counts_against_the_budget(counter):
    title = "A rather long record title that takes up a good part of the budget"
    text = " ".join(f"Sentence {i} is here." for i in range(60))
    chunks = _chunks(text, counter, 64, 0, title=title)
    for c in chunks:
        assert c.context == title
        assert counter.count([c.context + "\n" + text[c.char_start : c.char_end]])[0] <= 64 + 1


def test_hash_lines_in_fenced_code_are_not_headings(counter):
    text = ("# Setup\n\nInstall it.\n\n```sh\n# not a heading\npip install kb\n```\n\n"
            "More setup text.\n\n~~~\n## nor this\n~~~\n\n## Use\n\nAsk it.")
    chunks = _chunks(text, counter, 200, 0, markdown=True)
    contexts = {text[c.char_start : c.char_end].split("\n")[0]: c.context for c in chunks}
    assert set(contexts.values()) == {"Setup", "Setup > Use"}
    assert contexts["Ask it."] == "Setup > Use"
    assert any("# not a heading" in text[c.char_start : c.char_end] for c in chunks)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab \n.:`", max_size=80), cuts=st.lists(st.integers(0, 80), max_size=8),
       window=st.tuples(st.integers(0, 80), st.integers(0, 80)))
def test_markup_free_text_comes_verbatim_from_where_its_runs_say(text, cuts, window):
    from kb.ingest.chunking import indexed_offset, markup_free, without_markup

    points = sorted({min(c, len(text)) for c in cuts})
    markup = [(a, b) for a, b in zip(points[::2], points[1::2]) if a < b]
    start, end = sorted(min(w, len(text)) for w in window)
    found = markup_free(text, markup, start, end)
    # The reference: drop the markup, fold blank lines, strip (what is embedded).
    kept = "".join(ch for i, ch in enumerate(text[start:end]) if not any(a <= start + i < b for a, b in markup))
    if found is None:  # no markup in the window: nothing to drop
        assert kept == text[start:end] and without_markup(text, markup, start, end) is None
        return
    clean, runs = found
    assert clean == _fold(kept) == without_markup(text, markup, start, end)
    if not clean:
        assert runs == () and indexed_offset(runs, end - start) == 0
        return
    assert runs[-1][0] == len(clean)  # the last run marks the end
    for n, (at, origin) in enumerate(runs[:-1]):
        stop = runs[n + 1][0]
        assert clean[at:stop] == text[start + origin:start + origin + stop - at]
        assert indexed_offset(runs, origin) == at
    offsets = [indexed_offset(runs, i) for i in range(end - start + 1)]
    assert offsets == sorted(offsets) and all(0 <= o <= len(clean) for o in offsets)


def _fold(text):
    import re

    return re.sub(r"\n[ \t]*(?:\n[ \t]*)+\n", "\n\n", text).strip()
