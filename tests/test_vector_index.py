"""The approximate vector index on real embeddings of real text: it agrees with exact search,
follows re-indexing (delta, removed passages, compaction, switching kind), and honours
deletes and path filters before the top k."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from kb import KnowledgeBase
from kb.store import vector_index

DOCS = Path(__file__).parent / "fixtures" / "python-docs"
QUESTIONS = [
    "How do I cache the results of an expensive function?",
    "split a shell command line into words",
    "Which time zones does the standard library know about?",
    "pack binary data into bytes with a format string",
    "make an executable archive of Python code",
    "find which lines of my program allocate the most memory",
    "partial application of a function's arguments",
    "quote a string for a POSIX shell",
    "convert between little-endian and big-endian integers",
    "compare two memory snapshots to find a leak",
    "what does the interpreter line in a zipapp do?",
    "total ordering of a class from one comparison method",
]


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vectors") / "docs"
    shutil.copytree(DOCS, folder)
    return folder


@pytest.fixture(scope="module")
def exact(docs, tmp_path_factory, embedder):
    index_dir = tmp_path_factory.mktemp("exact") / "index"
    KnowledgeBase(index_dir, embedder=embedder).index([docs])
    assert KnowledgeBase(index_dir).info()["vector_index"]["kind"] == "flat"
    return index_dir


@pytest.fixture
def small_threshold(monkeypatch):
    """Make a 246-passage corpus count as big: the IVF code paths on real vectors."""
    monkeypatch.setattr(vector_index, "FLAT_MAX", 100)
    monkeypatch.setattr(vector_index, "nlist_for", lambda n: 16)
    monkeypatch.setattr(vector_index, "nprobe_for", lambda nlist: 6)


def top_ids(index_dir, k=10, **options):
    """(source, char_start) of the top k per question: comparable across two indexes."""
    rows = KnowledgeBase(index_dir).ask_many(QUESTIONS, k, mode="dense", best_sentence=False,
                                             merge_overlaps=False, **options)
    return [[(Path(h.source).name, h.char_start) for h in row] for row in rows]


def indexed_copy(docs, tmp_path, embedder) -> tuple[Path, Path, KnowledgeBase]:
    """(a copy of the docs to change, its index folder, the KnowledgeBase that indexed it)."""
    folder = tmp_path / "docs"
    shutil.copytree(docs, folder)
    index_dir = tmp_path / "index"
    kb = KnowledgeBase(index_dir, embedder=embedder)
    kb.index([folder])
    return folder, index_dir, kb


def recall(found, truth) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth)) / sum(len(t) for t in truth)


def test_ivf_agrees_with_exact_search(docs, exact, tmp_path, embedder, small_threshold):
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=embedder).index([docs])
    info = KnowledgeBase(index_dir).info()
    assert info["passages"] > 200
    assert info["vector_index"]["kind"] == "ivf" and info["vector_index"]["base_vectors"] == info["passages"]
    assert (info["vector_index"]["nlist"], info["vector_index"]["nprobe"]) == (16, 6)
    assert recall(top_ids(index_dir), top_ids(exact)) >= 0.97
    scores = [h.score for h in KnowledgeBase(index_dir).ask(QUESTIONS[0], k=5, mode="dense")]
    exact_scores = [h.score for h in KnowledgeBase(exact).ask(QUESTIONS[0], k=5, mode="dense")]
    assert scores == pytest.approx(exact_scores, abs=1e-5)  # 8-bit lists, but re-scored: exact cosines


def test_an_index_with_float32_lists_from_an_older_kb_answers_and_is_upgraded(docs, exact, tmp_path, embedder,
                                                                              small_threshold):
    import faiss

    from kb.store.database import Store

    folder, index_dir, _ = indexed_copy(docs, tmp_path, embedder)
    # Rewrite its base as kb 0.1 wrote it: IVF with float32 lists, no exact vectors beside it.
    store = Store(index_dir / "kb.sqlite", create=True)
    layout = store.get_meta("vectors")
    ids = np.array([r[0] for r in store.conn.execute("SELECT id FROM passages ORDER BY id")], np.int64)
    vectors = store.vectors(ids, 384)
    old = faiss.IndexIVFFlat(faiss.IndexFlatIP(384), 384, 16, faiss.METRIC_INNER_PRODUCT)
    old.train(vectors)
    old.add_with_ids(vectors, ids)
    faiss.write_index(old, str(index_dir / layout["file"]))
    for name in KnowledgeBase(index_dir).info()["vector_index"]["exact_vectors"]:
        (index_dir / name).unlink()
    del layout["codec"]
    with store.transaction():
        store.set_meta("vectors", layout)
        store.conn.execute("DELETE FROM meta WHERE key = 'checksums'")  # kb 0.1 recorded none
    store.close()

    info = KnowledgeBase(index_dir).info()["vector_index"]
    assert info["codec"] == "flat" and "exact_vectors" not in info
    assert recall(top_ids(index_dir), top_ids(exact)) >= 0.97
    # The next run that changes anything writes the base anew, with 8-bit lists.
    (folder / "kettles.txt").write_text("Descale the kettle monthly with white vinegar.", encoding="utf-8")
    KnowledgeBase(index_dir, embedder=embedder).index([folder])
    assert_exact_vectors_match_the_store(index_dir)
    assert KnowledgeBase(index_dir).ask("limescale in a kettle", k=1)[0].source.endswith("kettles.txt")


def test_ivf_follows_adds_deletes_and_compaction(docs, exact, tmp_path, embedder, small_threshold, monkeypatch):
    folder, index_dir, kb = indexed_copy(docs, tmp_path, embedder)
    base_file = kb.info()["vector_index"]["file"]

    # A new file goes to the delta: found, and the base file is not rewritten.
    (folder / "kettles.txt").write_text("Descale the kettle monthly with white vinegar.", encoding="utf-8")
    kb.index([folder])
    info = kb.info()["vector_index"]
    assert (info["file"], info["delta_vectors"], info["removed_vectors"]) == (base_file, 1, 0)
    assert kb.ask("how do I get limescale out of a kettle?", k=1)[0].source.endswith("kettles.txt")

    # A deleted file's passages are skipped inside the search: k results, none of them.
    monkeypatch.setattr(vector_index, "REMOVED_MAX", 0.5)
    (folder / "shlex.rst.txt").unlink()
    kb.index([folder])
    info = kb.info()["vector_index"]
    assert info["file"] == base_file and info["removed_vectors"] > 0
    for row in KnowledgeBase(index_dir).ask_many(QUESTIONS, 10, mode="dense", merge_overlaps=False):
        assert len(row) == 10 and not any(h.source.endswith("shlex.rst.txt") for h in row)

    # Past the delta limit, the next run writes a new base: same answers, no delta.
    monkeypatch.setattr(vector_index, "DELTA_MAX", 0)
    (folder / "ovens.txt").write_text("Clean an oven with baking soda paste left overnight.", encoding="utf-8")
    before = top_ids(index_dir, k=5)
    kb.index([folder])
    info = kb.info()["vector_index"]
    assert info["file"] != base_file and (info["delta_vectors"], info["removed_vectors"]) == (0, 0)
    assert info["base_vectors"] == kb.info()["passages"]
    after = top_ids(index_dir, k=5)
    assert recall(after, before) >= 0.97
    assert sorted(p.name for p in index_dir.glob("vectors.*")) == sorted([info["file"], *info["exact_vectors"]])
    assert_exact_vectors_match_the_store(index_dir)


def assert_exact_vectors_match_the_store(index_dir):
    """The float32 rows beside an IVF base are SQLite's vectors of exactly its passages."""
    from kb.store.exact_vectors import ExactVectors
    from kb.store.database import Store

    info = KnowledgeBase(index_dir).info()["vector_index"]
    assert info["kind"] == "ivf" and info["codec"] == "sq8"
    exact = ExactVectors.open(index_dir, info["file"], info["base_vectors"], 384)
    store = Store(index_dir / "kb.sqlite")
    try:
        ids = [r[0] for r in store.conn.execute("SELECT id FROM passages ORDER BY id")]
        assert list(exact.ids) == ids
        assert np.array_equal(np.asarray(exact.rows), store.vectors(ids, 384))
    finally:
        store.close()


