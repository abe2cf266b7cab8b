"""Colour label maps and draw overlays, legends and the FPS/latency HUD (numpy + OpenCV).

Everything works in RGB uint8 (the toolkit's image convention); convert to BGR only when handing a
frame to OpenCV's window or video writer. ``colorize``/``overlay`` return new arrays;
``draw_legend``/``draw_hud`` draw in place like OpenCV's own drawing calls and return the image.
Label ids that are out of range for the palette (the ignore index 255 included) are black in
``colorize`` and leave the photo untouched in ``overlay``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from runtime.errors import ToolkitError

_LUT_SIZE = 256


def palette_lut(palette: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A 256-entry RGB lookup table and a matching "valid id" mask for ``palette``."""
    pal = np.asarray(palette, dtype=np.int64)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) == 0:
        raise ToolkitError("bad palette", expected="a non-empty list of (r, g, b) triples",
                           found=f"shape {pal.shape}")
    if pal.min() < 0 or pal.max() > 255:
        raise ToolkitError("bad palette", expected="colour values 0..255",
                           found=f"{int(pal.min())}..{int(pal.max())}")
    n = min(len(pal), _LUT_SIZE)
    lut = np.zeros((_LUT_SIZE, 3), dtype=np.uint8)
    lut[:n] = pal[:n]
    valid = np.zeros(_LUT_SIZE, dtype=bool)
    valid[:n] = True
    return lut, valid


def _label_index(labels: np.ndarray, n_colours: int) -> np.ndarray:
    """Labels as an index into a 256-entry table; anything outside 0..n-1 maps to 255 (invalid)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ToolkitError("a label map must be 2-D", expected="(H, W)", found=str(labels.shape))
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype.kind not in "iu":
        raise ToolkitError("label maps hold integer class ids", found=str(labels.dtype))
    out_of_range = (labels < 0) | (labels >= n_colours)
    idx = np.where(out_of_range, _LUT_SIZE - 1, labels)
    return idx.astype(np.uint8)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB; ignore / out-of-range ids are black."""
    lut, valid = palette_lut(palette)
    n = int(valid.sum())
    return lut[_label_index(labels, n)]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]],
            alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised labels over the photo: ``(1 - alpha) * image + alpha * colour``.

    ``alpha`` 0 returns the photo, 1 the pure colour map. Pixels with an ignore / out-of-range id
    keep the photo unchanged. A label map of another size is resized (nearest) to the image.
    """
    import cv2

    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ToolkitError("overlay needs an RGB uint8 image", expected="(H, W, 3) uint8",
                           found=f"{image.shape} {image.dtype}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ToolkitError(f"bad overlay opacity {alpha}", expected="0 <= alpha <= 1")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape != image.shape[:2]:
        labels = cv2.resize(labels.astype(np.uint8) if labels.dtype != np.uint8 else labels,
                            (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    lut, valid = palette_lut(palette)
    idx = _label_index(labels, int(valid.sum()))
    colour = lut[idx]
    out = cv2.addWeighted(image, 1.0 - float(alpha), colour, float(alpha), 0.0)
    invalid = ~valid[idx]
    if invalid.any():
        out[invalid] = image[invalid]
    return out


def _font_scale(image: np.ndarray) -> tuple[float, int, int]:
    """Font scale, thickness and line height that stay readable from 128 px to 4K frames."""
    short = min(image.shape[:2])
    scale = float(np.clip(short / 720.0, 0.3, 1.5))
    thickness = max(1, int(round(scale * 1.5)))
    line = max(8, int(round(26 * scale)))
    return scale, thickness, line


def _dark_box(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, strength: float = 0.6) -> None:
    """Darken a rectangle in place (a translucent panel behind text)."""
    h, w = image.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 > x0 and y1 > y0:
        region = image[y0:y1, x0:x1]
        region[:] = (region.astype(np.float32) * (1.0 - strength)).astype(np.uint8)


def draw_legend(image: np.ndarray, class_names: Sequence[str], palette: Sequence[Sequence[int]],
                present_only: bool = True, labels: np.ndarray | None = None) -> np.ndarray:
    """Draw a colour-swatch legend in the top-right corner, in place; returns ``image``.

    With ``present_only`` and a ``labels`` map, only the classes that occur in it are listed;
    rows that do not fit in the frame height are left out.
    """
    import cv2

    n = min(len(class_names), len(palette))
    ids = list(range(n))
    if present_only and labels is not None:
        counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False),
                             minlength=n)[:n]
        ids = [i for i in ids if counts[i] > 0]
    if not ids:
        return image
    scale, thick, line = _font_scale(image)
    pad = max(2, line // 4)
    rows = min(len(ids), max(0, (image.shape[0] - 2 * pad) // line))
    ids = ids[:rows]
    if not ids:
        return image
    text_w = max(cv2.getTextSize(class_names[i], cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for i in ids)
    swatch = line - pad
    width = pad * 3 + swatch + text_w
    x0 = max(0, image.shape[1] - width - pad)
    _dark_box(image, x0, 0, x0 + width + pad, pad * 2 + rows * line)
    for r, i in enumerate(ids):
        y = pad + r * line
        colour = tuple(int(c) for c in palette[i])
        cv2.rectangle(image, (x0 + pad, y), (x0 + pad + swatch, y + swatch), colour, -1)
        cv2.putText(image, class_names[i], (x0 + 2 * pad + swatch, y + swatch), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), thick, cv2.LINE_AA)
    return image


def hud_text(fps: float, latency_ms: float, dropped: int) -> str:
    """The one-line readout drawn by :func:`draw_hud`."""
    return f"{fps:5.1f} FPS | {latency_ms:6.1f} ms | dropped {int(dropped)}"


def draw_hud(image: np.ndarray, fps: float, latency_ms: float, dropped: int) -> np.ndarray:
    """Draw the FPS / latency / dropped-frames readout in the top-left corner, in place."""
    import cv2

    text = hud_text(fps, latency_ms, dropped)
    scale, thick, line = _font_scale(image)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, line // 4)
    _dark_box(image, 0, 0, tw + 2 * pad, th + base + 2 * pad)
    cv2.putText(image, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thick, cv2.LINE_AA)
    return image
