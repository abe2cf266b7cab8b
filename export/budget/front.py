"""The accuracy / speed front of a ``--max-drop`` run: every measured candidate (PTQ and QAT) timed
side by side, the Pareto-optimal ones marked, and the front drawn as a PNG next to the report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from export.budget.search import TIME_TIE


def cpu_ms(c: Any) -> float | None:
    """The candidate's CPU time per tile: the side-by-side timing, else the one of its evaluation run."""
    return c.timed_ms if c.timed_ms is not None else c.ms_per_tile


def time_all(cands: Sequence[Any], timer: Callable[[list[Path]], list[float]]) -> None:
    """Time every measured candidate in one interleaved run (same file once) and set ``timed_ms``."""
    files: dict[Path, list[Any]] = {}
    for c in cands:
        if c.path is not None and c.drop is not None:
            files.setdefault(Path(c.path), []).append(c)
    if not files:
        return
    for path, ms in zip(files, timer(list(files))):
        for c in files[path]:
            c.timed_ms = ms


def mark_front(cands: Sequence[Any], tie: float = TIME_TIE) -> list[Any]:
    """Set ``pareto`` on the candidates no other beats on drop and CPU time; returns them by time.
    Times within ``tie`` (3 %, as the winner's choice) count as equal: files of the same layout differ
    by timing noise only, so a smaller drop alone decides between them."""
    measured = [c for c in cands if c.drop is not None and cpu_ms(c) is not None and not c.note.startswith("numerical")]
    for c in cands:
        c.pareto = False

    def beats(d: Any, c: Any) -> bool:
        no_slower, faster = cpu_ms(d) <= cpu_ms(c) * (1 + tie), cpu_ms(d) * (1 + tie) < cpu_ms(c)
        return no_slower and d.drop <= c.drop and (d.drop < c.drop or faster)

    for c in measured:
        c.pareto = not any(d is not c and beats(d, c) for d in measured)
    return sorted((c for c in measured if c.pareto), key=cpu_ms)


def draw_front(cands: Sequence[Any], budget: float, chosen: Any, path: Path, title: str) -> Path:
    """Drop (mIoU points) against CPU ms per tile: PTQ circles, QAT squares, the front joined, the
    chosen candidate ringed, the budget as a dashed line. Written atomically as PNG."""
    import cv2

    from runtime.fileio import write_png

    pts = [c for c in cands if c.drop is not None and cpu_ms(c) is not None]
    w, h, left, right, top, bottom = 900, 580, 90, 30, 50, 90
    img = np.full((h, w, 3), 255, np.uint8)
    xs = np.array([cpu_ms(c) for c in pts] or [0.0, 1.0])
    ys = np.array([c.drop for c in pts] + [budget, 0.0])
    x0, x1 = _span(xs)
    y0, y1 = _span(ys)

    def at(x: float, y: float) -> tuple[int, int]:
        px = left + (x - x0) / (x1 - x0) * (w - left - right)
        py = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
        return int(round(px)), int(round(py))

    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (170, 170, 170)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    for i in range(5):
        gx, gy = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        px, py = at(gx, gy)
        cv2.line(img, (px, top), (px, h - bottom), (235, 235, 235), 1)
        cv2.line(img, (left, py), (w - right, py), (235, 235, 235), 1)
        cv2.putText(img, f"{gx:.1f}", (px - 18, h - bottom + 20), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(img, f"{gy:+.2f}", (8, py + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, "CPU ms per tile (ONNX Runtime, this machine)", (left + 180, h - 36), font, 0.5, black, 1,
                cv2.LINE_AA)
    cv2.putText(img, "drop (mIoU points)", (8, top - 12), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left + 150, top - 18), font, 0.55, black, 1, cv2.LINE_AA)
    by = at(x0, budget)[1]
    for x in range(left, w - right, 14):
        cv2.line(img, (x, by), (min(x + 7, w - right), by), (0, 0, 200), 1)
    cv2.putText(img, f"budget {budget:g}", (w - right - 110, by - 6), font, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    front = sorted((c for c in pts if c.pareto), key=cpu_ms)
    for a, b in zip(front, front[1:]):
        cv2.line(img, at(cpu_ms(a), a.drop), at(cpu_ms(b), b.drop), (60, 160, 60), 2, cv2.LINE_AA)
    for c in pts:
        p = at(cpu_ms(c), c.drop)
        colour = (0, 140, 0) if c.passed else (0, 0, 210)
        if c.kind == "QAT":
            cv2.rectangle(img, (p[0] - 6, p[1] - 6), (p[0] + 6, p[1] + 6), colour, -1)
        else:
            cv2.circle(img, p, 6, colour, -1, cv2.LINE_AA)
        if c is chosen:
            cv2.circle(img, p, 12, black, 2, cv2.LINE_AA)
        if c.pareto or c is chosen:
            cv2.putText(img, c.label, (p[0] + 10, p[1] - 8), font, 0.4, black, 1, cv2.LINE_AA)
    legend = "circle: PTQ  square: QAT  green: within budget  red: over  ring: chosen  line: front"
    cv2.putText(img, legend, (left, h - 8), font, 0.42, grey, 1, cv2.LINE_AA)
    write_png(path, img[:, :, ::-1])
    return path


def _span(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = (hi - lo) * 0.08 or max(abs(hi), 1.0) * 0.1
    return lo - pad, hi + pad
