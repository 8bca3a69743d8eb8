"""BM25 over the passages, with tantivy (a Rust search engine in the Lucene family).

Why tantivy: its top-k for a question skips every passage that cannot make the top k
(block-max WAND), so a question costs about the same at 10k and at 1M passages. SQLite
FTS5, used before, scores every passage that matches any question word: at 1M passages
that was 0.5 s per question against tantivy's 2 ms (bench/lexical.py).

Consistency with the SQLite truth. Each generation of the index has its own tantivy
folder, `lexical.<generation>/`, named in the database's meta table. A run builds the
next folder from hard links to the previous one's files (tantivy never rewrites a file
once written: segments are immutable, deletions and meta.json are new files), applies
its deletions and additions, and commits it before the SQLite commit that names it. A
killed run leaves an unnamed folder, removed by the next run; readers keep the folder
their generation names. The same rule the FAISS files follow.

Term weights. Each question term's BM25 is boosted by idf ** (IDF_POWER - 1), so a term
weighs idf ** IDF_POWER: rare words count a little more against common ones than
tantivy's (Lucene's) idf, log(1 + (N - n + 0.5) / (n + 0.5)), lets them. SciFact, train
split, nDCG@10: lexical 0.694 -> 0.701, hybrid 0.742 -> 0.745 (powers 1.2 to 1.3 score
alike; chosen on train only). SQLite FTS5's idf, log((N - n + 0.5) / (n + 0.5)), which
kb used before, leaned the same way (0.697 / 0.742).

Analysis. The terms a passage is indexed under are named by ANALYZER, recorded in the
index: a `kb index` over an index built with another analysis rebuilds its lexical
folder from the stored passages (nothing is re-embedded: vectors are cached by content).

Scores. BM25 is unbounded and depends on the question. `normalised` divides it by the
most any passage could score for the question's terms (the sum of idf ** IDF_POWER *
(k1 + 1), the limit of BM25's term-frequency saturation), giving a number in [0, 1): the
share of the question's term evidence a passage carries, comparable across questions and
fusable with cosine similarity.

Read-only folders. tantivy takes a lock file in the folder to open a reader, which a
read-only mount or another user's folder refuses; such a folder is opened through a
private folder of symbolic links to its files (in the temp folder, removed with the
reader), where the lock file can be made. Nothing is written beside the index.
Its files are made readable as the umask allows (tantivy writes its JSON files 0600).
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import time
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import CorruptIndex, first_line, io_failure, is_rust_panic

K1 = 1.2  # tantivy's BM25 constants
B = 0.75
FIELD = "body"  # headings/title and passage text, analysed together
MAX_TOKEN_LENGTH = 40  # longer "words" (hashes, base64) carry no evidence
IDF_POWER = 1.25  # a term weighs idf ** IDF_POWER (module docstring)
TERM_QUERIES_MAX = 512  # id filters up to this size are OR-ed term queries (LexicalIndex._within)

# What _analyzer_builder(False) does to a passage. Change it whenever that changes the
# terms (another filter, stemmer or tokenizer): indexes recording another value get
# their lexical folder rebuilt by the next `kb index` (kb.ingest.pipeline).
ANALYZER = f"simple|remove_long({MAX_TOKEN_LENGTH})|lowercase|ascii_fold|stemmer(english)"
# What indexes built before the analysis was recorded used.
UNRECORDED_ANALYZER = "simple|remove_long(40)|lowercase|ascii_fold|stemmer(english)"

# A compact English stopword list (function words only). Passages keep them (they
# count in a passage's length, as BM25 expects); questions drop them: OR-ed into a
# query they would match nearly every passage and only cost time.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves s t don shall may might must also
""".split())

WORD = re.compile(r"\w+", re.UNICODE)  # what counts as a word when splitting sentences


def _analyzer_builder(stopwords: bool):
    import tantivy

    builder = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
               .filter(tantivy.Filter.remove_long(MAX_TOKEN_LENGTH))
               .filter(tantivy.Filter.lowercase())
               .filter(tantivy.Filter.ascii_fold()))
    if stopwords:
        builder = builder.filter(tantivy.Filter.custom_stopword(sorted(STOPWORDS)))
    return builder.filter(tantivy.Filter.stemmer("english"))


@lru_cache(maxsize=2)
def _analyzer(stopwords: bool):
    return _analyzer_builder(stopwords).build()


