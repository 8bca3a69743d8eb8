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
"""

from __future__ import annotations

import re

from ..sections import Section
from .text import decode_text

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


def read_html(raw: bytes, path: str) -> list[Section]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(raw).replace(_BREAK, "").replace(_PRE, ""))
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