def test_switching_kind_across_the_threshold_keeps_answers(docs, exact, tmp_path, embedder, monkeypatch):
    folder, index_dir, kb = indexed_copy(docs, tmp_path, embedder)
    assert kb.info()["vector_index"]["kind"] == "flat"
    flat = top_ids(index_dir)

    monkeypatch.setattr(vector_index, "FLAT_MAX", 200)  # the folder grows past the threshold
    monkeypatch.setattr(vector_index, "nlist_for", lambda n: 16)
    monkeypatch.setattr(vector_index, "nprobe_for", lambda nlist: 6)
    (folder / "kettles.txt").write_text("Descale the kettle monthly with white vinegar.", encoding="utf-8")
    kb.index([folder])
    assert kb.info()["vector_index"]["kind"] == "ivf"
    assert recall(top_ids(index_dir), flat) >= 0.97

    monkeypatch.setattr(vector_index, "FLAT_MAX", 1000)  # and shrinks back below it
    (folder / "kettles.txt").unlink()
    kb.index([folder])
    assert kb.info()["vector_index"]["kind"] == "flat"
    assert top_ids(index_dir) == flat


@pytest.mark.parametrize("exact_filter_max", [vector_index.EXACT_FILTER_MAX, 0])
def test_path_filters_apply_before_the_top_k(docs, tmp_path, embedder, small_threshold, monkeypatch,
                                             exact_filter_max):
    """A filter matching 3 passages returns those 3, searched exactly or inside the IVF lists."""
    monkeypatch.setattr(vector_index, "EXACT_FILTER_MAX", exact_filter_max)
    folder = tmp_path / "docs"
    shutil.copytree(docs, folder)
    (folder / "notes").mkdir()
    for n, text in enumerate(["Descale the kettle monthly.", "Oil the bicycle chain.", "Water the tomatoes early."]):
        (folder / "notes" / f"{n}.txt").write_text(text, encoding="utf-8")
    index_dir = tmp_path / "index"
    kb = KnowledgeBase(index_dir, embedder=embedder)
    kb.index([folder])
    monkeypatch.setattr(vector_index, "DELTA_MAX", 0)  # all in the IVF base, none in the delta
    (folder / "x.txt").write_text("Something else entirely.", encoding="utf-8")
    kb.index([folder])
    assert kb.info()["vector_index"]["delta_vectors"] == 0
    for mode in ("dense", "hybrid"):
        hits = KnowledgeBase(index_dir).ask("How do I cache a function?", k=5, mode=mode, paths=[str(folder / "notes")])
        assert sorted(Path(h.source).name for h in hits) == ["0.txt", "1.txt", "2.txt"]
    hits = KnowledgeBase(index_dir).ask("binary data", k=5, mode="dense", paths=["*struct*"])
    assert len(hits) == 5 and all(h.source.endswith("struct.rst.txt") for h in hits)


