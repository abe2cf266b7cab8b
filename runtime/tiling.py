"""Full-resolution inference with a fixed-crop backend: sliding-window tiling, whole-frame, resize.

One tiler serves every backend (PyTorch, ONNX Runtime, TensorRT), so backend differences are
purely numerical. numpy only (OpenCV is imported inside the resize mode); no torch.

Tiled mode (mmseg-style "slide" inference):
  * the frame is normalised once, then cut into ``crop``-sized tiles every ``stride`` pixels; the
    last tile in a row/column is shifted inward so it ends on the border, so tiles are only padded
    (with 0 in normalised space = the mean colour) where the frame is smaller than the crop;
  * tiles are sent in batches of the backend's batch size (a static-batch artifact gets its last
    batch filled up with zero tiles whose output is discarded);
  * logits backends: overlapping logits are summed and divided by a per-pixel count map (exact
    average); labels backends (artifacts with ArgMax inside): each pixel takes the label of the tile
    in which it lies *most centrally* (largest distance to that tile's nearest edge, first tile wins a
    tie), the label-space analogue of averaging: the prediction with the most context around it;
  * any NaN/Inf in a backend output raises :class:`NumericalError` (the FP16-overflow symptom);
    it is never turned into a plausible-looking map.

``Tiler.last_timing`` holds the breakdown of the latest call (preprocess / infer / stitch incl.
argmax, seconds) so the benchmark can report tiling overhead.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from runtime.batches import static_batches
from runtime.errors import ToolkitError

MODES = ("tiled", "whole", "resize")


class NumericalError(ToolkitError):
    """A backend produced NaN or Inf (e.g. FP16 overflow in the attention block)."""


def default_stride(crop: Sequence[int]) -> tuple[int, int]:
    """Stride giving an overlap of at least 1/3 of the crop: ``floor(2 * crop / 3)``.

    (512, 1024) -> (341, 682), the stride mmseg uses for Cityscapes. ``floor`` rather than ``ceil``
    so that the overlap ``crop - stride`` really is >= crop / 3 for every crop size.
    """
    return tuple(max(1, (2 * int(c)) // 3) for c in crop)  # type: ignore[return-value]


def _axis_starts(size: int, crop: int, stride: int) -> list[int]:
    n = max(size - crop + stride - 1, 0) // stride + 1
    starts = []
    for i in range(n):
        end = min(i * stride + crop, size)
        starts.append(max(end - crop, 0))
    return sorted(set(starts))


def tile_grid(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of the sliding-window tiles, row-major.

    The last tile of a row/column is shifted inward to end at the border; a dimension smaller than
    the crop gets a single tile at 0 (the caller pads it).
    """
    ch, cw = int(crop[0]), int(crop[1])
    sh, sw = int(stride[0]), int(stride[1])
    if min(ch, cw, sh, sw) <= 0:
        raise ToolkitError("crop and stride must be positive", found=f"crop {crop}, stride {stride}")
    if sh > ch or sw > cw:
        raise ToolkitError("stride larger than the crop leaves pixels uncovered",
                           found=f"crop {ch}x{cw}, stride {sh}x{sw}", fix="use --stride <= --crop")
    ys = _axis_starts(int(height), ch, sh)
    xs = _axis_starts(int(width), cw, sw)
    return [(y, x) for y in ys for x in xs]


def pad_to_crop(image_chw: np.ndarray, crop: Sequence[int]) -> np.ndarray:
    """Zero-pad a (C, H, W) array at the bottom/right up to at least ``crop`` (no-op if big enough)."""
    c, h, w = image_chw.shape
    ph, pw = max(int(crop[0]) - h, 0), max(int(crop[1]) - w, 0)
    if ph == 0 and pw == 0:
        return image_chw
    out = np.zeros((c, h + ph, w + pw), dtype=image_chw.dtype)
    out[:, :h, :w] = image_chw
    return out


