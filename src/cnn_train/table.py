"""Plain-text tables for the terminal: the layer table, a sweep's jobs, the GPU check."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]], separator: str = "  ") -> list[str]:
    """The rows (the first is the header) as lines with left-aligned, padded columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        separator.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