def terms(text: str) -> list[str]:
    """Every term of a passage as the index sees it: lower-cased, accents folded, stemmed."""
    return _analyzer(False).analyze(text)


def query_terms(question: str) -> list[str]:
    """The question's distinct terms (stemmed, stopwords dropped), in order."""
    return list(dict.fromkeys(_analyzer(True).analyze(question)))


def _schema():
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("id", indexed=True, fast=True)  # passage id
    builder.add_unsigned_field("doc", indexed=True)  # document id: deletes and path filters
    builder.add_text_field(FIELD, tokenizer_name="kb", index_option="freq")
    return builder.build()


def _open(path: Path):
    import tantivy

    index = tantivy.Index.open(str(path))
    index.register_tokenizer("kb", _analyzer_builder(False).build())
    return index


class LexicalIndex:
    """One generation's BM25 index, open for searching."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._index = _open(path if os.access(path, os.W_OK) else self._linked(path))
            self._searcher = self._index.searcher()
        except (ValueError, OSError) as e:
            raise io_failure(e, path) or CorruptIndex(
                f"lexical index {path} is unreadable ({first_line(e, 120)}); "
                "run `kb index` to write it again from the database") from None
        except BaseException as e:
            if not is_rust_panic(e):
                raise
            raise CorruptIndex(f"lexical index {path} is damaged (tantivy: {first_line(e, 100)}); "
                               "run `kb index` to write it again from the database") from None
        self._schema = self._index.schema
        self.passages = self._searcher.num_docs
        self._idf: dict[str, float] = {}

    def _linked(self, path: Path) -> Path:
        """A private folder of symbolic links to path's files (module docstring)."""
        import tempfile  # only a read-only index needs it: kept off every cold question's imports

        linked = Path(tempfile.mkdtemp(prefix="kb-lexical-"))
        weakref.finalize(self, shutil.rmtree, linked, ignore_errors=True)
        for name in os.listdir(path):
            if not name.endswith(".lock"):
                os.symlink(path.resolve() / name, linked / name)
        return linked

    def search(self, terms: Sequence[str], k: int, *, documents: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """(passage id, raw BM25 > 0), best first; documents: only passages of these."""
        if not terms or k < 1 or (documents is not None and not len(documents)):
            return []
        query = self._any_term(terms)
        if documents is not None:
            query = self._within("doc", [int(d) for d in documents], query)
        return self._run(query, k)

    def score(self, terms: Sequence[str], ids: Iterable[int]) -> dict[int, float]:
        """Raw BM25 of the given passages (those matching no term are absent).

        Costs time in proportion to the passages asked about, not to the corpus: the
        engine intersects the question's terms with exactly these ids.
        """
        wanted = [int(i) for i in ids]
        if not terms or not wanted:
            return {}
        return dict(self._run(self._within("id", wanted, self._any_term(terms)), len(wanted)))

    def idf(self, term: str) -> float:
        """tantivy's idf, log(1 + (N - n + 0.5) / (n + 0.5)); 0 for a term no passage has."""
        if term not in self._idf:
            n = self._searcher.doc_freq(FIELD, term)
            self._idf[term] = self._idf_of(n) if n else 0.0
        return self._idf[term]

    def weight(self, term: str) -> float:
        """What the term weighs in a score: idf ** IDF_POWER (0 for a term no passage has)."""
        return self.idf(term) ** IDF_POWER

    def ceiling(self, terms: Sequence[str]) -> float:
        """The most BM25 a passage could score for these terms (see module docstring).

        A term no passage contains counts as if one did: the question asked for it, so
        matching only its other words is partial evidence, not full marks. This is what
        lets paraphrased questions (whose words the corpus lacks) lean on the dense part.
        """
        return sum((self.idf(t) or self._idf_of(1)) ** IDF_POWER for t in terms) * (K1 + 1)

    def _idf_of(self, n: int) -> float:
        return math.log(1 + (max(self.passages, n) - n + 0.5) / (n + 0.5))

    def _any_term(self, terms: Sequence[str]):
        import tantivy

        clauses = []
        for t in terms:
            query = tantivy.Query.term_query(self._schema, FIELD, t)
            idf = self.idf(t)
            if idf > 0 and IDF_POWER != 1:  # tantivy scores idf * tf part; make it idf ** IDF_POWER * tf part
                query = tantivy.Query.boost_query(query, idf ** (IDF_POWER - 1))
            clauses.append((tantivy.Occur.Should, query))
        return tantivy.Query.boolean_query(clauses)

    def _within(self, field: str, values: list[int], query):
        import tantivy

        if len(values) <= TERM_QUERIES_MAX:
            # One term query per value: at 186k passages, 0.6 ms for 50 candidates against
            # 2.2 ms for a term-set query, which walks the field's term dictionary.
            terms = [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, field, v)) for v in values]
            matching = tantivy.Query.boolean_query(terms)
        else:
            matching = tantivy.Query.term_set_query(self._schema, field, values)
        allowed = tantivy.Query.const_score_query(matching, 0.0)
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, allowed), (tantivy.Occur.Must, query)])

    def _run(self, query, k: int) -> list[tuple[int, float]]:
        hits = self._searcher.search(query, k, count=False).hits
        ids = self._searcher.fast_field_values("id", [address for _, address in hits])
        return [(int(i), float(score)) for i, (score, _) in zip(ids, hits) if score > 0]


