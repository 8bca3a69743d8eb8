"""The `kb` command: parse options, call the library, render. Nothing else lives here."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys

import click

from .errors import EXIT_CODES_HELP, EXIT_IO_ERROR, EXIT_SKIPPED_FILES, BadInput, KbError

INDEX_OPTION = click.option(
    "--index",
    "index_dir",
    envvar="KB_INDEX",
    default="index",
    show_default=True,
    metavar="DIR",
    help="Index folder (or set KB_INDEX).",
)


class _Group(click.Group):
    """Turns library errors into one line on stderr and their exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KbError as e:
            click.echo(f"kb: {e}", err=True)
            ctx.exit(e.exit_code)
        except sqlite3.DatabaseError as e:  # damage found mid-query, past the checks on open
            click.echo(f"kb: the index database is damaged ({e}); run `kb index --rebuild`", err=True)
            ctx.exit(5)
        except OSError as e:  # the index folder itself: permissions, a full disk
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"kb: {where}{e.strerror or e}", err=True)
            ctx.exit(EXIT_IO_ERROR)
        except KeyboardInterrupt:
            click.echo("kb: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kb")
def cli():
    """kb: a local, offline knowledge base you can ask questions in plain English.

    \b
    Index a folder, then ask it:
      kb index corpus/
      kb ask "why are junior doctors striking?"
      kb ask "what did the BMA say?" --json -k 3 | jq .
      printf 'first question\\nsecond question\\n' | kb ask - --json
    """


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@INDEX_OPTION
@click.option("--rebuild", is_flag=True, help="Discard the existing index and embed everything again.")
@click.option("--max-file-size", default="20MB", show_default=True, metavar="SIZE",
              help="Skip files larger than this (e.g. 500KB, 20MB, 1GB; 0 for no cap).")
@click.option("--passage-tokens", type=click.IntRange(32, 254), default=None, metavar="N",
              help="Passage size in the model's word pieces (default: as the index was built, else 200). "
                   "Changing it re-embeds everything.")
@click.option("--int8/--fp32", "int8", default=None,
              help="Embed with the int8 model (about 2x faster, vectors slightly different) or the fp32 one "
                   "(default: as the index was built, else fp32). Changing it re-embeds everything.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def index(paths, index_dir, rebuild, max_file_size, passage_tokens, int8, as_json):
    """Index files and folders (default: corpus/).

    Folders are walked recursively (hidden entries and .gitignore/.kbignore
    matches skipped); .txt .md .html .pdf .docx .jsonl files are read. The index
    mirrors exactly the PATHS given: re-running embeds only new or changed files and
    drops files that are gone. Unusable files are skipped, each named on stderr
    (exit 7). A failed or killed run leaves the previous index untouched.
    """
    from .knowledge_base import KnowledgeBase
    from .render import report_text

    from .passages import ChunkSettings

    cap = _parse_size(max_file_size)
    settings = ChunkSettings.sized(passage_tokens) if passage_tokens else None
    report = KnowledgeBase(index_dir).index(paths or ["corpus"], rebuild=rebuild, progress=_progress_bar,
                                            max_file_size=cap or None, settings=settings,
                                            variant=None if int8 is None else ("int8" if int8 else "fp32"))
    for s in report.skipped:
        click.echo(f"kb: skipped {s.source}: {s.reason}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        click.echo(report_text(report, index_dir))
    if report.skipped:
        sys.exit(EXIT_SKIPPED_FILES)


@cli.command()
@click.argument("question")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(min=1), help="Number of passages.")
@INDEX_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per question (JSONL with `-`).")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), default="hybrid", show_default=True,
              help="hybrid: meaning and exact words; dense: meaning only; lexical: BM25 words only (no model).")
@click.option("--min-score", type=float, default=None, metavar="X",
              help="Drop hits scoring below X; none left means exit 1.")
@click.option("--path", "paths", multiple=True, metavar="GLOB",
              help="Only files matching GLOB (cited or absolute path; repeatable; a folder means all under it).")
@click.option("--mmr", type=click.FloatRange(0, 1), default=None, metavar="LAMBDA",
              help="Diversify: 1 = relevance only, lower = less alike hits (e.g. 0.7).")
@click.option("--no-highlight", is_flag=True,
              help="Skip finding each hit's best sentence (saves ~0.1 s a question in big batches).")
