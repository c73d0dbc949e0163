"""The one markdown table renderer of both pages (docs/benchmarks.md and device_check.md)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

RULES = {"l": ":--", "r": "--:", "c": ":-:", "-": "---"}  # a column's rule by its alignment


def markdown_table(header: Sequence, rows: Iterable[Sequence], align: str | None = None) -> list[str]:
    """A markdown table as lines: the header, the rule, a line a row; every cell through str().

    `align`: one letter a column, l(eft), r(ight), c(enter) or - (the renderer's default); None: all default.
    Cells are written as given: a cell that may hold "|" is escaped by its caller.
    """
    if align is not None and (len(align) != len(header) or set(align) - set(RULES)):
        raise ValueError(f"align {align!r}: one of {''.join(RULES)} for each of {len(header)} columns")
    rule = "|" + "".join(RULES[a] + "|" for a in align or "-" * len(header))
    return [_line(header), rule, *map(_line, rows)]


def titled_table(title: str, header: Sequence, rows: Iterable[Sequence], level: int = 3,
                 align: str | None = None) -> list[str]:
    """markdown_table under a heading of `level`, a blank line before each."""
    return ["", f"{'#' * level} {title}", "", *markdown_table(header, rows, align)]


def _line(cells: Sequence) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"
