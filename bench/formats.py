"""Reading throughput per format, and OCR speed and quality.

For each format kb reads, real files are made from the same text (paragraphs of the
.txt/.md files of DATA, default ../shared/data/scale-docs, else corpus/) with the real
writing libraries (python-docx, python-pptx, openpyxl, odfpy, the stdlib for CSV,
EPUB, RTF and mail); PDFs are DATA's own, and code is kb's own source. Each file is read
and chunked exactly as `kb index` does (kb.ingest.documents.read_document, then
kb.ingest.passages.make_passages), without embedding; the figures are MB of file per
second and passages per second, one pass, all formats in the same run.

OCR: pages of the shipped article rendered at 200 and 300 dpi (one of each rotated
2 degrees with speckle noise), read by Tesseract: pages per second, and word recall of
the OCR text against the rendered text. Then the article is indexed as text and as a
scanned PDF (its pages rendered at 300 dpi), and --questions of its sentences (first 12
words) are asked of each: hit@3 counts a question found when one of the top 3 passages
holds 80% of its words.

    .venv/bin/python bench/formats.py [DATA] [--megabytes 2] [--ocr-pages 2] [--questions 20] [--only-ocr]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import mailbox
import random
import re
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from machine import line as machine_line  # noqa: E402
from tests.office_files import epub_file, ods_file, odp_file, odt_file, pptx_file, rtf_file, xlsx_file  # noqa: E402


def paragraphs(data: Path, megabytes: float) -> list[str]:
    files = sorted(p for p in data.rglob("*") if p.suffix in (".txt", ".md")) if data.exists() else []
    files = files or [ROOT / "corpus" / "junior-doctors-strike.txt"]
    out, size = [], 0
    for path in files:
        for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            para = " ".join(para.split())
            if 40 < len(para) < 2000 and "\x0c" not in para:
                out.append(para)
                size += len(para)
        if size > megabytes * 1e6:
            break
    return out


def groups(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def make_files(paras: list[str], data: Path) -> dict[str, list[tuple[str, bytes]]]:
    import docx

    files: dict[str, list[tuple[str, bytes]]] = {}
    chunks = groups(paras, 40)  # a file per 40 paragraphs
    files["txt"] = [(f"{n}.txt", "\n\n".join(c).encode()) for n, c in enumerate(chunks)]
    files["md"] = [(f"{n}.md", "\n\n".join(f"## Part {i}\n\n{p}" for i, p in enumerate(c)).encode())
                   for n, c in enumerate(chunks)]
    files["html"] = [(f"{n}.html", ("<html><head><title>Doc</title></head><body><main>" + "".join(
        f"<h2>Part {i}</h2><p>{p}</p>" for i, p in enumerate(c)) + "</main></body></html>").encode())
        for n, c in enumerate(chunks)]

    def docx_bytes(c):
        d = docx.Document()
        for i, p in enumerate(c):
            d.add_heading(f"Part {i}", 2)
            d.add_paragraph(p)
        out = io.BytesIO()
        d.save(out)
        return out.getvalue()

    files["docx"] = [(f"{n}.docx", docx_bytes(c)) for n, c in enumerate(chunks)]
    files["odt"] = [(f"{n}.odt", odt_file([x for i, p in enumerate(c) for x in ((2, f"Part {i}"), (0, p))]))
                    for n, c in enumerate(chunks)]
    files["rtf"] = [(f"{n}.rtf", rtf_file([p.encode("ascii", "replace").decode() for p in c]))
                    for n, c in enumerate(chunks)]
    files["epub"] = [(f"{n}.epub", epub_file("Book", [(f"Chapter {i}", " ".join(g)) for i, g in enumerate(groups(c, 5))]))
                     for n, c in enumerate(chunks)]
    slides = [[(f"Slide {i}", p[:600], p[600:900]) for i, p in enumerate(c)] for c in chunks]
    files["pptx"] = [(f"{n}.pptx", pptx_file(s)) for n, s in enumerate(slides)]
    files["odp"] = [(f"{n}.odp", odp_file(s)) for n, s in enumerate(slides)]
    rows = [[["id", "topic", "text"]] + [[str(i), p.split(" ")[0], p[:300]] for i, p in enumerate(c)] for c in chunks]
    files["csv"] = []
    for n, r in enumerate(rows):
        out = io.StringIO()
        csv.writer(out).writerows(r)
        files["csv"].append((f"{n}.csv", out.getvalue().encode()))
    files["xlsx"] = [(f"{n}.xlsx", xlsx_file({"Sheet": r})) for n, r in enumerate(rows)]
    files["ods"] = [(f"{n}.ods", ods_file({"Sheet": r})) for n, r in enumerate(rows)]
    messages = []
    for i, p in enumerate(paras):
        m = EmailMessage()
        m["Subject"], m["From"], m["Date"] = f"Note {i}", "a@example.org", "Tue, 3 Mar 2026 09:00:00 +0000"
        m.set_content(p)
        messages.append(m)
    files["eml"] = [(f"{n}.eml", bytes(m)) for n, m in enumerate(messages[:len(chunks) * 4])]
    with tempfile.TemporaryDirectory() as tmp:
        box = mailbox.mbox(Path(tmp) / "box.mbox")
        for m in messages:
            box.add(m)
        box.flush()
        files["mbox"] = [("box.mbox", (Path(tmp) / "box.mbox").read_bytes())]
    files["code"] = [(p.name, p.read_bytes()) for p in sorted((ROOT / "kb").rglob("*.py"))]
    pdfs = sorted(data.rglob("*.pdf"))[:3] if data.exists() else []
    files["pdf"] = [(p.name, p.read_bytes()) for p in pdfs]
    return files


def throughput(files: dict[str, list[tuple[str, bytes]]]) -> list[dict]:
    from kb.embed.model import TokenCounter, packaged_model
    from kb.ingest.documents import SourceFile, read_document
    from kb.ingest.passages import ChunkSettings, make_passages

    counter = TokenCounter(packaged_model().tokenizer_file)
    settings = ChunkSettings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, items in files.items():
            if not items:
                continue
            paths = []
            for name, raw in items:
                path = Path(tmp) / kind / name
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(raw)
                st = path.stat()
                paths.append(SourceFile(str(path), str(path), st.st_size, st.st_mtime_ns, kind))
            size = sum(f.size for f in paths)
            passages = 0
            started = time.perf_counter()
            for f in paths:
                passages += len(make_passages(read_document(f), counter, settings))
            seconds = time.perf_counter() - started
            rows.append({"format": kind, "files": len(paths), "MB": round(size / 1e6, 2), "seconds": round(seconds, 2),
                         "MB/s": round(size / 1e6 / seconds, 2), "passages": passages,
                         "passages/s": round(passages / seconds)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def ocr_figures(pages: int) -> list[dict]:
    from PIL import Image, ImageDraw, ImageFont

    from kb.ingest.readers import ocr

    why = ocr.missing()
    if why:
        print(f"OCR: not measured ({why})")
        return []
    words = (ROOT / "corpus" / "junior-doctors-strike.txt").read_text().split()
    rng = random.Random(0)
    rows = []
    for dpi in (200, 300):
        for noisy in (False, True):
            recall, seconds = [], 0.0
            for page in range(pages):
                lines, at = [], page * 300
                while len(lines) < 30 and at < len(words):
                    lines.append(" ".join(words[at:at + 10]))
                    at += 10
                scale = dpi / 72
                image = Image.new("L", (int(612 * scale), int(792 * scale)), 255)
                draw = ImageDraw.Draw(image)
                font = ImageFont.load_default(size=int(10 * scale))  # 10 pt text
                for n, text in enumerate(lines):
                    draw.text((int(60 * scale), int((60 + n * 15) * scale)), text, font=font, fill=0)
                if noisy:
                    image = image.rotate(2, fillcolor=255, expand=True)
                    pixels = image.load()
                    for _ in range(image.width * image.height // 200):
                        pixels[rng.randrange(image.width), rng.randrange(image.height)] = rng.choice((0, 128))
                started = time.perf_counter()
                text, _ = ocr.read_image_text(image)
                seconds += time.perf_counter() - started
                source = [w.strip(".,;:'\"()").lower() for w in " ".join(lines).split()]
                found = set(w.strip(".,;:'\"()").lower() for w in text.split())
                recall.append(sum(w in found for w in source) / len(source))
            rows.append({"dpi": dpi, "rotated 2 deg + noise": noisy, "pages": pages,
                         "pages/s": round(pages / seconds, 3), "word recall": round(sum(recall) / len(recall), 3)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def render_pages(text: str, dpi: int = 300, lines_per_page: int = 45, width: int = 85) -> list:
    """The text typeset as 10 pt lines on letter pages at dpi, as a scanner would see it."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    lines = [line for para in text.split("\n") for line in (textwrap.wrap(para, width) or [""])]
    scale = dpi / 72
    font = ImageFont.load_default(size=int(10 * scale))
    pages = []
    for at in range(0, len(lines), lines_per_page):
        image = Image.new("L", (int(612 * scale), int(792 * scale)), 255)
        draw = ImageDraw.Draw(image)
        for n, line in enumerate(lines[at:at + lines_per_page]):
            draw.text((int(60 * scale), int((50 + n * 15) * scale)), line, font=font, fill=0)
        pages.append(image)
    return pages