def extract_tiles(image_chw: np.ndarray, crop: Sequence[int],
                  stride: Sequence[int] | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Cut a normalised float32 (3, H, W) image into tiles -> ``(tiles (T,3,ch,cw), positions)``.

    Positions are ``(y0, x0)`` in image coordinates; where the image is smaller than the crop it
    is padded with 0 (the mean colour after normalisation).
    """
    image = np.asarray(image_chw, dtype=np.float32)
    if image.ndim != 3:
        raise ToolkitError("extract_tiles needs a (C, H, W) array", found=str(image.shape))
    stride = default_stride(crop) if stride is None else stride
    positions = tile_grid(image.shape[1], image.shape[2], crop, stride)
    padded = pad_to_crop(image, crop)
    ch, cw = int(crop[0]), int(crop[1])
    tiles = np.empty((len(positions), image.shape[0], ch, cw), dtype=np.float32)
    for i, (y, x) in enumerate(positions):
        tiles[i] = padded[:, y:y + ch, x:x + cw]
    return tiles, positions


def check_finite(out: np.ndarray, backend_name: str) -> None:
    """Raise :class:`NumericalError` if a float output holds NaN or Inf."""
    if out.dtype.kind != "f":
        return
    finite = np.isfinite(out)
    if not finite.all():
        bad = int(out.size - np.count_nonzero(finite))
        raise NumericalError(
            f"{backend_name} produced {bad} non-finite values (NaN/Inf) out of {out.size}",
            fix="FP16 overflow is the usual cause: keep the non-local attention in FP32 "
                "(export/precision.py) or use the FP32 artifact")


def centrality(crop: Sequence[int]) -> np.ndarray:
    """Per-pixel distance (in pixels) to the nearest tile edge, shape ``crop``, int32."""
    ch, cw = int(crop[0]), int(crop[1])
    ys = np.minimum(np.arange(ch), np.arange(ch)[::-1])
    xs = np.minimum(np.arange(cw), np.arange(cw)[::-1])
    return np.minimum(ys[:, None], xs[None, :]).astype(np.int32)


class Tiler:
    """Runs a backend over full frames: ``mode`` is "tiled" (default), "whole" or "resize".

    ``crop``: the backend's static input size (None: take it from the backend). ``batch``: tiles
    per call for dynamic-batch backends (PyTorch; None: the backend's own ``input_shape[0]``);
    static-batch artifacts (ONNX, engines) always get exactly their batch.
    """

    def __init__(self, crop: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                 batch: int | None = None, mode: str = "tiled") -> None:
        if mode not in MODES:
            from difflib import get_close_matches
            hint = get_close_matches(mode, MODES, n=1)
            raise ToolkitError(f"unknown tiling mode {mode!r}", expected=", ".join(MODES),
                               fix=f"did you mean {hint[0]!r}?" if hint else None)
        if batch is not None and int(batch) < 1:
            raise ToolkitError("tile batch must be >= 1", found=str(batch))
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.stride = None if stride is None else (int(stride[0]), int(stride[1]))
        self.batch = None if batch is None else int(batch)
        self.mode = mode
        self.last_timing: dict[str, float] = {}

    # -- public API -------------------------------------------------------------------------
    def logits(self, backend: Any, image_rgb_u8: np.ndarray) -> np.ndarray:
        """Float32 (K, H, W) logits for one RGB uint8 frame (averaged over tile overlaps)."""
        if _output_kind(backend) != "logits":
            raise ToolkitError(f"{backend.name} outputs labels, not logits",
                               fix="use tiler.labels(), or export the artifact with logits output")
        acc, count, timing = self._run(backend, image_rgb_u8)
        t0 = time.perf_counter()
        if count is not None:
            acc /= count[None]
        timing["stitch"] += time.perf_counter() - t0
        self._finish(timing)
        return np.ascontiguousarray(acc)

    def labels(self, backend: Any, image_rgb_u8: np.ndarray) -> np.ndarray:
        """(H, W) uint8 label map for one RGB uint8 frame."""
        acc, _count, timing = self._run(backend, image_rgb_u8)
        t0 = time.perf_counter()
        if acc.ndim == 3:   # logits: argmax of the sum == argmax of the average (count > 0)
            acc = acc.argmax(axis=0)
        out = acc.astype(np.uint8)
        timing["stitch"] += time.perf_counter() - t0
        self._finish(timing)
        return out

    # -- internals ----------------------------------------------------------------------------
    def _finish(self, timing: dict[str, float]) -> None:
        timing["total"] = timing["preprocess"] + timing["infer"] + timing["stitch"]
        self.last_timing = timing

    def _run(self, backend: Any, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, dict]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ToolkitError("the tiler needs an RGB uint8 image", expected="(H, W, 3) uint8",
                               found=f"{image.shape} {image.dtype}",
                               fix="read images with runtime.preprocess.read_image")
        crop = self._crop_for(backend, image.shape[:2])
        if self.mode == "resize":
            return self._run_resize(backend, image, crop)
        return self._run_tiled(backend, image, crop)

    def _crop_for(self, backend: Any, frame_hw: tuple[int, int]) -> tuple[int, int]:
        bcrop = tuple(int(v) for v in backend.input_shape[2:])
        if self.crop is not None and self.crop != bcrop:
            raise ToolkitError(f"{backend.name} takes {bcrop[0]}x{bcrop[1]} inputs, not the requested crop",
                               expected=f"--crop {bcrop[0]}x{bcrop[1]}",
                               found=f"{self.crop[0]}x{self.crop[1]}",
                               fix="drop --crop (the artifact knows its crop) or use a matching artifact")
        if self.mode == "whole" and tuple(frame_hw) != bcrop:
            raise ToolkitError("whole-frame mode needs an artifact built at the frame size",
                               expected=f"{frame_hw[0]}x{frame_hw[1]}", found=f"{bcrop[0]}x{bcrop[1]}",
                               fix="export at the frame size (--crop HxW) or use --mode tiled / resize")
        return bcrop  # type: ignore[return-value]

    def _run_tiled(self, backend: Any, image: np.ndarray, crop: tuple[int, int]):
        from runtime.preprocess import normalize

        t0 = time.perf_counter()
        meta = backend.meta
        chw = normalize(image, meta.mean, meta.std)
        stride = self.stride or default_stride(crop)
        tiles, positions = extract_tiles(chw, crop, stride)
        del chw
        timing = {"preprocess": time.perf_counter() - t0, "infer": 0.0, "stitch": 0.0,
                  "tiles": float(len(positions))}
        stitcher = _Stitcher(_output_kind(backend), backend.num_classes, image.shape[:2], crop)
        for start, outs in self._batches(backend, tiles, timing):
            t1 = time.perf_counter()
            for j in range(outs.shape[0]):
                stitcher.add(outs[j], positions[start + j])
            timing["stitch"] += time.perf_counter() - t1
        t1 = time.perf_counter()
        acc, count = stitcher.result()
        timing["stitch"] += time.perf_counter() - t1
        return acc, count, timing

    def _batches(self, backend: Any, tiles: np.ndarray, timing: dict):
        """Yield ``(start, outputs)`` per backend call, outputs trimmed to the real tiles."""
        static = getattr(backend, "static_batch", True)
        nb = int(backend.input_shape[0])
        step = nb if static or self.batch is None else self.batch
        for start, chunk, real in static_batches(tiles, step, pad=static):
            t0 = time.perf_counter()
            out = np.asarray(backend(chunk))[:real]
            timing["infer"] += time.perf_counter() - t0
            check_finite(out, backend.name)
            yield start, out

    def _run_resize(self, backend: Any, image: np.ndarray, crop: tuple[int, int]):
        import cv2

        from runtime.preprocess import normalize

        t0 = time.perf_counter()
        h, w = image.shape[:2]
        small = cv2.resize(image, (crop[1], crop[0]), interpolation=cv2.INTER_LINEAR)
        chw = normalize(small, backend.meta.mean, backend.meta.std)[None]
        timing = {"preprocess": time.perf_counter() - t0, "infer": 0.0, "stitch": 0.0, "tiles": 1.0}
        _start, out = next(self._batches(backend, chw, timing))
        t1 = time.perf_counter()
        if out.ndim == 4:
            acc = resize_logits(out[0].astype(np.float32, copy=False), (h, w))
        else:
            acc = cv2.resize(out[0].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        timing["stitch"] += time.perf_counter() - t1
        return acc, None, timing


def resize_logits(logits: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Bilinear (half-pixel, like align_corners=False) resize of (K, h, w) float32 -> (K, H, W)."""
    import cv2

    k = logits.shape[0]
    out = np.empty((k, int(size_hw[0]), int(size_hw[1])), dtype=np.float32)
    for c0 in range(0, k, 4):   # OpenCV resizes up to 4 channels per call portably
        part = np.ascontiguousarray(logits[c0:c0 + 4].transpose(1, 2, 0))
        res = cv2.resize(part, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_LINEAR)
        out[c0:c0 + 4] = res.reshape(res.shape[0], res.shape[1], -1).transpose(2, 0, 1)
    return out


def _output_kind(backend: Any) -> str:
    return getattr(backend, "output_kind", None) or backend.meta.output


class _Stitcher:
    """Accumulates tile outputs onto the (padded) frame; crops the padding off at the end."""

    def __init__(self, kind: str, num_classes: int, frame_hw: tuple[int, int], crop: tuple[int, int]):
        self.kind = kind
        self.h, self.w = int(frame_hw[0]), int(frame_hw[1])
        self.crop = crop
        ph, pw = max(self.h, crop[0]), max(self.w, crop[1])
        if kind == "logits":
            self.acc = np.zeros((num_classes, ph, pw), dtype=np.float32)
            self.count = np.zeros((ph, pw), dtype=np.float32)
        else:
            self.acc = np.zeros((ph, pw), dtype=np.int32)
            self.best = np.full((ph, pw), -1, dtype=np.int32)
            self.central = centrality(crop)

    def add(self, out: np.ndarray, pos: tuple[int, int]) -> None:
        y, x = pos
        ch, cw = self.crop
        if tuple(out.shape[-2:]) != (ch, cw):
            raise ToolkitError("backend output size differs from its input size",
                               expected=f"{ch}x{cw}", found=f"{out.shape[-2]}x{out.shape[-1]}",
                               fix="re-export the artifact: outputs must be upsampled to the input size")
        if self.kind == "logits":
            if out.ndim != 3 or out.shape[0] != self.acc.shape[0]:
                raise ToolkitError("backend output has the wrong class count",
                                   expected=f"{self.acc.shape[0]} channels", found=str(out.shape))
            self.acc[:, y:y + ch, x:x + cw] += out
            self.count[y:y + ch, x:x + cw] += 1.0
            return
        best = self.best[y:y + ch, x:x + cw]
        take = self.central > best
        self.acc[y:y + ch, x:x + cw][take] = out[take]
        best[take] = self.central[take]

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "logits":
            return self.acc[:, :self.h, :self.w], self.count[:self.h, :self.w]
        return self.acc[:self.h, :self.w], None
