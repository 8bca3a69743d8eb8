"""Peak memory of indexing a large mailbox and a long scanned PDF, against their size.

    PYTHONPATH=. python bench/memory.py [--mbox-mb 50,100,200] [--text-mb 5,20]
        [--pdf-pages 100,500] [--ocr-pages 2,6] [--old /path/to/older/checkout] [--work DIR]

Each file is indexed alone, in a fresh index, by a child process that runs the index
run of `kb index` (KnowledgeBase.index, no size cap) with the hashing stand-in embedder
(kb.embed.embedding.HashEmbedder: what is measured is reading, chunking, staging and
publishing, not the model). A wrapper process runs that child and nothing else, and
reports resource.getrusage(RUSAGE_CHILDREN).ru_maxrss (the child, and any Tesseract it
ran); the child reports its own peak (RUSAGE_SELF).

- Mailboxes (`--mbox-mb`): messages written with the stdlib email module, ~1.5 KB of
  varied text each, every third with a ~150 KB attachment kb does not read (most of a
  real mailbox's bytes are attachments). `--text-mb`: mailboxes of text messages only
  (every byte chunked and staged; slower: chunking runs at ~0.5 MB/s here).
- Scanned PDF (`--pdf-pages`): letter pages of 10 pt text drawn with Pillow at 300 dpi,
  saved as greyscale JPEG pages. OCR of a page takes ~11 s on this busy 2-core machine,
  so 500 pages are read with a stand-in `tesseract` (TESSERACT_CMD: a shell script that
  answers at once with one word named after its input): everything kb does per page,
  PDFium rendering at 300 dpi, the image handed to Tesseract, the OCR cache, sections
  and passages, is measured; Tesseract's own work is not. `--ocr-pages` runs the real
  Tesseract over the first N pages, to show kb's peak is flat in the pages read.
- `--old`: the same runs on an older checkout of kb (PYTHONPATH), e.g. `git archive`
  of the commit before streaming, for comparison.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
from kb import KnowledgeBase
from kb.embed.embedding import HashEmbedder
from kb.embed.model import packaged_model
started = time.monotonic()
report = KnowledgeBase(sys.argv[2], embedder=HashEmbedder(packaged_model())).index([sys.argv[1]], max_file_size=None)
print(json.dumps({"seconds": round(time.monotonic() - started, 1), "passages": report.passages,
                  "skipped": [s.reason[:100] for s in report.skipped],
                  "self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""
WRAPPER = """
import json, resource, subprocess, sys
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if run.returncode:
    sys.exit(run.stderr[-2000:])
result = json.loads(run.stdout.splitlines()[-1])
result["children_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
print(json.dumps(result))
"""
STAND_IN_TESSERACT = """#!/bin/sh
case "$1" in
  --version) echo "tesseract 5.3.0"; exit 0;;
  --list-langs) printf 'List of available languages in "/usr/share/tesseract-ocr/5/tessdata/" (1):\\neng\\n'; exit 0;;