def test_the_vector_file_is_memory_mapped_not_read(docs, tmp_path, embedder, small_threshold):
    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=embedder).index([docs])
    kb = KnowledgeBase(index_dir)
    kb.ask("binary data", k=1, mode="dense")
    import faiss

    from kb.store.vector_index import _read

    vectors = kb._open_reader().vectors
    base = vectors._base
    assert isinstance(base, faiss.IndexIVFScalarQuantizer) and not base.by_residual
    info = kb.info()["vector_index"]
    path = index_dir / info["file"]
    # The exact vectors beside it are mapped too.
    maps = Path("/proc/self/maps").read_text()
    assert all(str(index_dir / name) in maps for name in info["exact_vectors"])
    # (views of the maps, not copies)
    assert isinstance(vectors._exact.rows.base, np.memmap) and isinstance(vectors._exact.ids.base, np.memmap)
    # Lists are views of the mapped file, not copies in memory (as a full read makes).
    lists = faiss.downcast_InvertedLists(base.invlists)
    assert isinstance(lists, faiss.ArrayInvertedLists)  # not OnDiskInvertedLists: no per-list locks
    assert not any(lists.codes.at(i).is_owned for i in range(lists.nlist))
    assert str(path) in Path("/proc/self/maps").read_text()
    full = _read(path, mmap=False)
    assert all(faiss.downcast_InvertedLists(full.invlists).codes.at(i).is_owned for i in range(lists.nlist))