def scanned_retrieval(questions: int) -> dict:
    """hit@3 of sentences of the article asked of its text and of a scan of it (300 dpi)."""
    from kb import KnowledgeBase
    from kb.ingest.readers import ocr

    if ocr.missing():
        return {}
    text = (ROOT / "corpus" / "junior-doctors-strike.txt").read_text()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) >= 10]
    step = max(1, len(sentences) // questions)
    asked = [" ".join(s.split()[:12]) for s in sentences[::step][:questions]]

    def words(x: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", x.lower())

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "text").mkdir()
        (tmp / "scan").mkdir()
        (tmp / "text" / "article.txt").write_text(text)
        pages = render_pages(text)
        pages[0].save(tmp / "scan" / "article.pdf", "PDF", resolution=300, save_all=True, append_images=pages[1:])
        for kind in ("text", "scan"):
            kb = KnowledgeBase(tmp / f"index-{kind}")
            started = time.perf_counter()
            report = kb.index([tmp / kind])
            seconds = time.perf_counter() - started
            hits = 0
            for question in asked:
                wanted = words(question)
                top = kb.ask(question, k=3)
                found = [set(words(h.text)) for h in top]
                hits += any(sum(w in f for w in wanted) >= 0.8 * len(wanted) for f in found)
            result[kind] = {"pages": len(pages) if kind == "scan" else None, "passages": report.passages,
                            "index seconds": round(seconds, 1), "hit@3": round(hits / len(asked), 3)}
            print(json.dumps({kind: result[kind], "questions": len(asked)}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "scale-docs"))
    parser.add_argument("--megabytes", type=float, default=2.0, help="text to build the files from")
    parser.add_argument("--ocr-pages", type=int, default=2, help="pages per OCR setting")
    parser.add_argument("--questions", type=int, default=20, help="article sentences asked of text and scan")
    parser.add_argument("--only-ocr", action="store_true", help="skip the per-format throughput")
    args = parser.parse_args()
    print(machine_line())
    print("shared, busy machine: compare formats within this run, not with other runs")
    data = Path(args.data)
    if not args.only_ocr:
        paras = paragraphs(data, args.megabytes)
        print(f"{len(paras)} paragraphs, {sum(map(len, paras)) / 1e6:.1f} MB of text from {data}")
        throughput(make_files(paras, data))
    ocr_figures(args.ocr_pages)
    scanned_retrieval(args.questions)


if __name__ == "__main__":
    main()