def ask(question, k, index_dir, as_json, mode, min_score, paths, mmr, no_highlight):
    """Print the passages that best answer QUESTION.

    Each hit shows its rank, score and citation as source:first-last line, with the
    sentence that best answers the question highlighted. Hybrid scores (the default)
    are 0.5 x cosine similarity + 0.5 x BM25 as a share of its maximum for the
    question: the same scale for every question, so one --min-score fits all
    (off-topic questions rarely score above 0.25; answerable ones mostly 0.35-0.7).
    Overlapping passages of a file are merged.
    Give QUESTION as `-` to read one question per line from stdin and answer them
    all in one process.
    """
    from .errors import NoResults
    from .knowledge_base import KnowledgeBase, clean_question
    from .render import hits_json, hits_text

    batch = question == "-"
    # In a batch, lines with no text (blank, or control characters only) are skipped.
    questions = [q for q in map(clean_question, _stdin_lines()) if q] if batch else [question]
    if batch and not questions:
        raise BadInput("no questions on stdin")
    kb = KnowledgeBase(index_dir)
    color = sys.stdout.isatty()
    empty = 0
    for q, hits in zip(questions, kb.ask_many(questions, k, mode=mode, min_score=min_score, paths=paths, mmr=mmr,
                                                 best_sentence=not no_highlight)):
        if as_json:
            click.echo(hits_json(q, hits))
        elif hits or batch:
            click.echo(hits_text(q, hits, color=color, show_question=batch))
        for h in hits:
            if h.stale:
                click.echo(f"kb: note: {h.source} changed since it was indexed; run `kb index`", err=True)
                break
        empty += not hits
    if empty:
        why = f"scored at least {min_score}" if min_score is not None else "matched"
        what = "the question" if not batch else f"{empty} of {len(questions)} questions"
        raise NoResults(f"no passage {why} for {what}")


@cli.command(name="eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to score.")
@click.option("--mode", "modes", multiple=True, metavar="MODE",
              help="dense, lexical, hybrid, hybrid-rrf or hybrid-minmax (repeatable; default: the first three).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Where the built index is kept (default: .kb-eval/ beside the data, else kb's user cache).")
@click.option("--int8", is_flag=True, help="Index and ask with the int8 model (an index of its own).")
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def eval_(dataset_dir, split, modes, cache, int8, as_json):
    """Measure retrieval quality on a BEIR-layout dataset, mode by mode.

    DATASET_DIR holds corpus.jsonl[.gz] (_id, title, text), queries.jsonl,
    qrels/<split>.tsv and optionally answers.jsonl (gold answer strings). The corpus
    is indexed once (each record a document) and cached; every judged query is asked
    and scored with ranx: nDCG@10, Recall@10/100, MRR@10, hit@1/5, and with answers
    hit@1/5 by answer string; plus queries per second.
    """
    from .evaluate import evaluate
    from .render import eval_text

    result = evaluate(dataset_dir, split=split, modes=modes or ("dense", "lexical", "hybrid"), cache=cache,
                      progress=_progress_bar, variant="int8" if int8 else "fp32")
    click.echo(json.dumps(result) if as_json else eval_text(result))


@cli.command()
@INDEX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def info(index_dir, as_json):
    """Show what the index holds and how it was built."""
    from .knowledge_base import KnowledgeBase
    from .render import info_text

    data = KnowledgeBase(index_dir).info()
    click.echo(json.dumps(data) if as_json else info_text(data))


def _stdin_lines() -> list[str]:
    """Lines of stdin as UTF-8, undecodable bytes replaced: a stray byte is not fatal."""
    stream = getattr(sys.stdin, "buffer", None)
    lines = stream.read().decode("utf-8", "replace").splitlines() if stream else sys.stdin.read().splitlines()
    return lines


def _parse_size(text: str) -> int:
    """"20MB" -> bytes (binary units, like `du`); a bad value is the user's mistake."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", text, re.IGNORECASE)
    if not m:
        raise BadInput(f"--max-file-size: cannot read {text!r} as a size (e.g. 500KB, 20MB)")
    return int(float(m.group(1)) * 1024 ** "_KMG".index(m.group(2).upper() or "_"))


def _progress_bar(total: int):
    """A progress bar on a terminal's stderr; nothing when stderr is piped."""
    if not sys.stderr.isatty():
        return None
    bar = click.progressbar(length=total, label="embedding", file=sys.stderr, show_pos=True)
    bar.__enter__()

    def advance(n: int) -> None:
        bar.update(n)
        if bar.pos >= total:
            bar.__exit__(None, None, None)

    return advance


def main() -> None:
    cli(prog_name="kb")


def run() -> None:
    """The installed `kb` command: main(), then exit at once, output flushed.

    Tearing numpy, FAISS and onnxruntime down module by module costs a cold `kb ask`
    ~0.1 s (bench/query_latency.py) and frees nothing the OS would not. SQLite needs
    nothing: writers commit and close before returning.
    """
    try:
        main()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # `kb ask ... | head`: the reader has gone
            pass
    os._exit(code)