def test_one_question_one_thread(article_index, monkeypatch):
    import faiss

    monkeypatch.setattr(vector_index, "SMALL_MAX", 0)  # FAISS, as past 2,000 passages
    article_kb = KnowledgeBase(article_index)
    calls = []
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: calls.append(n))
    article_kb.ask("who is striking?", k=3)
    assert calls and set(calls) == {1}
    calls.clear()
    article_kb.ask_many(["who is striking?"] * 20, k=3)
    assert set(calls) == {max(1, __import__("os").cpu_count() or 1)}


def test_the_vector_index_kind_can_be_forced_and_is_kept(docs, tmp_path, embedder):
    index_dir = tmp_path / "index"
    kb = KnowledgeBase(index_dir, embedder=embedder)
    kb.index([docs], vector_index="ivf")
    info = kb.info()["vector_index"]
    assert info["kind"] == "ivf" and info["nlist"] == vector_index.nlist_for(info["base_vectors"])
    kb.index([docs])  # not given again: the index keeps its setting
    assert kb.info()["vector_index"]["kind"] == "ivf"
    kb.index([docs], vector_index="exact")
    assert kb.info()["vector_index"]["kind"] == "flat"
    from kb.errors import BadInput

    with pytest.raises(BadInput):
        kb.index([docs], vector_index="hnsw")


