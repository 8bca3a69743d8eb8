"""OCR: text read by Tesseract from images and from PDF pages with no text layer.

Tesseract is the maintained open-source OCR engine, packaged by Debian
(`apt-get install tesseract-ocr tesseract-ocr-eng`); pytesseract (the `kb[ocr]` extra)
runs its binary, and pypdfium2 (PDFium, the Chrome PDF renderer, in the same extra)
renders a scanned PDF page to pixels. Without them such files and pages are skipped
with the command that would read them, never silently dropped.

Text is read at RENDER_DPI with page segmentation left to Tesseract; words it is unsure
of (confidence under MIN_WORD_CONFIDENCE) are kept, but an image whose words average
under MIN_IMAGE_CONFIDENCE is a photo, not a page, and yields no text. Languages:
English by default, `kb index --ocr-languages eng+deu` (or KB_OCR_LANGUAGES) for more;
a language whose data is not installed is named with its Debian package. TESSERACT_CMD
names another binary (each needs its Debian package,
tesseract-ocr-deu, ...). What was read is cached by the pixels' hash (kb.store.ocr_cache)
while a run has a cache in use, so no page is read twice.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
from contextlib import contextmanager
from functools import lru_cache

from ..sections import Section, one_after_another
from .extras import require

RENDER_DPI = 300
MIN_IMAGE_CONFIDENCE = 45.0
APT = "apt-get install tesseract-ocr tesseract-ocr-eng"
MAX_FRAMES = 500  # pages of a multi-page TIFF
MIN_SIDE = 24  # pixels: icons and spacers are not read
_cache = None  # the run's kb.store.ocr_cache.OcrCache, while one is in use
_cache_lock = threading.Lock()


@contextmanager
def use_cache(cache):
    """Cache OCR text in `cache` (get/put by key) while the block runs."""
    global _cache
    with _cache_lock:
        previous, _cache = _cache, cache
    try:
        yield cache
    finally:
        with _cache_lock:
            _cache = previous


def languages() -> str:
    return os.environ.get("KB_OCR_LANGUAGES", "").strip() or "eng"


def missing() -> str | None:
    """Why OCR cannot run here (with the command that fixes it), or None when it can."""
    for module in ("pytesseract", "pypdfium2"):
        try:
            require(module)
        except ValueError as e:
            return str(e)
    if not _tesseract_version():
        return f"OCR needs Tesseract: {APT}"
    absent = [name for name in languages().split("+") if name not in _installed_languages()]
    if absent:
        packages = " ".join(f"tesseract-ocr-{name.lower().replace('_', '-')}" for name in absent)
        return f"OCR language {'+'.join(absent)} is not installed: apt-get install {packages}"
    return None


@lru_cache(maxsize=1)
def _installed_languages() -> frozenset:
    try:
        return frozenset(require("pytesseract").get_languages(config=""))
    except Exception:
        return frozenset()


@lru_cache(maxsize=1)
def _tesseract_version() -> str:
    if shutil.which(os.environ.get("TESSERACT_CMD", "tesseract")) is None:
        return ""
    try:
        return str(require("pytesseract").get_tesseract_version())
    except Exception:
        return ""


def read_image_text(image) -> tuple[str, float]:
    """(text, mean word confidence) of a PIL image; lines kept, paragraphs blank-line separated."""
    key = hashlib.blake2b(f"{_tesseract_version()}\0{languages()}\0{image.mode}{image.size}\0".encode()
                          + image.tobytes(), digest_size=16).digest()
    cache = _cache
    if cache is not None and (known := cache.get(key)) is not None:
        confidence, _, text = known.partition("\n")
        return text, float(confidence)
    pytesseract = require("pytesseract")
    pytesseract.pytesseract.tesseract_cmd = os.environ.get("TESSERACT_CMD", "tesseract")
    data = pytesseract.image_to_data(image, lang=languages(), output_type=pytesseract.Output.DICT)
    lines: dict[tuple[int, int, int], list[str]] = {}
    confidences = []
    for word, conf, block, par, line in zip(data["text"], data["conf"], data["block_num"], data["par_num"],
                                            data["line_num"]):
        if word and word.strip():
            lines.setdefault((block, par, line), []).append(word.strip())
            confidences.append(float(conf))
    paragraphs: dict[tuple[int, int], list[str]] = {}
    for (block, par, _), words in lines.items():
        paragraphs.setdefault((block, par), []).append(" ".join(words))
    text = "\n\n".join("\n".join(p) for p in paragraphs.values())
    confidence = sum(confidences) / len(confidences) if confidences else 0.0
    if cache is not None:
        cache.put(key, f"{confidence:.2f}\n{text}")
    return text, confidence


def read_image(raw: bytes, path: str) -> list[Section]:
    """.png/.jpg/.tiff/...: each frame (a TIFF may hold many pages) through OCR."""
    why = missing()
    if why:
        raise ValueError(f"image: {why}")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"unreadable image ({str(e)[:80]})") from None
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"no text: a {image.width}x{image.height} image is too small to hold a line (an icon?)")
    frames = getattr(image, "n_frames", 1)
    sections = []
    for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
        if number > MAX_FRAMES:
            break
        text, confidence = read_image_text(_prepared(frame))
        if text.strip() and confidence >= MIN_IMAGE_CONFIDENCE:
            sections.append(Section(text, page=number if frames > 1 else None, location="OCR"))
    if not sections:
        raise ValueError("no text found by OCR (a photo or a blank image?)")
    return sections if frames > 1 else one_after_another(sections)


def _prepared(frame):
    """Greyscale, and small scans scaled up: Tesseract reads ~300 dpi text best."""
    image = frame.convert("L")
    if max(image.size) < 1000:
        image = image.resize((image.width * 2, image.height * 2))
    return image


def open_pdf(source):
    """A PDFium document of a PDF's bytes or path (a path is read by seeking, not loaded)."""
    return require("pypdfium2").PdfDocument(source)


def read_pdf_page(document, number: int) -> str:
    """OCR text of a 1-based page of a PDFium document, rendered at RENDER_DPI. The page's
    pixels (about 8 MB for a letter page) are let go before this returns."""
    page = document[number - 1]
    try:
        bitmap = page.render(scale=RENDER_DPI / 72, grayscale=True)
        try:
            image = bitmap.to_pil()
            text, _ = read_image_text(image)
            image.close()
            del image
        finally:
            bitmap.close()
    finally:
        page.close()
    return text


def read_pdf_pages(raw: bytes, numbers: list[int]) -> dict[int, str]:
    """OCR text of these 1-based pages of a PDF (pages with none left out)."""
    document = open_pdf(raw)
    try:
        return {number: text for number in numbers if (text := read_pdf_page(document, number)).strip()}
    finally:
        document.close()
