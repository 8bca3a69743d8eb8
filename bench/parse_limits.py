"""What the per-file limits cost and save: lexbor's parse time against nesting depth, the
depth scan against the parse on an ordinary page, and hashing a file before /source
serves it.

    PYTHONPATH=. python bench/parse_limits.py
"""

from __future__ import annotations

import hashlib
import time

from bench.machine import line
from kb.ingest.readers.html import MAX_DEPTH, nesting_depth, read_html


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def ordinary_page(size: int) -> str:
    """A documentation page: nav, headings, paragraphs, lists, code, a table; depth ~12."""
    section = ("<section><h2>Options</h2><div class='body'><p>Some <b>bold</b> and <a href='#x'>linked</a> text, "
               "with <code>code</code>.</p><ul><li>one<li>two<li><span>three</span></ul><pre><code>x = 1\n"
               "</code></pre><table><tr><td>a<td>b<tr><td>c<td>d</table></div></section>")
    head = "<html><head><title>t</title><script>var a='<div>';</script></head><body><nav><ul><li>x</ul></nav><main>"
    return head + section * (size // len(section)) + "</main></body></html>"


def main() -> None:
    from selectolax.lexbor import LexborHTMLParser

    print(line())
    print("lexbor parse of ~4.4 MB of nested <div>s, by depth (the cost is elements x depth):")
    base = None
    for depth in (16, 128, 512, 2000):
        unit = "<div>" * depth + "x" + "</div>" * depth
        html = "<html><body>" + unit * (4_400_000 // len(unit)) + "</body></html>"
        seconds = best(lambda: LexborHTMLParser(html), 1)
        base = base or seconds
        print(f"  depth {depth:>5}: {seconds:6.2f} s ({seconds / base:4.1f}x depth 16)")
    for depth in (5_000, 10_000, 20_000):
        html = "<html><body>" + "<div>" * depth + "x" + "</div>" * depth + "</body></html>"
        seconds = best(lambda: LexborHTMLParser(html), 1)
        print(f"  one chain of {depth:>6} nested: {seconds:6.2f} s")
    bomb = "<html><body>" + "<div>" * 400_000 + "x" + "</div>" * 400_000 + "</body></html>"
    refused = best(lambda: nesting_depth(bomb) > MAX_DEPTH)
    print(f"  400,000 nested ({len(bomb) / 1e6:.1f} MB): refused by the scan in {refused * 1000:.0f} ms")

    print("an ordinary page: the depth scan against read_html (which parses and extracts):")
    for size in (100_000, 2_000_000):
        page = ordinary_page(size)
        scan = best(lambda: nesting_depth(page))
        read = best(lambda: read_html(page.encode(), "page.html"))
        print(f"  {len(page) / 1e6:.1f} MB, depth {nesting_depth(page)}: "
              f"scan {scan * 1000:.0f} ms, read_html {read * 1000:.0f} ms (scan = {scan / read:.0%} of it)")

    data = b"x" * (20 << 20)
    seconds = best(lambda: hashlib.sha256(data).hexdigest())
    print(f"sha256 before /source serves a file: {len(data) / seconds / 1e6:.0f} MB/s "
          f"({seconds * 1000:.0f} ms for a file at the 20 MB cap)")


if __name__ == "__main__":
    main()
