"""Helpers the structured-text readers (reST, AsciiDoc, Org, LaTeX) share.

Each of those readers labels every line of the file with the stretch it belongs to (a
section, an API entry, or None for a heading line), then turns runs of equal labels into
the Section's outline; markup is collected as spans and merged.
"""

from __future__ import annotations

from ..sections import Stretch


def line_starts(lines: list[str]) -> list[int]:
    """Char offset of each line's start, plus one past the end (for text.split("\\n"))."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    return starts


def stretches(labels: list, starts: list[int], size: int) -> list[Stretch]:
    """Runs of lines with the same label -> (start, end, trail); a label is (kind, trail, id)
    or None (a heading line, in no stretch). Two runs with equal trails stay apart when their
    ids differ: two entries documented under the same name are still two entries."""
    out: list[Stretch] = []
    current, begin = None, 0
    for i, label in enumerate(labels + [None]):
        if label != current:
            if current is not None:
                out.append((begin, min(starts[i], size), current[1]))
            current, begin = label, min(starts[i], size)
    return [s for s in out if s[0] < s[1]]


def merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint spans covering the same characters."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def blank(lines: list[str], i: int) -> bool:
    return i < 0 or i >= len(lines) or not lines[i].strip()