def test_a_small_index_is_searched_without_faiss_and_agrees_with_it(article_index, monkeypatch):
    """Up to SMALL_MAX passages, numpy over SQLite's vectors: the same hits, filters too."""
    questions = ["who is striking?", "What does the BMA want?", "weekend pay", "Jeremy Hunt"]
    small = KnowledgeBase(article_index)
    assert isinstance(small._open_reader().vectors, vector_index.SmallIndex)
    got = small.ask_many(questions, k=5, mode="dense", best_sentence=False)
    filtered = small.ask("who is striking?", k=5, mode="dense", paths=["*.txt"])
    monkeypatch.setattr(vector_index, "SMALL_MAX", 0)
    big = KnowledgeBase(article_index)
    assert isinstance(big._open_reader().vectors, vector_index.VectorIndex)
    want = big.ask_many(questions, k=5, mode="dense", best_sentence=False)
    for a, b in zip(got, want):
        assert [h.char_start for h in a] == [h.char_start for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    assert [h.char_start for h in filtered] == [h.char_start for h in want[0]]
    assert small.ask("who is striking?", k=5, mode="dense", paths=["nothing/*"], min_score=None) == []


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_exact_vectors_are_refused_and_plain_index_repairs_them(docs, tmp_path, embedder, small_threshold,
                                                                       damage):
    from kb.errors import CorruptIndex

    index_dir = tmp_path / "index"
    KnowledgeBase(index_dir, embedder=embedder).index([docs])
    rows = index_dir / KnowledgeBase(index_dir).info()["vector_index"]["exact_vectors"][1]
    if damage == "truncate":
        rows.write_bytes(rows.read_bytes()[: rows.stat().st_size // 2])
    else:
        rows.unlink()
    with pytest.raises(CorruptIndex, match="damaged.*run `kb index`"):
        KnowledgeBase(index_dir, embedder=embedder).ask(QUESTIONS[0], k=3)
    # Derived from SQLite: written again by plain `kb index`, nothing re-embedded.
    report = KnowledgeBase(index_dir, embedder=embedder).index([docs])
    assert report.repaired and report.passages_embedded == 0
    assert_exact_vectors_match_the_store(index_dir)


# -- when the page cache lacks the index: what a question reads is asked for at once -------
@pytest.fixture
def ivf_with_removed(docs, tmp_path, embedder, small_threshold, monkeypatch):
    """An IVF base with deleted passages in it (FAISS skips them through a selector)."""
    folder, index_dir, kb = indexed_copy(docs, tmp_path, embedder)
    monkeypatch.setattr(vector_index, "REMOVED_MAX", 0.5)
    (folder / "shlex.rst.txt").unlink()
    kb.index([folder])
    assert kb.info()["vector_index"]["removed_vectors"] > 0
    return index_dir


def test_lists_probed_from_centroids_in_memory_answer_as_faiss_search(ivf_with_removed, embedder, monkeypatch):
    """The centroids are copied out of the mapped file (every question scans all of them),
    and the lists they choose are scanned by FAISS's own search_preassigned: the results
    are those of FAISS's own search, with deletes and with a path filter."""
    import faiss

    monkeypatch.setattr(vector_index, "EXACT_FILTER_MAX", 0)  # a filter searched inside the lists
    kb = KnowledgeBase(ivf_with_removed, embedder=embedder)
    kb.ask(QUESTIONS[0], k=1)
    vectors = kb._open_reader().vectors
    mapped = faiss.downcast_index(faiss.extract_index_ivf(vectors._base).quantizer)
    assert not mapped.codes.is_owned and vectors._centroids.codes.is_owned
    assert np.array_equal(vectors._centroids.reconstruct_n(0, mapped.ntotal), mapped.reconstruct_n(0, mapped.ntotal))
    queries = embedder.embed(QUESTIONS)
    some = np.asarray(kb._open_reader().store.conn.execute(
        "SELECT id FROM passages WHERE id % 3 = 0").fetchall()).ravel()
    ours = [vectors.search(queries, 10), vectors.search(queries, 10, some)]
    vectors._centroids = None  # FAISS's own IndexIVF.search
    theirs = [vectors.search(queries, 10), vectors.search(queries, 10, some)]
    for (our_scores, our_ids), (their_scores, their_ids) in zip(ours, theirs):
        assert np.array_equal(our_ids, their_ids) and np.array_equal(our_scores, their_scores)
    assert set(ours[1][1].ravel()) <= set(some)


def test_the_lists_a_question_probes_are_asked_for_at_once(ivf_with_removed, embedder, monkeypatch):
    """Each list the question probes is advised (MADV_WILLNEED) over exactly the bytes FAISS
    reads: its codes and its ids, whole pages of the mapped file; the kernel accepts every
    range. The exact vectors' ids are asked for too."""
    import mmap

    import faiss

    from kb.store import page_advice

    monkeypatch.setattr(page_advice, "RESIDENT_US", 0.0)  # advice never looks "all in memory": never paused
    kb = KnowledgeBase(ivf_with_removed, embedder=embedder)
    kb.ask(QUESTIONS[0], k=1)
    vectors = kb._open_reader().vectors
    prefetch, advised = vectors._prefetch, []
    real = prefetch._madvise
    prefetch._madvise = lambda address, length: advised.append((address, length, real(address, length)))

    class Recording:
        def __init__(self, mapped):
            self.mapped, self.advice = mapped, []

        def madvise(self, advice, *args):
            self.advice.append(advice)
            return self.mapped.madvise(advice, *args)

    ids_map = vectors._exact._ids_map = Recording(vectors._exact._ids_map)
    question = QUESTIONS[3]
    kb.ask(question, k=5, mode="dense")
    _, probed = vectors._centroids.search(embedder.embed([question]), vectors.layout.nprobe)
    lists = faiss.extract_index_ivf(vectors._base).invlists
    wanted = set()
    for n in probed.ravel().tolist():
        size = lists.list_size(n)
        wanted |= {(int(lists.get_codes(n)), size * lists.code_size), (int(lists.get_ids(n)), 8 * size)}
    assert advised and all(result == 0 for *_, result in advised)  # real, mapped, page-aligned ranges
    assert all(address % mmap.PAGESIZE == 0 for address, *_ in advised)
    covered = [(address, address + length) for address, length, _ in advised]
    for start, length in wanted:
        assert any(a <= start and start + length <= b for a, b in covered), "a probed list was not advised"
    assert len(advised) <= len(probed.ravel()) * 2
    advised.clear()  # a batch asks for each list once (12 questions x 6 of 16 lists)
    kb.ask_many(QUESTIONS, k=5, mode="dense")
    ranges = [(address, length) for address, length, _ in advised]
    assert ranges and len(ranges) == len(set(ranges)) and len(ranges) <= 2 * 16
    for _ in range(200):  # asked for on a helper thread at the question's start
        if ids_map.advice:
            break
        time.sleep(0.05)
    assert ids_map.advice and set(ids_map.advice) == {mmap.MADV_WILLNEED}


def test_advice_pauses_while_the_pages_were_in_memory(ivf_with_removed, embedder, monkeypatch):
    """Advice that found every page in memory spares the next QUIET_SECONDS of questions
    (on a busy machine it costs them ~1 ms); the first question after that advises again,
    and advice that had reads to start never pauses."""
    from kb.store import page_advice

    now = [1000.0]
    kb = KnowledgeBase(ivf_with_removed, embedder=embedder)
    kb.ask(QUESTIONS[0], k=1)
    vectors = kb._open_reader().vectors
    gate = vectors._prefetch.gate = page_advice.AdviceGate(clock=lambda: now[0])
    advised = []
    real = vectors._prefetch._madvise
    vectors._prefetch._madvise = lambda address, length: advised.append(address) or real(address, length)

    def asks(question) -> bool:
        advised.clear()
        kb.ask(question, k=3, mode="dense")
        return bool(advised)

    monkeypatch.setattr(page_advice, "RESIDENT_US", 1e9)  # every round of advice looks "all in memory"
    assert asks(QUESTIONS[1])  # the first question advises...
    assert not asks(QUESTIONS[2]) and not gate.open()  # ...and the next ones, within the quiet time, do not
    now[0] += page_advice.QUIET_SECONDS
    assert asks(QUESTIONS[3])  # after a pause, advice again
    monkeypatch.setattr(page_advice, "RESIDENT_US", 0.0)  # advice that started reads
    now[0] += page_advice.QUIET_SECONDS
    assert asks(QUESTIONS[4]) and asks(QUESTIONS[5]) and gate.open()


def _vm_flags(path: Path) -> list[str]:
    """The VmFlags of this process's mappings of a file (Linux's /proc/self/smaps)."""
    flags, current = [], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
            current = line.rstrip().endswith(str(path))
        elif current and line.startswith("VmFlags:"):
            flags.append(line.split(":", 1)[1].split())
    return flags


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_scattered_reads_are_not_read_ahead(ivf_with_removed, exact, embedder):
    """The exact vectors are read a row here and there: their mappings say so (no readahead
    around each fault), and SQLite, which then serves a few dozen rows a question, is read
    without a mapping. A small (flat) index keeps SQLite mapped: its vectors come from there."""
    kb = KnowledgeBase(ivf_with_removed, embedder=embedder)
    kb.ask(QUESTIONS[0], k=1)
    info = kb.info()["vector_index"]
    for name in info["exact_vectors"]:
        flags = _vm_flags(ivf_with_removed / name)
        assert flags and all("rr" in f for f in flags), (name, flags)
    assert kb._open_reader().store.conn.execute("PRAGMA mmap_size").fetchone()[0] == 0
    # A compaction reads them front to back: read ahead as usual.
    from kb.store.exact_vectors import ExactVectors

    whole = ExactVectors.open(ivf_with_removed, info["file"], info["base_vectors"], 384, scattered=False)
    for name in info["exact_vectors"]:
        flags = _vm_flags(ivf_with_removed / name)
        assert sum("rr" not in f for f in flags) == 1 and sum("rr" in f for f in flags) >= 1, (name, flags)
    del whole
    small = KnowledgeBase(exact, embedder=embedder)
    small.ask(QUESTIONS[0], k=1)
    assert small._open_reader().store.conn.execute("PRAGMA mmap_size").fetchone()[0] > 0
