"""Image and label reading plus normalisation shared by evaluation, calibration and the demos.

numpy + OpenCV only (cv2 is imported inside the functions). Images come out as uint8 RGB (H, W, 3)
whatever is on disk (grayscale, RGBA, 16-bit, BGR order in OpenCV); labels as uint8 (H, W).
A file that cannot be decoded or is cut short raises :class:`ToolkitError` naming the file: a
truncated JPEG would otherwise decode to a half-grey picture without complaint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.errors import ToolkitError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


def _read_bytes(path: str | os.PathLike, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{what} file not found: {p}", fix="check the path / dataset layout")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ToolkitError(f"cannot read {what} file {p}", found=exc.strerror) from None
    if data.size == 0:
        raise ToolkitError(f"{what} file {p} is empty", fix="re-download or regenerate it")
    return data


def check_complete(data: np.ndarray | bytes, path: str | os.PathLike, what: str = "image") -> None:
    """Raise if a PNG/JPEG byte stream lacks its end marker (a truncated download or copy)."""
    raw = bytes(data[:8])
    tail = bytes(data[-1024:])
    if raw.startswith(PNG_SIGNATURE) and not tail.endswith(PNG_IEND):
        raise ToolkitError(f"{what} file {path} is truncated (PNG without its IEND chunk)",
                           fix="re-download or regenerate the file")
    if raw.startswith(JPEG_SOI) and JPEG_EOI not in tail:
        raise ToolkitError(f"{what} file {path} is truncated (JPEG without its end marker)",
                           fix="re-download or regenerate the file")


def probe_image(path: str | os.PathLike, what: str = "image") -> tuple[int, int] | None:
    """Check a file without decoding it: it exists, is complete (PNG/JPEG end marker) and, for
    PNG/JPEG, return its (H, W) from the header; None for other formats (decode to know)."""
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{what} file not found: {p}", fix="check the path / dataset layout")
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
            f.seek(max(p.stat().st_size - 1024, 0))
            tail = f.read()
    except OSError as exc:
        raise ToolkitError(f"cannot read {what} file {p}", found=exc.strerror) from None
    if not head:
        raise ToolkitError(f"{what} file {p} is empty", fix="re-download or regenerate it")
    check_complete(head[:8] + tail, p, what)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if head.startswith(JPEG_SOI):
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """(H, W) from the first SOFn marker within the first 64 KiB, or None."""
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:                     # fill byte
            i += 1
            continue
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(head[i + 5:i + 7], "big"), int.from_bytes(head[i + 7:i + 9], "big")
        i += 2 + length
    return None


def _decode(path: str | os.PathLike, what: str) -> np.ndarray:
    import cv2

    data = _read_bytes(path, what)
    check_complete(data, path, what)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ToolkitError(f"cannot decode {what} file {path}",
                           expected="a PNG/JPEG/BMP/TIFF/WebP image OpenCV can read",
                           fix="check that the file is a valid, complete image")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale 16-bit (0..65535) to 8-bit, float (0..1) to 8-bit; uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ToolkitError("unsupported image sample type", expected="uint8, uint16 or float",
                       found=str(image.dtype))


def to_rgb(image: np.ndarray, order: str = "bgr") -> np.ndarray:
    """Convert an OpenCV-style image to uint8 RGB (H, W, 3).

    Accepts (H, W) or (H, W, 1) grayscale, (H, W, 3) in ``order`` ("bgr" as OpenCV decodes and
    captures, or "rgb"), (H, W, 4) BGRA/RGBA (alpha dropped), in uint8, uint16 or float.
    """
    import cv2

    if order not in ("bgr", "rgb"):
        raise ToolkitError(f"unknown channel order {order!r}", expected="'bgr' or 'rgb'")
    image = to_uint8(np.asarray(image))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ToolkitError("unsupported image shape", expected="(H, W), (H, W, 3) or (H, W, 4)",
                           found=str(image.shape))
    if image.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if order == "bgr" else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(image, code)
    if order == "bgr":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); ToolkitError naming the file if it is bad."""
    image = _decode(path, "image")
    try:
        return to_rgb(image, "bgr")
    except ToolkitError as exc:
        raise ToolkitError(f"image file {path}: {exc.message}", expected=exc.expected,
                           found=exc.found) from None


def read_label(path: str | os.PathLike, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Read a label map as uint8 (H, W) of class ids.

    Single-channel 8-bit (or 16-bit with ids <= 255) files are read as they are. A 3-channel file
    whose channels are equal is accepted as grayscale. A colour-coded file (e.g. VOC's paletted
    SegmentationClass PNGs, which OpenCV expands to colour) needs ``palette`` (RGB per class id;
    (224, 224, 192), the VOC border colour, maps to 255); an unknown colour raises.
    """
    label = _decode(path, "label")
    if label.dtype not in (np.uint8, np.uint16):
        raise ToolkitError(f"label file {path} has an unsupported sample type",
                           expected="8-bit (or 16-bit) integer class ids", found=str(label.dtype))
    if label.ndim == 3 and label.shape[2] == 4:
        label = label[:, :, :3]
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim == 3:
        if np.array_equal(label[:, :, 0], label[:, :, 1]) and np.array_equal(label[:, :, 0], label[:, :, 2]):
            label = label[:, :, 0]
        elif palette is not None:
            label = _colour_to_ids(label[:, :, ::-1], palette, path)
        else:
            raise ToolkitError(f"label file {path} is a colour image",
                               expected="a single-channel map of class ids",
                               fix="use the id-coded labels (e.g. SegmentationClassAug, *_labelIds.png)")
    if label.dtype == np.uint16:
        if label.size and int(label.max()) > 255:
            raise ToolkitError(f"label file {path} has class ids above 255", found=str(int(label.max())))
        label = label.astype(np.uint8)
    return np.ascontiguousarray(label)


def _colour_to_ids(rgb: np.ndarray, palette: Sequence[Sequence[int]], path) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(palette)}
    table.setdefault((224 << 16) | (224 << 8) | 192, 255)
    uniq, inverse = np.unique(codes.ravel(), return_inverse=True)
    ids = np.empty(len(uniq), np.uint8)
    for k, code in enumerate(uniq):
        if int(code) not in table:
            colour = (int(code) >> 16, (int(code) >> 8) & 255, int(code) & 255)
            raise ToolkitError(f"label file {path} has a colour that is not in the palette",
                               found=f"RGB {colour}", fix="use id-coded label files")
        ids[k] = table[int(code)]
    return ids[inverse].reshape(codes.shape)


def normalize(image_rgb_u8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x - mean) / std on an RGB uint8 (H, W, 3) image -> float32 (3, H, W) (CHW, RGB order)."""
    image = np.asarray(image_rgb_u8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ToolkitError("normalize needs an RGB image", expected="(H, W, 3)", found=str(image.shape))
    mean_a = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    std_a = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    out = (image.astype(np.float32) - mean_a) / std_a
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def denormalize(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`normalize`: float32 (3, H, W) -> uint8 RGB (H, W, 3) (rounded, clipped)."""
    x = np.asarray(chw, dtype=np.float32).transpose(1, 2, 0)
    x = x * np.asarray(std, np.float32).reshape(1, 1, 3) + np.asarray(mean, np.float32).reshape(1, 1, 3)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def synthetic_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth RGB frame (upsampled low-frequency noise), uint8 (h, w, 3)."""
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
