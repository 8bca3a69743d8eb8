"""HTML: the page's main text, without navigation, scripts or boilerplate.

selectolax (the lexbor engine) parses real-world HTML fast and forgivingly, with no
dependencies; it is maintained and an order of magnitude faster than BeautifulSoup,
which matters on documentation trees of thousands of pages. Headings become Markdown
headings, so passages carry the heading trail they sit under; the page <title> is
the section title. Sphinx API entries (`<dl class="py function"><dt id=...>`) become
headings too, under their section's, so each documented object is its own stretch,
headed by its qualified signature; after an entry's <dl> the section's heading is
repeated, so the prose that follows is not taken for the entry's. Line numbers and
offsets of HTML citations refer to this extracted text, not to the markup.

Bounded work: lexbor's tree building costs about (elements x nesting depth), so 400,000
nested <div>s (4.4 MB) would take it twenty minutes. Before parsing, a scan of the tags
estimates the deepest nesting the parser would build (end tags close what they match,
void elements and elements whose end tag is optional do not nest) and a file deeper
than MAX_DEPTH is refused ("HTML nested deeper than 512 levels"), so `kb index` skips
it with that reason and goes on. 512 is the depth Chromium's parser stops nesting at;
real pages stay far below it (documentation sites: 10-40).
"""

from __future__ import annotations

import re

from ..sections import Section
from .encoding import decode_text

# Never content: code, chrome around the content, and hidden or interactive parts.
_DROP = ("script, style, noscript, template, svg, canvas, iframe, object, form, button, select,"
         " nav, header, footer, aside, [role=navigation], [role=banner], [role=contentinfo],"
         " [hidden], a.headerlink")
_MAIN = ("main", "article", "[role=main]")
_BLOCKS = ("p, div, section, li, dt, dd, tr, blockquote, figure, figcaption, caption, table,"
           " ul, ol, dl, br, hr, address, details, summary")
# Private-use markers survive selectolax's text() and never occur in extracted text.
_BREAK, _PRE = "\ue000", "\ue001"
_SPACES = re.compile(r"\s+")
# A Sphinx object description: any domain's (py, c, cpp, js, std) and Sphinx's older markup.
_ENTRY_DT = ("dt.sig-object, dl.function > dt[id], dl.class > dt[id], dl.method > dt[id],"
             " dl.attribute > dt[id], dl.data > dt[id], dl.exception > dt[id], dl.describe > dt[id],"
             " dl.option > dt[id], dl.classmethod > dt[id], dl.staticmethod > dt[id], dl.decorator > dt[id]")


MAX_DEPTH = 512
_TAG = re.compile(r"<(/?)([a-z][^\s/>]*)(?:[^>]*?(/)>)?")
# Comments and the content of raw-text elements hold no tags, whatever they look like.
_NOT_TAGS = re.compile(r"<!--.*?(?:-->|\Z)|<(script|style|textarea|title|xmp|iframe|noembed|noframes)\b.*?(?:</\1|\Z)",
                       re.S)
_VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
# Closed by their next sibling or their parent's end: <li><li> or <p><p> do not nest.
_OPTIONAL_END = frozenset("html head body p li dt dd tr td th thead tbody tfoot colgroup caption option optgroup"
                          " rb rt rtc rp".split())


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep the parser's tree would nest (an estimate that follows the HTML rules that
    matter: stray end tags are ignored, an end tag closes everything opened inside its
    element, `/>` closes only inside SVG or MathML). Stops counting past limit."""
    tags = text.count("<")
    if tags <= limit:  # fewer tags than the limit: none can be deeper (nothing to scan)
        return tags
    stack: list[str] = []
    open_count: dict[str, int] = {}
    foreign = 0  # open <svg>/<math>: there `<x/>` is an element that closes itself
    deepest = 0
    # The regular expressions do the reading (in C); the loop sees one match per tag.
    for match in _TAG.finditer(_NOT_TAGS.sub(" ", text.lower())):
        closing, name, self_closing = match.groups()
        if closing:
            if open_count.get(name):
                while stack:
                    top = stack.pop()
                    open_count[top] -= 1
                    if top == "svg" or top == "math":
                        foreign -= 1
                    if top == name:
                        break
            continue
        if name in _VOID or name in _OPTIONAL_END or (foreign and self_closing):
            continue
        stack.append(name)
        open_count[name] = open_count.get(name, 0) + 1
        if name == "svg" or name == "math":
            foreign += 1
        if len(stack) > deepest:
            deepest = len(stack)
            if deepest > limit:
                return deepest
    return deepest


def read_html(raw: bytes, path: str) -> list[Section]:
    from selectolax.lexbor import LexborHTMLParser

    text = decode_text(raw).replace(_BREAK, "").replace(_PRE, "")
    if nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"HTML nested deeper than {MAX_DEPTH} levels (the parser's work grows with the depth)")
    tree = LexborHTMLParser(text)
    title_node = tree.css_first("title")
    title = _SPACES.sub(" ", title_node.text()).strip() if title_node else ""
    root = tree.body or tree.root
    if root is None:
        return []
    for node in root.css(_DROP):
        node.decompose()
    root = next((n for n in (root.css_first(sel) for sel in _MAIN) if n is not None), root)
    code_blocks = []
    for pre in root.css("pre"):
        # Kept verbatim, indented like a Markdown code block so "# comment" lines are
        # not taken for headings.
        lines = pre.text(deep=True).strip("\n").split("\n")
        code_blocks.append("\n".join("    " + line.rstrip() for line in lines))
        pre.replace_with(f"{_BREAK}{_PRE}{len(code_blocks) - 1}{_PRE}{_BREAK}")
    _entries_as_headings(root)
    for level in range(1, 7):
        for heading in root.css(f"h{level}"):
            words = _SPACES.sub(" ", heading.text(deep=True).replace("¶", "")).strip()
            heading.replace_with(_BREAK + "#" * level + " " + words + _BREAK if words else _BREAK)
    for node in root.css(_BLOCKS):
        node.insert_before(_BREAK)
        node.insert_after(_BREAK)
    for cell in root.css("td, th"):
        cell.insert_after(" ")
    paragraphs = (_SPACES.sub(" ", p).strip() for p in root.text(deep=True).split(_BREAK))
    text = "\n\n".join(p for p in paragraphs if p)
    text = re.sub(f"{_PRE}(\\d+){_PRE}", lambda m: code_blocks[int(m.group(1))], text)
    return [Section(text, title=title, markdown=True)]


def _entries_as_headings(root) -> None:
    entry_dls, seen = [], set()
    for dt in root.css(_ENTRY_DT):
        sections, entries, node = [], 0, dt.parent
        while node is not None:
            classes = (node.attributes.get("class") or "").split()
            if node.tag == "section" or (node.tag == "div" and "section" in classes):
                sections.append(node)
            elif node.tag == "dl" and _is_entry(node):
                entries += 1
            node = node.parent
        words = _SPACES.sub(" ", dt.text(deep=True).replace("¶", "")).strip()
        if not words:
            continue
        level = min(6, len(sections) + max(entries, 1))
        if entries == 1 and dt.parent is not None and dt.parent.mem_id not in seen:
            seen.add(dt.parent.mem_id)
            entry_dls.append((dt.parent, sections[0] if sections else None))
        dt.replace_with(_BREAK + "#" * level + " " + words + _BREAK)
    for dl, section in entry_dls:
        after = dl.next
        while after is not None and after.tag == "-text" and not after.text().strip():
            after = after.next
        if section is None or (after is not None and after.tag == "dl" and _is_entry(after)):
            continue
        heading = next((h for h in section.iter() if h.tag in ("h1", "h2", "h3", "h4", "h5", "h6")), None)
        words = _SPACES.sub(" ", heading.text(deep=True).replace("¶", "")).strip() if heading else ""
        if words:
            level = int(heading.tag[1])
            dl.insert_after(_BREAK + "#" * level + " " + words + _BREAK)


def _is_entry(dl) -> bool:
    classes = set((dl.attributes.get("class") or "").split())
    return bool(classes & {"py", "c", "cpp", "js", "std", "describe", "function", "class", "method", "attribute",
                           "data", "exception", "option", "classmethod", "staticmethod", "decorator"})