esac
name=$(basename "$1" | tr -c 'a-zA-Z0-9\\n' x)
printf 'level\\tpage_num\\tblock_num\\tpar_num\\tline_num\\tword_num\\tleft\\ttop\\twidth\\theight\\tconf\\ttext\\n' > "$2.tsv"
printf '5\\t1\\t1\\t1\\t1\\t1\\t0\\t0\\t10\\t10\\t95\\tpage %s read by a stand-in\\n' "$name" >> "$2.tsv"
"""

WORDS = ("kettle boiler valve harbour invoice meeting garden ferry lantern budget orchard signal quarterly "
         "report engineer pressure service contract delivery schedule warehouse customer refund battery "
         "survey bridge river council library museum archive printer network backup server outage "
         "holiday travel booking receipt supplier tender audit payroll pension insurance claim roof "
         "window heating ventilation permit planning committee minutes agenda draft review approve").split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    words.insert(rng.randrange(len(words)), str(rng.randint(2, 99_999)))
    return " ".join(words).capitalize() + "."


def write_mbox(path: Path, megabytes: float, *, attachments: bool, seed: int = 1) -> int:
    rng = random.Random(seed)
    target = megabytes * 2**20
    written = number = 0
    with open(path, "wb") as f:
        while written < target:
            number += 1
            m = EmailMessage()
            m["Subject"] = sentence(rng)[:60]
            m["From"], m["To"] = f"Person {rng.randint(1, 300)} <p{number}@example.org>", "team@example.org"
            m["Date"] = f"Tue, {rng.randint(1, 28)} Mar 2026 09:{rng.randint(10, 59)}:00 +0000"
            body = "\n\n".join(" ".join(sentence(rng) for _ in range(rng.randint(2, 5))) for _ in range(3))
            m.set_content(body + "\n")
            if attachments and number % 3 == 0:
                m.add_attachment(rng.randbytes(110_000), maintype="application", subtype="octet-stream",
                                 filename=f"scan{number}.bin")
            data = b"From p@example.org Tue Mar  3 09:00:00 2026\n" + m.as_bytes() + b"\n"
            f.write(data)
            written += len(data)
    return number


def write_scan(path: Path, pages: int) -> None:
    """`pages` letter pages of text at 300 dpi, greyscale JPEG, merged with pypdf."""
    from PIL import ImageDraw
    from pypdf import PdfReader, PdfWriter

    from formats import render_pages

    rng = random.Random(2)
    text = "\n".join(" ".join(sentence(rng) for _ in range(4)) for _ in range(30 * 20))
    bases = render_pages(text)[:20]  # 20 distinct pages; each copy is stamped with its number
    writer = PdfWriter()
    for number in range(1, pages + 1):
        image = bases[(number - 1) % len(bases)].copy()
        ImageDraw.Draw(image).text((180, 60), f"Page {number} of the scanned report", fill=0)
        out = io.BytesIO()
        image.save(out, "PDF", resolution=300, quality=60)
        writer.append(PdfReader(out))
        image.close()
    with open(path, "wb") as f:
        writer.write(f)


def measure(path: Path, work: Path, pythonpath: str, env: dict | None = None) -> dict:
    index = work / f"index-{path.stem}-{abs(hash(pythonpath)) % 1000}"
    shutil.rmtree(index, ignore_errors=True)
    run = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-c", CHILD, str(path), str(index)],
                         capture_output=True, text=True, env={**os.environ, **(env or {}), "PYTHONPATH": pythonpath},
                         cwd=work)  # not a checkout's folder: `python -c` puts the cwd before PYTHONPATH
    shutil.rmtree(index, ignore_errors=True)
    if run.returncode:
        return {"error": run.stderr.strip()[-300:]}
    return json.loads(run.stdout)


def row(kind: str, path: Path, result: dict, code: str, note: str = "") -> None:
    size = path.stat().st_size / 2**20
    print(f"| {kind} | {code} | {size:.0f} | {result.get('passages', '-')} | {result.get('seconds', '-')} | "
          f"{result.get('self_mb', '-')} | {result.get('children_mb', '-')} | {note or result.get('error', '')} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbox-mb", default="50,100,200")
    parser.add_argument("--text-mb", default="5,20")
    parser.add_argument("--pdf-pages", default="100,500")
    parser.add_argument("--ocr-pages", default="2,6")
    parser.add_argument("--old", help="an older kb checkout to compare with (its PYTHONPATH)")
    parser.add_argument("--work", help="folder for the generated files (default: a temporary one)")
    args = parser.parse_args()
    numbers = lambda text: [float(x) for x in text.split(",") if x.strip()]  # noqa: E731
    work = Path(args.work or tempfile.mkdtemp(prefix="kb-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    codes = [("this", str(ROOT))] + ([("old", args.old)] if args.old else [])
    print(line())
    print("| file | kb | MB | passages | seconds | peak RSS of kb, MB | peak RSS of its children, MB | note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |", flush=True)
    empty = work / "empty.mbox"
    write_mbox(empty, 0.001, attachments=False)
    for code, path in codes:
        row("mbox, 1 message (baseline)", empty, measure(empty, work, path), code)
    for megabytes in numbers(args.mbox_mb):
        mbox = work / f"mail-{megabytes:g}mb.mbox"
        if not mbox.exists():
            messages = write_mbox(mbox, megabytes, attachments=True)
            print(f"(wrote {mbox.name}: {messages} messages)", flush=True)
        for code, path in codes:
            row("mbox, 1 in 3 with a 150 KB attachment", mbox, measure(mbox, work, path), code)
    for megabytes in numbers(args.text_mb):
        mbox = work / f"text-{megabytes:g}mb.mbox"
        if not mbox.exists():
            write_mbox(mbox, megabytes, attachments=False)
        for code, path in codes:
            row("mbox, text messages only", mbox, measure(mbox, work, path), code)
    stand_in = work / "tesseract"
    stand_in.write_text(STAND_IN_TESSERACT)
    stand_in.chmod(0o755)
    for pages in [int(p) for p in numbers(args.pdf_pages)]:
        pdf = work / f"scan-{pages}.pdf"
        if not pdf.exists():
            write_scan(pdf, pages)
        for code, path in codes:
            row(f"scanned PDF, {pages} pages, stand-in Tesseract", pdf,
                measure(pdf, work, path, {"TESSERACT_CMD": str(stand_in)}), code)
    for pages in [int(p) for p in numbers(args.ocr_pages)]:
        pdf = work / f"ocr-{pages}.pdf"
        if not pdf.exists():
            write_scan(pdf, pages)
        for code, path in codes:
            row(f"scanned PDF, {pages} pages, real Tesseract", pdf, measure(pdf, work, path), code)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
