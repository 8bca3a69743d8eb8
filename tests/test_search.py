"""Retrieval on the shipped article: paraphrases, merged overlaps, --min-score, --path, MMR."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import cli
from kb.query.search import DEFAULT_WEIGHT, PROXIMITY_WEIGHT, SENTENCE_WEIGHT, merge_overlaps

from .conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"

# Questions in a reader's own words (mostly not the article's), and a phrase of the
# paragraph that answers each. Quality target: hit@3 >= 0.9 over the set.
QUESTIONS = [
    ("What percentage of balloted medics backed industrial action?", "98 per cent supporting strike action"),
    ("What was the turnout among trainees in the ballot?", "76 per cent of junior doctors voting"),
    ("What date is the walkout scheduled for?", "1st December"),
    ("What career did the writer nearly follow?", "I would probably now be a junior doctor"),
    ("Which local authority does the writer sit on?", "Hammersmith & Fulham Council"),
    ("What does the author do for a living?", "strategic healthcare consulting"),
    ("How many strands does the disagreement have?", "two key threads to the dispute"),
    ("Why do trainees think the new terms are dangerous?", "less safe working conditions"),
    ("Which hospital departments might find it hard to recruit under the deal?", "such as A&E"),
    ("What does the writer think of the health secretary's record?", "very good Secretary of State"),
    ("Which Labour leader tried to turn the health service into a political weapon?", "Ed Miliband failed"),
    ("Do the trainees have confidence in the minister?", "junior doctors collectively do not"),
    ("Which part of the row matters less, according to the writer?", "far less important"),
    ("How have the union and medics used the press?", "skilfully using the media"),
    ("When did the union walk away from talks?", "withdrew from negotiations over a year ago"),
    ("Were there conditions attached to restarting talks?", "there are no preconditions"),
    ("Who does the union now want to mediate?", "only renegotiate with ACAS"),
    ("Why is the author wary of a conciliation service getting involved?", "might get in the way of negotiations"),
    ("What has been the main sticking point in the whole saga?", "biggest areas of disagreement"),
    ("Is the minister right to tackle safety despite arguments over the evidence?", "quibbling over statistics"),
    ("Who has written convincingly about round-the-clock services?", "Hugh Byrne"),
    ("Is the new contract a cure-all for weekend services?", "magic bullet"),
    ("Which body coined the phrase seven day present care?", "Academy of Medical Royal Colleges"),
    ("Whose future contract talks will need to cover senior staff at weekends?", "future consultant contract"),
    ("Do trainees already work overnight?", "work nights and weekends"),
    ("Do medics put in extra unpaid time?", "work more hours than they are contracted"),
    ("What wastes doctors' time on the wards?", "not being able to find notes"),
    ("Who should make fixing these hospital problems a priority?", "priorities for NHS managers"),
    ("Which inquiry increased attention on staffing levels?", "Francis report"),
    ("How would narrowing the gap between day and night pay help hospitals?", "easier for Trusts to recruit"),
    ("What could happen if trainee morale keeps falling?", "move abroad"),
    ("Why would losing doctors overseas be costly?", "huge loss of the investment"),
    ("Are the trainees asking for a big pay rise?", "not making outrageous demands"),
    ("Are most medics radical?", "not in any way militant"),
    ("Who will be hurt by a walkout?", "damaging for patients"),
    ("What should the health secretary do to win the trainees back?", "regain junior doctors trust"),
]


def test_paraphrased_questions_hit_at_3(article_kb):
    results = article_kb.ask_many([q for q, _ in QUESTIONS], k=3)
    misses = [q for (q, needle), hits in zip(QUESTIONS, results) if not any(needle in h.text for h in hits)]
    hit_at_3 = 1 - len(misses) / len(QUESTIONS)
    assert len(QUESTIONS) >= 30
    assert hit_at_3 >= 0.9, misses


def test_best_sentence_is_inside_the_passage_and_answers(article_kb):
    found = right = 0
    for (_, needle), hits in zip(QUESTIONS, article_kb.ask_many([q for q, _ in QUESTIONS], k=3)):
        for hit in hits:
            assert hit.char_start <= hit.sentence_start < hit.sentence_end <= hit.char_end
            assert hit.sentence.strip() == hit.sentence and hit.sentence in hit.text
        answering = next((h for h in hits if needle in h.text), None)
        if answering is not None:
            found += 1
            right += needle in answering.sentence
    # In the passage that holds the answer, the highlighted sentence is the answer: measured
    # 23/33 with no model call (kb 0.1 embedded every sentence: 26/33). These questions avoid
    # the article's words on purpose; on XQuAD the cheap method is the better one
    # (bench/highlight.py).
    assert right / found >= 0.65, (right, found)


def test_score_parts_explain_the_hybrid_score(article_kb):
    for hit in article_kb.ask("Who does the union now want to mediate?", k=5):
        assert hit.score == pytest.approx(
            (1 - PROXIMITY_WEIGHT) * ((1 - SENTENCE_WEIGHT) * hit.fused + SENTENCE_WEIGHT * hit.sentence_score)
            + PROXIMITY_WEIGHT * hit.proximity, abs=2e-6)
        assert 0 <= hit.proximity <= 1
        assert hit.fused == pytest.approx(DEFAULT_WEIGHT * hit.dense + (1 - DEFAULT_WEIGHT) * hit.lexical, abs=2e-6)
        assert 0 <= hit.lexical < 1 and -1 <= hit.sentence_score <= 1
    dense = article_kb.ask("Who does the union now want to mediate?", k=3, mode="dense")
    assert all(h.score == h.dense and h.fused is None for h in dense)


def test_no_overlapping_passages_of_one_file_in_a_result(article_kb):
    for question, _ in QUESTIONS:
        hits = article_kb.ask(question, k=5)
        for i, a in enumerate(hits):
            for b in hits[i + 1:]:
                assert not (a.source == b.source and a.char_start < b.char_end and b.char_start < a.char_end)


@dataclass
class _P:
    id: int
    document_id: int
    page: int | None = None
    record: str | None = None
    location: str | None = None  # slide, sheet rows, message: offsets count within it


@dataclass
class _C:
    passage: _P
    score: float
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    parts: tuple = ()


def test_merge_overlaps_unions_the_citation():
    from kb.query.search import _text
    from kb.store.database import PassageSpan

    source = "one two three four five six seven eight nine ten"
    spans, texts = {}, {}

    def cand(pid, doc, a, b, score, line=1, record=None, location=None):
        spans[pid] = PassageSpan(pid, doc, a, b, line, line, None, record, location)
        texts[pid] = (source[a:b], "")
        return _C(_P(pid, doc, record=record, location=location), score, a, b, line, line, (pid,))
    best = cand(1, 1, 8, 24, 0.9, line=2)  # "three four five "
    overlapping = cand(2, 1, 14, 33, 0.8, line=3)
    other_doc = cand(3, 2, 8, 24, 0.7)
    other_record = cand(4, 1, 8, 24, 0.6, record="r2")
    disjoint = cand(5, 1, 40, 48, 0.5)
    other_slide = cand(6, 1, 8, 24, 0.4, location="slide 2")  # same offsets, another section
    merged = merge_overlaps([best, overlapping, other_doc, other_record, disjoint, other_slide])
    assert [c.passage.id for c in merged] == [1, 3, 4, 5, 6]
    top = merged[0]
    assert (top.char_start, top.char_end, top.score) == (8, 33, 0.9)
    assert top.parts == (1, 2)
    assert _text(top, spans, texts) == source[8:33]
    assert (top.line_start, top.line_end) == (2, 3)


def test_a_merged_hit_gets_the_text_of_its_whole_span():
    """A question merges candidates by their spans alone and reads text only for its hits:
    the texts of a hit's parts, joined in merge order, are exactly its span of the document."""
    from kb.query.search import _Candidate, _text
    from kb.store.database import PassageSpan

    source = "".join(f"word{i:03d} " for i in range(200))
    rng = random.Random(7)
    for _ in range(300):
        spans = []
        for pid in range(1, rng.randint(2, 7)):
            a = rng.randrange(0, len(source) - 40)
            spans.append((pid, a, rng.randint(a + 1, min(len(source), a + 300))))
        stored = {pid: PassageSpan(pid, 1, a, b, 1, 1, None, None) for pid, a, b in spans}
        texts = {pid: (source[a:b], f"ctx{pid}") for pid, a, b in spans}
        candidates = [_Candidate(p, 1.0 - n / 10, None, None, None, p.char_start, p.char_end, 1, 1, (p.id,))
                      for n, p in enumerate(stored.values())]
        merged = merge_overlaps(candidates)
        assert sorted(pid for c in merged for pid in c.parts) == sorted(stored)
        for c in merged:
            assert c.passage.id == c.parts[0]
            assert (c.char_start, c.char_end) == (min(stored[i].char_start for i in c.parts),
                                                  max(stored[i].char_end for i in c.parts))
            assert _text(c, stored, texts) == source[c.char_start:c.char_end]


