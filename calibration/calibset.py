"""The INT8 calibration set: seeded tiles cut exactly like the runtime, cached as ``.npz``.

* Images come from a Cityscapes / ADE20k / VOC directory or a plain folder
  (``runtime.data.open_dataset``); a seeded choice of at most ``max_images`` of them is used.
* Every chosen image goes through ``runtime.preprocess.normalize`` and
  ``runtime.tiling.extract_tiles`` (the runtime's own tiler and stride), and a seeded choice of
  its tiles is kept, at most ``max_tiles`` in all (default: ``max_images``), spread evenly.
* The cache stores the *uint8 pixels* of each chosen tile (4x smaller than float32); loading
  normalises them and pads them through the same two runtime functions, which gives bit-identical
  float32 tiles because normalisation is per pixel and padding is 0 in normalised space.
* The cache file is named by a content hash of everything that decides the tiles (image list with
  sizes and mtimes, crop, stride, mean, std, seed, caps), so a rebuild never decodes images again
  and any change to the inputs makes a new set. It is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from runtime.errors import ToolkitError
from runtime.fileio import atomic_open, ensure_writable_dir

CACHE_VERSION = 1
DEFAULT_MAX_IMAGES = 500


def list_source_images(root: str | os.PathLike, splits: Sequence[str] = ("train", "val"),
                       flag: str = "--calib-data") -> list[Path]:
    """Image paths (sorted) of the first non-empty split of a dataset directory, or of a plain folder."""
    from runtime.data import open_dataset

    root_path = Path(root)
    if not root_path.is_dir():
        raise ToolkitError(f"{flag} directory not found: {root}",
                           fix=f"pass {flag} DIR (a dataset root or a folder of images)")
    last: ToolkitError | None = None
    for name in splits:
        try:
            dataset = open_dataset(root_path, split=name, kind="auto")
        except ToolkitError as exc:
            last = exc
            continue
        paths = sorted(Path(p) for p in _dataset_paths(dataset))
        if paths:
            return paths
    raise ToolkitError(f"no images found in {root} ({flag})",
                       expected="a Cityscapes/ADE20k/VOC root or a folder of .png/.jpg images",
                       found=last.message if last else "0 images",
                       fix=f"point {flag} at a directory that holds images")


def _dataset_paths(dataset) -> list[str]:
    """The image paths of a ``runtime.data`` Dataset (no image is decoded)."""
    return list(dataset.image_paths)


def set_key(paths: Sequence[Path], root: Path, crop: Sequence[int], stride: Sequence[int],
            mean: Sequence[float], std: Sequence[float], seed: int, max_images: int,
            max_tiles: int) -> str:
    """Content hash of everything that decides the calibration tiles (no image is decoded)."""
    files = []
    for p in paths:
        st = p.stat()
        files.append([os.path.relpath(p, root), st.st_size, st.st_mtime_ns])
    spec = {"version": CACHE_VERSION, "files": files, "crop": list(crop), "stride": list(stride),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std], "seed": int(seed),
            "max_images": int(max_images), "max_tiles": int(max_tiles)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def choose_images(n: int, max_images: int, seed: int) -> list[int]:
    """Seeded choice of ``min(n, max_images)`` image indices, in ascending order."""
    rng = np.random.default_rng([int(seed), 1])
    return sorted(rng.choice(n, size=min(n, int(max_images)), replace=False).tolist())


def _tile_quota(n_images: int, max_tiles: int) -> int:
    return max(1, -(-int(max_tiles) // max(n_images, 1)))


@dataclass
class _Crops:
    """uint8 tile pixels (T, ch, cw, 3), valid extent (T, 2), origin (image, y0, x0)."""

    pixels: list[np.ndarray] = field(default_factory=list)
    valid: list[tuple[int, int]] = field(default_factory=list)
    origin: list[tuple[str, int, int]] = field(default_factory=list)


def _cut_image(path: Path, crop: Sequence[int], stride: Sequence[int], mean, std, quota: int,
               rng: np.random.Generator, out: _Crops, label: str) -> None:
    """Tile one image with the runtime tiler; keep a seeded choice of ``quota`` tiles (as uint8)."""
    from runtime.preprocess import normalize, read_image
    from runtime.tiling import extract_tiles

    image = read_image(path)
    _tiles, positions = extract_tiles(normalize(image, mean, std), crop, stride)
    keep = sorted(rng.choice(len(positions), size=min(quota, len(positions)), replace=False).tolist())
    ch, cw = int(crop[0]), int(crop[1])
    for j in keep:
        y, x = positions[j]
        part = image[y:y + ch, x:x + cw]
        buf = np.zeros((ch, cw, 3), np.uint8)
        buf[:part.shape[0], :part.shape[1]] = part
        out.pixels.append(buf)
        out.valid.append((part.shape[0], part.shape[1]))
        out.origin.append((label, int(y), int(x)))


def tile_from_pixels(pixels: np.ndarray, valid: Sequence[int], crop: Sequence[int],
                     mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float32 (3, ch, cw) tile from stored uint8 pixels, through the runtime functions."""
    from runtime.preprocess import normalize
    from runtime.tiling import extract_tiles

    part = np.ascontiguousarray(pixels[:int(valid[0]), :int(valid[1])])
    tiles, _ = extract_tiles(normalize(part, mean, std), crop, crop)
    return tiles[0]


