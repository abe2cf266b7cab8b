"""One table printer: fixed-width columns for the terminal, or a Markdown pipe table.

    print(format_table(rows, header=["backend", "ms/tile"], align="lr"))

    backend      ms/tile
    -----------  -------
    onnxruntime     12.5

Cells are strings (format numbers before). ``align`` holds one letter per column, ``l`` (left) or
``r`` (right); where it is shorter than the row its last letter holds for the remaining columns
("lr": the first column left, all others right). A row may be shorter than the header (a note such as
"skipped: no GPU" in the second column). Every column is as wide as its widest cell, the gap between
columns is two spaces, and the header is underlined with dashes (``rule=False``: not). Markdown
(``markdown=True``) keeps the cells as they are and writes ``---`` / ``---:`` in the alignment row.
"""
from __future__ import annotations

from typing import Sequence

GAP = "  "


def _aligns(align: str, columns: int) -> str:
    if not align or set(align) - {"l", "r"}:
        raise ValueError(f"align takes the letters l and r, got {align!r}")
    return (align + align[-1] * columns)[:columns]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, align: str = "l",
                 rule: bool = True, markdown: bool = False) -> str:
    """The table of ``rows`` (under ``header`` when given) as one string, lines joined by newlines."""
    head = [list(header)] if header is not None else []
    body = [list(r) for r in rows]
    columns = max((len(r) for r in head + body), default=0)
    sides = _aligns(align, columns)
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in head]
        if head:
            lines.append("|" + "".join("---:|" if a == "r" else "---|" for a in sides[:len(head[0])]))
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in head + body if i < len(r)) for i in range(columns)]

    def line(cells: Sequence[str]) -> str:
        return GAP.join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, sides))

    lines = [line(r) for r in head]
    if head and rule:
        lines.append(GAP.join("-" * w for w in widths))
    return "\n".join(lines + [line(r) for r in body])