class LexicalWriter:
    """Builds the next generation's folder from the previous one (see module docstring)."""

    def __init__(self, path: Path, previous: Path | None):
        import tantivy

        self.path = path
        _remove_stale(path)
        if previous is not None and previous.is_dir():
            _link_copy(previous, path)
            self._index = _open(path)
        else:
            path.mkdir(parents=True)
            self._index = tantivy.Index(_schema(), path=str(path))
            self._index.register_tokenizer("kb", _analyzer_builder(False).build())
        # Two threads, and a heap large enough that a big run makes few segments.
        self._writer = self._index.writer(heap_size=256_000_000, num_threads=min(2, os.cpu_count() or 1))

    def delete_documents(self, document_ids: Iterable[int]) -> None:
        import tantivy

        ids = [int(d) for d in document_ids]
        # By query: tantivy-py's delete_documents_by_term does not match unsigned fields.
        for at in range(0, len(ids), 1024):
            chunk = ids[at : at + 1024]
            self._writer.delete_documents_by_query(tantivy.Query.term_set_query(self._index.schema, "doc", chunk))

    def add(self, passages: Iterable[tuple[int, int, str]]) -> None:
        """Add (passage id, document id, text to index) rows."""
        import tantivy

        for pid, doc, text in passages:
            document = tantivy.Document()
            document.add_unsigned("id", int(pid))
            document.add_unsigned("doc", int(doc))
            document.add_text(FIELD, text)
            self._writer.add_document(document)

    def abandon(self) -> None:
        """Stop after a failure: what was added is dropped and tantivy's threads end, so
        nothing writes into the folder once the caller removes it."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        for step in ("rollback", "wait_merging_threads"):
            try:
                getattr(writer, step)()
            except (ValueError, OSError):  # the failure that brought us here may stop these too
                pass

    def commit(self) -> None:
        """Make the folder complete and durable (merges finished, unused files removed)."""
        self._writer.commit()
        self._writer.wait_merging_threads()
        self._writer = None  # its indexing heap (up to 256 MB) goes before the vectors are built
        writer = self._index.writer(heap_size=15_000_000, num_threads=1)
        writer.garbage_collect_files()
        writer.wait_merging_threads()
        del writer
        mode = 0o666 & ~_umask()
        for name in os.listdir(self.path):  # tantivy's lock files are per folder, not data
            if name.endswith(".lock"):
                os.unlink(self.path / name)
            else:  # hard links to the previous folder's files: already so, unless the umask changed
                os.chmod(self.path / name, mode)
        _fsync_dir(self.path)


def _remove_stale(path: Path, attempts: int = 20) -> None:
    """Remove a failed run's folder. An error doing so is this run's error (too many open
    files, permission denied), not to be ignored into a confusing "file exists" later;
    a folder that is not empty yet had an abandoned writer's last thread still closing
    a segment in it (seen only in a process that keeps running after a failed run)."""
    for attempt in range(attempts):
        if not path.exists():
            return
        try:
            shutil.rmtree(path)
            return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _link_copy(source: Path, dest: Path) -> None:
    """A new folder whose data files are hard links to source's: instant, no extra space."""
    dest.mkdir(parents=True)
    for name in os.listdir(source):
        if name.endswith(".lock"):
            continue
        src = source / name
        if name.endswith(".json"):  # tantivy replaces these by rename; copy them anyway
            shutil.copy2(src, dest / name)
        else:
            os.link(src, dest / name)


def _umask() -> int:
    """This process's umask, read without changing it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    for name in os.listdir(path):
        with open(path / name, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
