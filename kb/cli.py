"""The `kb` command: parse options, call the library, render. Nothing else lives here."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import sys
from typing import Iterator

import click

from .errors import (
    EXIT_CODES_HELP,
    EXIT_SKIPPED_FILES,
    BadInput,
    classify,
)

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
        except KeyboardInterrupt:
            click.echo("kb: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BaseException as e:  # Rust panics are BaseExceptions; kb.errors.classify names what it can
            error = classify(e)
            if error is None:  # a bug: its traceback is what a report needs
                raise
            click.echo(f"kb: {error}", err=True)
            ctx.exit(error.exit_code)


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
@click.option("--rebuild", is_flag=True,
              help="Discard the existing index and embed everything again (a killed rebuild resumes when re-run).")
@click.option("--max-file-size", default="20MB", show_default=True, metavar="SIZE",
              help="Skip files larger than this (e.g. 500KB, 20MB, 1GB; 0 for no cap). Mailboxes and PDFs "
                   "are read a message or a page at a time: their cap is 2GB, or this if larger.")
@click.option("--passage-tokens", type=click.IntRange(32, 254), default=None, metavar="N",
              help="Passage size in the model's word pieces (default: as the index was built, else 200). "
                   "Changing it re-embeds everything.")
@click.option("--vector-index", type=click.Choice(["auto", "exact", "ivf"]), default=None,
              help="Vector search: exact, approximate (IVF) or chosen by size (auto: IVF from 20,000 "
                   "passages). Default: as the index was built, else auto.")
@click.option("--int8/--fp32", "int8", default=None,
              help="Embed with the int8 model (about 2x faster, vectors slightly different) or the fp32 one "
                   "(default: as the index was built, else fp32). Changing it re-embeds everything.")
@click.option("--follow-symlinks", is_flag=True,
              help="Follow symlinks that lead outside the PATHS given (by default they are skipped, exit 7).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--ocr-languages", metavar="LANGS", default=None,
              help="Tesseract languages for scanned pages and images, e.g. eng+deu (each needs Debian's "
                   "tesseract-ocr-LANG). Default: eng, or $KB_OCR_LANGUAGES.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Read, chunk and embed on Ray workers (pip install 'kb[ray]'): a local Ray instance, "
                   "or the cluster given by --ray-address. Takes no value.")
@click.option("--ray-address", metavar="ADDRESS", default=None,
              help="Join this Ray cluster (implies --ray): auto (the one `ray start` runs on this machine), "
                   "HOST:PORT, or ray://HOST:PORT (Ray Client).")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Ray workers, each with its own model (default: one per CPU of the cluster, or one per GPU).")
def index(paths, index_dir, rebuild, max_file_size, passage_tokens, vector_index, int8, follow_symlinks, as_json,
          ocr_languages, use_ray, ray_address, ray_workers):
    """Index files and folders (default: corpus/).

    Folders are walked recursively (hidden entries and .gitignore/.kbignore
    matches skipped; symlinks followed only when they stay inside PATHS, unless
    --follow-symlinks). Read: text, Markdown, reST, AsciiDoc, Org, LaTeX, HTML, PDF,
    Word, JSONL, CSV/TSV, source code, slides and spreadsheets (.pptx .xlsx .odp .ods),
    .odt .rtf .epub, mail (.eml .mbox) and images (OCR); `kb info --skipped` lists the
    rest. The index
    mirrors exactly the PATHS given: re-running reads only new or changed files,
    embeds only passages whose text it has not embedded before (a moved file costs
    nothing) and drops files that are gone. Unusable files are skipped, each named on
    stderr (exit 7). A failed or killed run leaves the previous index untouched, and
    running the same command again resumes from its last committed batch.

    With --ray, Ray workers do the reading, chunking and embedding and this process
    writes the same index. --ray is a flag, so `kb index --ray docs/` indexes docs/;
    a cluster is named only with --ray-address. Runs under 256 KB stay in this
    process (Ray's start-up would cost more).

    \b
      kb index docs/ --ray                          a local Ray instance
      kb index docs/ --ray-address auto             the cluster `ray start` runs here
      kb index docs/ --ray-address ray://head:10001 a remote cluster (Ray Client)
    """
    from .knowledge_base import KnowledgeBase
    from .ingest.passages import ChunkSettings
    from .query.render import install_hints, report_text

    cap = _parse_size(max_file_size)
    if ocr_languages:  # read by kb.ingest.readers.ocr, here and in the read-ahead thread
        os.environ["KB_OCR_LANGUAGES"] = ocr_languages
    settings = ChunkSettings.sized(passage_tokens) if passage_tokens else None
    executor = None
    if use_ray or ray_address:
        from .ingest.prepare_ray import RayExecutor

        executor = RayExecutor(ray_address, workers=ray_workers)
    elif ray_workers:
        raise BadInput("--ray-workers needs --ray or --ray-address")
    report = KnowledgeBase(index_dir).index(paths or ["corpus"], rebuild=rebuild, progress=_progress_bar,
                                            max_file_size=cap or None, settings=settings, vector_index=vector_index,
                                            executor=executor, follow_symlinks=follow_symlinks,
                                            variant=None if int8 is None else ("int8" if int8 else "fp32"))
    for s in report.skipped:
        click.echo(f"kb: skipped {s.source}: {s.reason}", err=True)
    for hint in install_hints(report.skipped):
        click.echo(f"kb: {hint}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        click.echo(report_text(report, index_dir))
    if report.skipped:
        sys.exit(EXIT_SKIPPED_FILES)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@INDEX_OPTION
@click.option("--max-file-size", default="20MB", show_default=True, metavar="SIZE",
              help="Skip files larger than this (e.g. 500KB, 20MB, 1GB; 0 for no cap). Mailboxes and PDFs "
                   "are read a message or a page at a time: their cap is 2GB, or this if larger.")
@click.option("--passage-tokens", type=click.IntRange(32, 254), default=None, metavar="N",
              help="Passage size in word pieces (as `kb index`).")
@click.option("--vector-index", type=click.Choice(["auto", "exact", "ivf"]), default=None,
              help="Vector search kind (as `kb index`).")
@click.option("--int8/--fp32", "int8", default=None, help="Embedding model variant (as `kb index`).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per update on stdout.")
@click.option("--poll", is_flag=True,
              help="Stat the files every second instead of using the kernel's notifications "
                   "(chosen by itself on network file systems).")
def watch(paths, index_dir, max_file_size, passage_tokens, vector_index, int8, as_json, poll):
    """Keep the index following files and folders as they change (default: corpus/).

    First brings the index up to date, exactly as `kb index PATHS` does; then applies
    each burst of changes (an editor's save, a `git checkout`) as one update of only
    the files touched, with the same rules as `kb index` (.gitignore/.kbignore, hidden
    files, --max-file-size, formats). One line per update on stderr (--json: also one
    object per update on stdout). `kb ask` and `kb serve` answer from each update as
    soon as it is committed. Ctrl-C or SIGTERM stops between updates.

    One watcher per index: a second one exits 6. A `kb index` run by hand while it
    watches waits for the update in flight (60 s at most, else exit 6 naming the pid).
    """
    import signal

    from .ingest.passages import ChunkSettings
    from .knowledge_base import KnowledgeBase
    from .watch import Watcher

    cap = _parse_size(max_file_size)

    def on_update(update):
        for s in update.report.skipped:
            click.echo(f"kb: skipped {s.source}: {s.reason}", err=True)
        click.echo(update.line(), err=True)
        if as_json:
            click.echo(json.dumps(update.to_dict(), ensure_ascii=False))
            sys.stdout.flush()

    watcher = Watcher(KnowledgeBase(index_dir), paths or ["corpus"], max_file_size=cap or None,
                      settings=ChunkSettings.sized(passage_tokens) if passage_tokens else None,
                      vector_index=vector_index, variant=None if int8 is None else ("int8" if int8 else "fp32"),
                      poll=poll, on_update=on_update)

    def on_signal(signum, frame):
        if not watcher.caught_up or watcher.stopping:
            raise KeyboardInterrupt  # as `kb index`: what was committed stays, a re-run resumes
        watcher.stop()

    watcher.attach()  # a second watcher is refused here, before anything else happens
    previous = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    try:
        watcher.run()
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    click.echo(f"kb: watch: stopped after {watcher.updates} updates", err=True)


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
@click.option("--server", envvar="KB_SERVER", default=None, metavar="URL",
              help="Ask a running `kb serve` at URL instead of opening the index (or set KB_SERVER).")
@click.option("--token", envvar="KB_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token for --server (or set KB_TOKEN).")
@click.pass_context
def ask(ctx, question, k, index_dir, as_json, mode, min_score, paths, mmr, no_highlight, server, token):
    """Print the passages that best answer QUESTION.

    Each hit shows its rank, score and citation as source:first-last line, with the
    sentence that best answers the question highlighted. Hybrid scores (the default)
    are 0.85 x (0.5 x cosine similarity + 0.5 x BM25 as a share of its maximum for the
    question) + 0.15 x the cosine of the passage's best-matching sentence, with 0.05
    of the whole for the question's word pairs found near each other: the same scale
    for every question, so one --min-score fits all (off-topic questions rarely score
    above 0.3; answerable ones mostly 0.35-0.7).
    Overlapping passages of a file are merged.
    Give QUESTION as `-` to answer one question per line of stdin, each as soon as it
    arrives (`tail -f questions | kb ask - --json` works). With --server, a running
    `kb serve` answers: same output, same exit codes, no model loaded here.
    """
    from .errors import NoResults
    from .query.render import hits_json, hits_text

    if server:
        from .serve.client import RemoteKnowledgeBase

        if ctx.get_parameter_source("index_dir") == click.core.ParameterSource.COMMANDLINE:
            raise BadInput("--index and --server exclude each other: the server answers from its own index")
        kb = RemoteKnowledgeBase(server, token=token)
    else:
        _import_numpy_without_blas_threads()
        from .knowledge_base import KnowledgeBase

        kb = KnowledgeBase(index_dir, many_questions=question == "-")
    batch = question == "-"
    if batch:
        # A long-lived reader: importing the library for its cleaning is paid once.
        from .knowledge_base import clean_question

        # Lines with no text (blank, or control characters only) are skipped.
        batches = ([q for q in map(clean_question, lines) if q] for lines in _stdin_batches())
    else:
        batches = iter([[question]])
    color = sys.stdout.isatty()
    asked = empty = 0
    for questions in batches:
        if not questions:
            continue
        answers = kb.ask_many(questions, k, mode=mode, min_score=min_score, paths=paths, mmr=mmr,
                              best_sentence=not no_highlight)
        for q, hits in zip(questions, answers):
            if as_json:
                click.echo(hits_json(q, hits))
            elif hits or batch:
                click.echo(hits_text(q, hits, color=color, show_question=batch))
            sys.stdout.flush()  # each answer as soon as it exists: pipes and co-processes wait on it
            for h in hits:
                if h.stale:
                    click.echo(f"kb: note: {h.source} changed since it was indexed; run `kb index`", err=True)
                    break
            empty += not hits
        asked += len(questions)
    if batch and not asked:
        raise BadInput("no questions on stdin")
    if empty:
        why = f"scored at least {min_score}" if min_score is not None else "matched"
        what = "the question" if not batch else f"{empty} of {asked} questions"
        raise NoResults(f"no passage {why} for {what}")


@cli.command(name="eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to score.")
@click.option("--mode", "modes", multiple=True, metavar="MODE",
              help="dense, lexical, hybrid, hybrid-rrf or hybrid-minmax (repeatable; default: the first three).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Where the built index is kept (default: .kb-eval/ beside the data, else kb's user cache).")
@click.option("--vector-index", type=click.Choice(["auto", "exact", "ivf"]), default=None,
              help="Build the index with this vector search (as `kb index --vector-index`), e.g. to "
                   "measure the approximate index on a corpus below its threshold.")
@click.option("--int8", is_flag=True, help="Index and ask with the int8 model (an index of its own).")
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
def eval_(dataset_dir, split, modes, cache, vector_index, int8, as_json):
    """Measure retrieval quality on a BEIR-layout dataset, mode by mode.

    DATASET_DIR holds corpus.jsonl[.gz] (_id, title, text), queries.jsonl,
    qrels/<split>.tsv and optionally answers.jsonl (gold answer strings). The corpus
    is indexed once (each record a document) and cached; every judged query is asked
    and scored with ranx: nDCG@10, Recall@10/100, MRR@10, hit@1/5, and with answers
    hit@1/5 by answer string; plus queries per second.
    """
    from .evaluate import evaluate
    from .query.render import eval_text

    result = evaluate(dataset_dir, split=split, modes=modes or ("dense", "lexical", "hybrid"), cache=cache,
                      progress=_progress_bar, vector_index=vector_index, variant="int8" if int8 else "fp32")
    click.echo(json.dumps(result) if as_json else eval_text(result))


@cli.command()
@INDEX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON object.")
@click.option("--skipped", "list_skipped", is_flag=True,
              help="List the files (and pages) the last `kb index` could not index, with why.")
def info(index_dir, as_json, list_skipped):
    """Show what the index holds and how it was built."""
    from .knowledge_base import KnowledgeBase
    from .query.render import info_text

    if list_skipped:
        rows = KnowledgeBase(index_dir).skipped()
        if as_json:
            click.echo(json.dumps(rows, ensure_ascii=False))
        else:
            for row in rows:
                click.echo(f"{row['source']}: {row['reason']}")
        return
    data = KnowledgeBase(index_dir).info()
    click.echo(json.dumps(data) if as_json else info_text(data))


@cli.command()
@INDEX_OPTION
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but localhost needs --token (or --no-auth).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, announced on stdout).")
@click.option("--token", envvar="KB_TOKEN", default=None, metavar="TOKEN",
              help="Require `Authorization: Bearer TOKEN` on the API (or set KB_TOKEN).")
@click.option("--no-auth", is_flag=True, help="Serve beyond localhost without a token: anyone who can reach it reads the index.")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Questions answered at once (each worker keeps its own copy of the vector index).")
@click.option("--watch", "watch_paths", multiple=True, metavar="PATH", type=click.Path(path_type=str),
              help="Keep the index following PATH as it changes, as `kb watch` does (repeatable).")
def serve(index_dir, host, port, token, no_auth, workers, watch_paths):
    """Answer questions over HTTP from one warm process, with a web page at /.

    \b
    GET  /ask?q=...&k=5&mode=hybrid&path=GLOB   the object `kb ask --json` prints
    POST /ask {"questions": [...], "k": 5}      {"answers": [...]}, one per question
    GET  /info, GET /health, GET /source?source=...&line_start=N (lines around a citation)

    Errors are JSON {"error": ..., "exit_code": ...} with the CLI's exit codes. Run
    `kb index` at any time: the next question is answered from the new index. With
    --watch PATH the server keeps the index following PATH itself, as `kb watch` does.
    """
    from .serve.server import serve as run_server

    run_server(index_dir, host=host, port=port, token=token, no_auth=no_auth, workers=workers, watch=watch_paths)


@cli.command(name="mcp")
@INDEX_OPTION
@click.option("--watch", "watch_paths", multiple=True, metavar="PATH", type=click.Path(path_type=str),
              help="Keep the index following PATH as it changes, as `kb watch` does (repeatable).")
def mcp_(index_dir, watch_paths):
    """Serve the index to AI agents over the Model Context Protocol (stdio).

    Tools: `search` (question, k, mode, paths -> hits with text, citation and scores)
    and `info`; each indexed file is a resource. Add it to an MCP client as the command
    `kb mcp --index /path/to/index` (add `--watch /path/to/docs` to keep it following
    the folder as the agent or the user edits it).
    """
    from .serve.mcp_server import run

    run(index_dir, watch=watch_paths)


def _stdin_batches(max_batch: int = 64) -> Iterator[list[str]]:
    """Lines of stdin (UTF-8, undecodable bytes replaced) in batches of what has arrived.

    A file or a fast pipe is answered in batches of up to max_batch lines (one embedding
    call each); a line that arrives alone (`tail -f`, a co-process) is answered at once.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's stream): all of it is here
        stream = getattr(sys.stdin, "buffer", None)
        text = stream.read().decode("utf-8", "replace") if stream else sys.stdin.read()
        lines = text.splitlines()
        for start in range(0, len(lines), max_batch):
            yield lines[start : start + max_batch]
        return
    pending, batch = b"", []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        batch.extend(line.rstrip(b"\r").decode("utf-8", "replace") for line in complete)
        while len(batch) >= max_batch:
            yield batch[:max_batch]
            batch = batch[max_batch:]
        if batch and not select.select([fd], [], [], 0)[0]:  # nothing more waiting: answer now
            yield batch
            batch = []
    if pending:
        batch.append(pending.rstrip(b"\r").decode("utf-8", "replace"))
    if batch:
        yield batch


def _parse_size(text: str) -> int:
    """"20MB" -> bytes (binary units, like `du`); a bad value is the user's mistake."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", text, re.IGNORECASE)
    if not m:
        raise BadInput(f"--max-file-size: cannot read {text!r} as a size (e.g. 500KB, 20MB)")
    return int(float(m.group(1)) * 1024 ** "_KMG".index(m.group(2).upper() or "_"))


def _progress_bar(progress) -> None:
    """A one-line progress display on a terminal's stderr; nothing when stderr is piped."""
    if not sys.stderr.isatty():
        return
    import time

    now = time.monotonic()
    if progress.stage == "reading" and now - getattr(_progress_bar, "last", 0.0) < 0.2:
        return  # a few redraws a second is plenty
    _progress_bar.last = now
    if progress.stage == "done":
        click.echo("\r\033[K", nl=False, err=True)
        return
    if progress.stage == "publishing":
        line = f"publishing {progress.passages:,} passages"
    else:
        width = 24
        share = progress.bytes_done / progress.bytes_total if progress.bytes_total else 1.0
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        eta = progress.eta
        line = (f"indexing [{bar}] {progress.files_done:,}/{progress.files_total:,} files, "
                f"{progress.passages:,} passages, {progress.rate:.0f}/s"
                + (f", ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}" if eta else ""))
    click.echo("\r\033[K" + line[: shutil.get_terminal_size((100, 24)).columns - 1], nl=False, err=True)


def main() -> None:
    cli(prog_name="kb")


def _import_numpy_without_blas_threads() -> None:
    """Import numpy with its OpenBLAS on one thread, for a process that answers questions.

    Loading OpenBLAS starts a thread per core that spins for ~0.1 s waiting for work. kb
    never calls numpy's BLAS (its small products use einsum), so that thread only takes
    CPU from the rest of a cold `kb ask`: about 0.1 s of it here, and wall time whenever
    another job holds a core (figures in the README). FAISS brings its own OpenBLAS,
    loaded later, which keeps its threads. A user's own OPENBLAS_NUM_THREADS is left as
    it is.
    """
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


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
