"""The `kb` command: parse options, call the library, render. Nothing else lives here."""

from __future__ import annotations

import json
import sys

import click

from .errors import EXIT_CODES_HELP, EXIT_SKIPPED_FILES, BadInput, KbError

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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def index(paths, index_dir, rebuild, as_json):
    """Index files and folders (default: corpus/).

    Folders are walked recursively (hidden entries skipped); .txt and .md files are
    read. The index mirrors exactly the PATHS given: re-running embeds only new or
    changed files and drops files that are gone. A failed run leaves the previous
    index untouched.
    """
    from .knowledge_base import KnowledgeBase
    from .render import report_text

    report = KnowledgeBase(index_dir).index(paths or ["corpus"], rebuild=rebuild, progress=_progress_bar)
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
def ask(question, k, index_dir, as_json):
    """Print the passages that best answer QUESTION.

    Each hit shows its rank, score (cosine similarity, higher is closer), and
    citation as source:first-last line. Give QUESTION as `-` to read one question
    per line from stdin and answer them all in one process.
    """
    from .knowledge_base import KnowledgeBase
    from .render import hits_json, hits_text

    batch = question == "-"
    questions = [q.strip() for q in sys.stdin] if batch else [question]
    questions = [q for q in questions if q] if batch else questions
    if batch and not questions:
        raise BadInput("no questions on stdin")
    kb = KnowledgeBase(index_dir)
    color = sys.stdout.isatty()
    for q, hits in zip(questions, kb.ask_many(questions, k)):
        if as_json:
            click.echo(hits_json(q, hits))
        else:
            click.echo(hits_text(q, hits, color=color, show_question=batch))
        for h in hits:
            if h.stale:
                click.echo(f"kb: note: {h.source} changed since it was indexed; run `kb index`", err=True)
                break


@cli.command()
@INDEX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def info(index_dir, as_json):
    """Show what the index holds and how it was built."""
    from .knowledge_base import KnowledgeBase
    from .render import info_text

    data = KnowledgeBase(index_dir).info()
    click.echo(json.dumps(data) if as_json else info_text(data))


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