def test_min_score_drops_weak_hits(article_kb):
    question = "Who does the union now want to mediate?"
    all_hits = article_kb.ask(question, k=5)
    cut = (all_hits[0].score + all_hits[-1].score) / 2
    kept = article_kb.ask(question, k=5, min_score=cut)
    assert 0 < len(kept) < 5 and all(h.score >= cut for h in kept)
    assert article_kb.ask(question, k=5, min_score=0.99) == []


def test_min_score_nothing_clears_exits_1(article_index):
    args = ["ask", "recipe for banana bread", "--min-score", "0.9", "--index", str(article_index)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no passage scored at least 0.9" in result.stderr


def test_hybrid_scores_separate_on_and_off_topic_questions(article_kb):
    # The default score is on one scale for every question, so one threshold works.
    on_topic = [article_kb.ask(q, k=1)[0].score for q, _ in QUESTIONS[:10]]
    off_topic = [article_kb.ask(q, k=1)[0].score for q in (
        "How do I bake sourdough bread?", "Who won the football world cup?", "What is the capital of Peru?")]
    assert min(on_topic) > max(off_topic)


@pytest.fixture(scope="module")
def two_folder_kb(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("paths")
    (root / "kitchen").mkdir()
    (root / "garden").mkdir()
    (root / "kitchen" / "kettle.txt").write_text(
        "To descale the kettle, boil vinegar in it twice.\n\nThe kettle holds 1.7 litres.\n", encoding="utf-8")
    (root / "garden" / "roses.txt").write_text(
        "Prune roses in late winter.\n\nFeed roses in spring.\n\nWater roses at the base, not the leaves.\n"
        "\nDeadhead roses through summer.\n", encoding="utf-8")
    kb = KnowledgeBase(root / "index")
    kb.index([root / "kitchen", root / "garden"])
    return kb, root


def test_path_filter_applies_before_top_k(two_folder_kb):
    kb, root = two_folder_kb
    hits = kb.ask("How do I descale the kettle?", k=3, paths=[str(root / "garden") + "/*"])
    assert hits and all("garden" in h.source for h in hits)
    assert kb.ask("descale kettle", k=3, paths=["*kettle.txt"])[0].source.endswith("kettle.txt")
    assert kb.ask("descale kettle", k=3, paths=["*nothing-matches*"]) == []
    both = kb.ask("kettle roses", k=5, paths=["*kettle.txt", "*roses.txt"])
    assert {h.source.rsplit("/", 1)[-1] for h in both} == {"kettle.txt", "roses.txt"}


def test_path_folder_without_wildcards(two_folder_kb):
    kb, root = two_folder_kb
    hits = kb.ask("roses", k=5, mode="lexical", paths=[str(root / "kitchen")])
    assert hits == []  # no kitchen passage mentions roses
    assert all("garden" in h.source for h in kb.ask("kettle", k=2, paths=[str(root / "garden")]))


def test_cli_mode_path_and_json_parts(article_index):
    args = ["ask", "What did the vote show?", "--json", "-k", "2", "--mode", "hybrid", "--path", "*.txt",
            "--index", str(article_index)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    for key in ("dense", "lexical", "fused", "sentence_start", "sentence_end"):
        assert isinstance(row[key], (int, float)), key


def test_terminal_output_highlights_best_sentence(article_kb):
    from kb.query.render import hits_text

    question = "What was the turnout in the ballot?"
    hits = article_kb.ask(question, k=1)
    styled = hits_text(question, hits, color=True)
    plain = hits_text(question, hits, color=False)
    first_words = hits[0].sentence.split()[0]
    assert "\x1b[33m\x1b[1m" + first_words in styled or "\x1b[33m\x1b[1m" in styled.split(first_words, 1)[0][-12:]
    assert "\x1b[" not in plain


def test_mmr_gives_k_distinct_hits(article_kb):
    plain = article_kb.ask("junior doctors strike", k=4)
    diverse = article_kb.ask("junior doctors strike", k=4, mmr=0.5)
    assert len(diverse) == 4 and len({h.passage_id for h in diverse}) == 4
    assert diverse[0].passage_id == plain[0].passage_id


def test_highlighting_calls_no_model(article_index, embedder):
    """One embedding call per batch of questions: best sentences come from word pieces and terms."""
    from .test_incremental import CountingEmbedder

    calls = []

    class Recording(CountingEmbedder):
        def embed(self, texts, *, progress=None):
            calls.append(list(texts))
            return super().embed(texts, progress=progress)

    kb = KnowledgeBase(article_index, embedder=Recording(embedder))
    questions = [q for q, _ in QUESTIONS[:6]]
    rows = kb.ask_many(questions, k=3)
    assert calls == [questions]
    assert all(h.sentence_start is not None for row in rows for h in row)


def test_the_lexical_top_k_runs_beside_the_embedding(article_index, embedder):
    """A hybrid question's tantivy top k does not wait for the question's embedding: the
    embedding here returns only once the lexical search has run (on another thread), and
    the answers are those of the plain order."""
    import threading

    from .test_incremental import CountingEmbedder

    searched = threading.Event()

    class WaitingForTheLexicalSearch(CountingEmbedder):
        def embed(self, texts, *, progress=None):
            assert searched.wait(30), "the lexical top k waited for the embedding"
            return super().embed(texts, progress=progress)

    kb = KnowledgeBase(article_index, embedder=WaitingForTheLexicalSearch(embedder))
    reader = kb._open_reader()
    search = reader.lexical.search

    def recording(*args, **kwargs):
        out = search(*args, **kwargs)
        searched.set()
        return out

    reader.lexical.search = recording
    questions = [q for q, _ in QUESTIONS[:4]]
    overlapped = kb.ask_many(questions, k=3)
    assert overlapped == KnowledgeBase(article_index, embedder=embedder).ask_many(questions, k=3)


def test_sentences_read_by_chunks_as_the_tokenizer_and_analyzer_read_them_whole(monkeypatch):
    """The highlighter's chunk cache must give each sentence the word pieces, terms and
    prefixes reading the whole sentence gives (real text: the article and Python docs)."""
    from kb.ingest.chunking import sentence_spans
    from kb.query.highlight import WordPieces, _prefixes
    from kb.store.lexical import terms

    pieces = WordPieces.load()
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "corpus").glob("*"))]
    texts += [p.read_text(encoding="utf-8")[:20_000] for p in sorted(FIXTURES.glob("python-docs/*.txt"))]
    texts.append("Café naïve «quoted» x_y 3.14% C++/C# e-mail (see: foo.bar) — ünïcode 東京 ok?")
    checked = 0
    for text in texts:
        for a, b in sentence_spans(text):
            sentence = text[a:b]
            whole = pieces.tokenizer.encode(sentence, add_special_tokens=False).ids
            if len(whole) >= pieces.tokenizer.max_length:
                continue  # truncated whole; chunk by chunk it is not
            words = pieces.words(sentence)
            assert words.ids == whole, sentence
            assert words.terms == set(terms(sentence)), sentence
            assert words.prefixes == _prefixes(sentence), sentence
            checked += 1
    assert checked > 500
    # Max-sim per sentence, empty sentences included, equals the direct computation.
    import numpy as np

    query = pieces.vectors(pieces.content_ids("junior doctors strike"))
    sentences = [[], pieces.words("Doctors walked out.").ids, [], pieces.words("The BMA balloted its members.").ids]
    direct = [float((query @ pieces.vectors(ids).T).max(axis=1).mean()) if ids else 0.0 for ids in sentences]
    assert pieces.max_similarity(query, sentences) == pytest.approx(direct, abs=1e-6)
    # A full cache starts again rather than growing: same readings.
    import kb.query.highlight

    monkeypatch.setattr(kb.query.highlight, "CHUNK_CACHE_MAX", 8)
    sentence = "Junior doctors voted to strike over the new contract, said the BMA."
    for _ in range(2):
        assert pieces.words(sentence).ids == pieces.tokenizer.encode(sentence, add_special_tokens=False).ids
        assert len(pieces._chunks) <= 12