def pick_tiles(paths: Sequence[Path], crop: Sequence[int], stride: Sequence[int] | None,
               mean: Sequence[float], std: Sequence[float], tiles_per_image: int = 1,
               seed: int = 0) -> np.ndarray:
    """Float32 tiles (T, 3, ch, cw): a seeded choice of ``tiles_per_image`` runtime tiles per image."""
    from runtime.tiling import default_stride

    stride = tuple(stride) if stride else default_stride(crop)
    crops = _Crops()
    for i, path in enumerate(paths):
        _cut_image(Path(path), crop, stride, mean, std, tiles_per_image,
                   np.random.default_rng([int(seed), 2, i]), crops, str(path))
    return np.stack([tile_from_pixels(p, v, crop, mean, std) for p, v in zip(crops.pixels, crops.valid)])


@dataclass
class CalibrationSet:
    """Cached calibration tiles; :meth:`batches` yields normalised float32 NCHW batches."""

    path: Path
    key: str
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixels: np.ndarray          # (T, ch, cw, 3) uint8
    valid: np.ndarray           # (T, 2) int32
    sources: list[str]
    reused: bool = False
    n_images: int = 0

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def tile(self, i: int) -> np.ndarray:
        return tile_from_pixels(self.pixels[i], self.valid[i], self.crop, self.mean, self.std)

    def batches(self, batch: int = 1) -> Iterator[np.ndarray]:
        """Batches of exactly ``batch`` tiles; a short last batch wraps around to the first tiles."""
        n = len(self)
        for start in range(0, n, batch):
            idx = [(start + k) % n for k in range(batch)]
            yield np.stack([self.tile(i) for i in idx])

    def describe(self) -> str:
        how = "reused cache" if self.reused else "built"
        return (f"calibration set: {len(self)} tiles {self.crop[0]}x{self.crop[1]} from {self.n_images} "
                f"images ({how} {self.path.name})")


def build_calibration_set(root: str | os.PathLike, crop: Sequence[int], mean: Sequence[float],
                          std: Sequence[float], cache_dir: str | os.PathLike,
                          stride: Sequence[int] | None = None, max_images: int = DEFAULT_MAX_IMAGES,
                          max_tiles: int | None = None, seed: int = 0,
                          splits: Sequence[str] = ("train", "val"),
                          progress: bool = True) -> CalibrationSet:
    """Draw (or load from the cache) the calibration tiles for ``crop`` from images under ``root``."""
    from runtime.tiling import default_stride

    if int(max_images) < 1 or (max_tiles is not None and int(max_tiles) < 1):
        raise ToolkitError("calibration needs at least one image and one tile",
                           found=f"--calib-images {max_images}")
    crop = (int(crop[0]), int(crop[1]))
    stride = tuple(int(s) for s in stride) if stride else default_stride(crop)
    max_tiles = int(max_tiles or max_images)
    root = Path(root)
    paths = list_source_images(root, splits)
    chosen = [paths[i] for i in choose_images(len(paths), max_images, seed)]
    key = set_key(chosen, root, crop, stride, mean, std, seed, max_images, max_tiles)
    cache = ensure_writable_dir(cache_dir) / f"calib_{crop[0]}x{crop[1]}_{key[:16]}.npz"
    if cache.is_file():
        loaded = _load(cache, key, crop, mean, std)
        if loaded is not None:
            return loaded
    crops = _cut_all(chosen, root, crop, stride, mean, std, max_tiles, seed, progress)
    _save(cache, key, crops, len(chosen))
    return CalibrationSet(cache, key, crop, tuple(mean), tuple(std), np.stack(crops.pixels),
                          np.asarray(crops.valid, np.int32), [o[0] for o in crops.origin], False, len(chosen))


def _cut_all(chosen: list[Path], root: Path, crop, stride, mean, std, max_tiles: int, seed: int,
             progress: bool) -> _Crops:
    from tqdm import tqdm

    quota = _tile_quota(len(chosen), max_tiles)
    crops = _Crops()
    for i, path in enumerate(tqdm(chosen, desc="calibration tiles", unit="img", disable=not progress or None)):
        _cut_image(path, crop, stride, mean, std, quota, np.random.default_rng([int(seed), 2, i]),
                   crops, os.path.relpath(path, root))
    if len(crops.pixels) > max_tiles:
        rng = np.random.default_rng([int(seed), 3])
        keep = sorted(rng.choice(len(crops.pixels), size=max_tiles, replace=False).tolist())
        crops = _Crops([crops.pixels[k] for k in keep], [crops.valid[k] for k in keep],
                       [crops.origin[k] for k in keep])
    return crops


def _save(path: Path, key: str, crops: _Crops, n_images: int) -> None:
    origin = np.asarray([o[0] for o in crops.origin])
    with atomic_open(path, "wb") as f:
        np.savez(f, pixels=np.stack(crops.pixels), valid=np.asarray(crops.valid, np.int32),
                 sources=origin, positions=np.asarray([o[1:] for o in crops.origin], np.int32),
                 key=np.asarray(key), n_images=np.asarray(n_images))


def _load(path: Path, key: str, crop, mean, std) -> CalibrationSet | None:
    """Load a cache file; None if it is unreadable or belongs to other inputs (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return CalibrationSet(path, key, tuple(crop), tuple(mean), tuple(std), data["pixels"],
                                  data["valid"], [str(s) for s in data["sources"]], True,
                                  int(data["n_images"]))
    except (OSError, ValueError, KeyError):
        return None
