"""Documentation read as its authors structured it: reST, AsciiDoc, Markdown API docs, Sphinx
HTML, Org and LaTeX, on small real excerpts (tests/fixtures/docs, python-docs; licences there).

Each reader: section titles become heading trails, API entries become their own stretches
headed by their qualified signature (no passage spans two), citations are exact (UTF-8
text formats: the file's text at the passage's offsets is the passage's text), and markup
(table borders, directive options, comments) is shown but not embedded or BM25-indexed.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from kb import KnowledgeBase
from kb.embed.model import TokenCounter, packaged_model
from kb.ingest.documents import discover, read_document
from kb.ingest.passages import ChunkSettings, make_passages

FIXTURES = Path(__file__).parent / "fixtures"
DOCS = FIXTURES / "docs"
STRUCT = FIXTURES / "python-docs" / "struct.rst.txt"


@pytest.fixture(scope="module")
def counter():
    return TokenCounter(packaged_model().tokenizer_file)


def passages_of(path: Path, counter):
    [file] = discover([path]).files
    document = read_document(file)
    return file, make_passages(document, counter, ChunkSettings())


def assert_exact(path: Path, passages) -> None:
    text = path.read_text(encoding="utf-8")
    for p in passages:
        assert text[p.char_start:p.char_end] == p.text
        assert p.line_start == text.count("\n", 0, p.char_start) + 1
        assert p.line_end == text.count("\n", 0, p.char_end - 1) + 1


def assert_within_entries(path: Path, passages, entry_line: re.Pattern) -> None:
    """No passage holds the line that starts an entry: each sits inside one entry."""
    for p in passages:
        assert not entry_line.search(p.text), (p.context, p.text[:200])


# -- reStructuredText --------------------------------------------------------------------
def test_rst_sections_and_api_entries_are_headings_with_qualified_signatures(counter):
    file, passages = passages_of(STRUCT, counter)  # a Sphinx `_sources` .rst.txt, known by content
    assert file.kind == "text"
    contexts = [p.context for p in passages]
    title = "struct --- Interpret bytes as packed binary data"
    assert contexts[0] == title  # `:mod:` role dropped from the title
    for expected in (f"{title} > Functions and Exceptions > struct.error",
                     f"{title} > Functions and Exceptions > struct.pack(format, v1, v2, ...)",
                     f"{title} > Functions and Exceptions > struct.unpack_from(format, /, buffer, offset=0)",
                     f"{title} > Format Strings > Byte Order, Size, and Alignment",
                     f"{title} > Classes > struct.Struct(format)",
                     f"{title} > Classes > struct.Struct.unpack(buffer)",  # a method inside its class
                     f"{title} > Classes > struct.Struct.size"):
        assert expected in contexts, expected
    assert_exact(STRUCT, passages)
    assert_within_entries(STRUCT, passages, re.compile(r"^\s*\.\. (function|method|class|exception|attribute)::",
                                                       re.M))
    unpack = [p for p in passages if p.context.endswith("struct.unpack(format, buffer)")]
    assert len(unpack) == 1 and "Unpack from the buffer" in unpack[0].text and "iter_unpack" not in unpack[0].text


def test_rst_file_with_decorators_options_and_hidden_directives(counter):
    path = DOCS / "functools.rst"
    file, passages = passages_of(path, counter)
    assert file.kind == "rst"
    contexts = {p.context for p in passages}
    title = "functools --- Higher-order functions and operations on callable objects"
    assert f"{title} > functools.cache(user_function)" in contexts, contexts
    assert any(c.endswith("functools.cmp_to_key(func)") for c in contexts)
    assert_exact(path, passages)
    embedded = " ".join(p.embedding_text for p in passages)
    # Bookkeeping is shown in no passage's indexed text: authors, the module's options, test set-up.
    for markup in (":synopsis:", "moduleauthor", "Peter Harris", "testsetup", "from functools import *", ":func:",
                   "wikipedia"):
        assert markup not in embedded, markup
    assert "Simple lightweight unbounded function cache" in embedded


def test_rst_table_markup_is_shown_but_not_embedded_or_indexed(counter, tmp_path, embedder):
    _, passages = passages_of(STRUCT, counter)
    table = [p for p in passages if "``x``" in p.text and "pad byte" in p.text]
    assert table, "the format characters table"
    p = table[0]
    assert "+--------+" in p.text and "| ``x``  |" in p.text  # shown as the file has it
    assert "+--------+" not in p.embedding_text and "|" not in p.indexed_text and "====" not in p.indexed_text
    assert "pad byte" in p.indexed_text and "no value" in p.indexed_text
    # What the lexical index holds is the indexed text, stored beside the shown text.
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(STRUCT, folder)
    KnowledgeBase(tmp_path / "index", embedder=embedder).index([folder])
    rows = sqlite3.connect(tmp_path / "index" / "kb.sqlite").execute(
        "SELECT text, indexed FROM passages WHERE text LIKE '%+--------+%'").fetchall()
    assert rows and all("+--------+" in text and "+--------+" not in indexed for text, indexed in rows)


# -- AsciiDoc --------------------------------------------------------------------------
def test_asciidoc_manual_page_options_are_entries(counter):
    path = DOCS / "git-commit.txt"  # git's AsciiDoc, with a .txt name: known by content
    file, passages = passages_of(path, counter)
    contexts = [p.context for p in passages]
    assert "git-commit(1) > NAME" in contexts and "git-commit(1) > DESCRIPTION" in contexts
    for entry in ("-a, --all", "-p, --patch", "-C <commit>, --reuse-message=<commit>",
                  "--fixup=[(amend|reword):]<commit>"):
        assert f"git-commit(1) > OPTIONS > {entry}" in contexts, entry
    assert_exact(path, passages)
    assert_within_entries(path, passages, re.compile(r"^--?[\w-]+.*::$", re.M))
    synopsis = next(p for p in passages if p.context == "git-commit(1) > SYNOPSIS")
    assert "[verse]" in synopsis.text and "[verse]" not in synopsis.indexed_text
    assert not any("linkgit:" in p.indexed_text for p in passages)
    assert any("linkgit:git-add[1]" in p.text for p in passages)


# -- Markdown API docs -----------------------------------------------------------------
def test_markdown_signature_headings_and_yaml_comments(counter):
    path = DOCS / "path.md"
    file, passages = passages_of(path, counter)
    contexts = [p.context for p in passages]
    assert "Path > path.basename(path[, suffix])" in contexts and "Path > path.dirname(path)" in contexts
    assert_exact(path, passages)
    assert_within_entries(path, passages, re.compile(r"^#+ ", re.M))
    text = path.read_text(encoding="utf-8")
    assert "<!-- YAML" in text
    assert not any("<!--" in p.indexed_text or "added: v0.1.25" in p.indexed_text for p in passages)
    # a passage made only of a YAML history comment is not a passage at all
    assert not any(p.text.startswith("<!--") and p.text.endswith("-->") for p in passages)


# -- Sphinx HTML -------------------------------------------------------------------------
def test_sphinx_html_entries_are_headings(counter):
    _, passages = passages_of(DOCS / "datamodel.html", counter)
    contexts = [p.context for p in passages]
    section = "3. Data model — Python 3.11.2 documentation > 3. Data model > 3.3. Special method names > " \
              "3.3.1. Basic customization"
    for entry in ("object.__new__(cls[, ...])", "object.__init__(self[, ...])", "object.__del__(self)"):
        assert f"{section} > {entry}" in contexts, contexts
    new = [p for p in passages if p.context.endswith("object.__new__(cls[, ...])")]
    assert new and all("Called after the instance has been created" not in p.text for p in new)
    # The prose after the last entry is the section's, not the entry's.
    tail = next(p for p in passages if "the others follow the same pattern" in p.text)
    assert tail.context == section


# -- Org and LaTeX ---------------------------------------------------------------------
def test_org_headlines_title_and_markup(counter):
    path = DOCS / "kettle.org"
    _, passages = passages_of(path, counter)
    by_context = {p.context: p for p in passages}
    assert set(by_context) == {"Kettle field notes > Descaling", "Kettle field notes > Descaling > Rinsing",
                               "Kettle field notes > Safety"}
    assert_exact(path, passages)
    descaling = by_context["Kettle field notes > Descaling"]
    assert "|----------------+" in descaling.text and ":PROPERTIES:" in descaling.text
    assert "|---" not in descaling.indexed_text and ":PROPERTIES:" not in descaling.indexed_text
    assert "soft" in descaling.indexed_text
    assert "this line is code" in by_context["Kettle field notes > Descaling > Rinsing"].text
    assert "private comment" not in by_context["Kettle field notes > Safety"].indexed_text


def test_latex_sections_title_and_markup(counter):
    path = DOCS / "kettle.tex"
    _, passages = passages_of(path, counter)
    by_context = {p.context: p for p in passages}
    assert set(by_context) == {"Kettles and Limescale > Descaling", "Kettles and Limescale > Descaling > Rinsing",
                               "Kettles and Limescale > Safety"}
    assert_exact(path, passages)
    descaling = by_context["Kettles and Limescale > Descaling"]
    assert "\\cite{smith2020}" in descaling.text and "% or citric acid" in descaling.text
    for markup in ("\\cite", "smith2020", "citric", "\\begin", "tabular", "\\\\", "&", "\\label"):
        assert markup not in descaling.indexed_text, markup
    assert "two parts water" in descaling.indexed_text and "three months" in descaling.indexed_text


# -- a question finds the right entry ----------------------------------------------------
def test_questions_find_the_right_entry(tmp_path, embedder):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("git-commit.txt", "path.md", "functools.rst", "datamodel.html"):
        shutil.copy(DOCS / name, folder)
    shutil.copy(STRUCT, folder)
    kb = KnowledgeBase(tmp_path / "index", embedder=embedder)
    kb.index([folder])
    cases = [("tell git commit to stage modified and deleted files automatically", "-a, --all"),
             ("unpack binary data from a buffer starting at an offset", "unpack_from("),
             ("the last portion of a path, like the Unix basename command", "path.basename("),
             ("memoize a function with an unbounded cache", "functools.cache(")]
    for question, entry in cases:
        hit = kb.ask(question, k=1)[0]
        assert entry in hit.context, (question, hit.context, hit.text[:100])
        on_disk = Path(hit.source if Path(hit.source).is_absolute() else hit.source).read_text(encoding="utf-8") \
            if Path(hit.source).exists() else None
        if on_disk is not None:
            assert on_disk[hit.char_start:hit.char_end] == hit.text
