"""Generate a synthetic street-scene dataset in the real Cityscapes layout, and a driving video.

    python -m samples.generate --out data/synth_cityscapes [--size 256x512] [--train 300]
        [--val 30] [--seed 0] [--workers 2] [--force] [--video data/drive.mp4 [--video-size HxW]]

Writes ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png`` (RGB) and
``gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png`` (Cityscapes labelIds:
7 road, 8 sidewalk, 11 building, 17 pole, 20 traffic sign, 21 vegetation, 22 terrain, 23 sky,
24 person, 26 car; 1 = ego vehicle, ignored) and ``..._gtFine_instanceIds.png`` beside it (16-bit,
as Cityscapes: labelId * 1000 + k for each person and car, the labelId elsewhere; the official
cityscapesScripts evaluator reads them). Same arguments -> byte-identical files. Re-running
with the same arguments skips the files already there; a different dataset in ``--out`` needs
``--force``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import ToolkitError
from runtime.fileio import atomic_open, ensure_writable_dir
from samples.render import render_world, render_world_instances
from samples.scene import LABEL_NAMES
from samples.video import write_video
from samples.world import generate_world

GENERATOR_VERSION = 1
MANIFEST = "synth_manifest.json"
CITIES = {"train": ("synthville", "procburg"), "val": ("pixelstadt",)}
FRAMES_PER_SEQUENCE = 10
SPLIT_CODE = {"train": 0, "val": 1}

__all__ = ["render_scene", "generate_dataset", "write_video", "sample_paths"]


def render_scene(rng: np.random.Generator, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """One random street scene: (RGB uint8 (H, W, 3), Cityscapes labelIds uint8 (H, W))."""
    return render_world(generate_world(rng), H, W)


def sample_paths(root: str | os.PathLike, split: str, index: int) -> tuple[Path, Path]:
    """(image path, labelIds path) of sample ``index`` of ``split`` in the Cityscapes layout."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    k = index // len(cities)
    stem = f"{city}_{k // FRAMES_PER_SEQUENCE:06d}_{(k % FRAMES_PER_SEQUENCE) * 20 + 19:06d}"
    root = Path(root)
    return (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def instance_path(label_path: Path) -> Path:
    """``*_gtFine_labelIds.png`` -> ``*_gtFine_instanceIds.png`` (same folder)."""
    return label_path.with_name(label_path.name.replace("_gtFine_labelIds.png", "_gtFine_instanceIds.png"))


def write_png(path: Path, array: np.ndarray) -> None:
    """Encode to PNG in memory and write atomically (RGB arrays are stored as PNG RGB)."""
    data = array[..., ::-1] if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ToolkitError(f"could not encode {path} as PNG")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def _make_one(task: tuple[str, str, int, int, int, int, bool]) -> tuple[np.ndarray, bool]:
    """Worker: render + write one sample unless both files exist. Returns (label histogram, written)."""
    root, split, index, seed, H, W, overwrite = task
    img_path, lab_path = sample_paths(root, split, index)
    inst_path = instance_path(lab_path)
    if not overwrite and img_path.is_file() and lab_path.is_file() and inst_path.is_file():
        label = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
        if label is not None and label.shape == (H, W):
            return np.bincount(label.ravel(), minlength=256), False
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    rgb, label, instances = render_world_instances(generate_world(rng), H, W)
    write_png(img_path, rgb)
    write_png(lab_path, label)
    write_png(inst_path, instances)
    return np.bincount(label.ravel(), minlength=256), True


def _check_out(out: Path, manifest: dict, force: bool) -> None:
    """Refuse to mix datasets: an existing different dataset needs --force."""
    if not out.exists() or not any(out.iterdir()):
        return
    old_path = out / MANIFEST
    if not old_path.is_file():
        if force:
            return
        raise ToolkitError(f"output directory {out} is not empty and holds no synthetic dataset",
                           fix="choose an empty --out directory or pass --force to write into it")
    try:
        old = json.loads(old_path.read_text())
    except (OSError, ValueError):
        old = {}
    keys = ("version", "size", "train", "val", "seed")
    if force:
        _remove_old(out, old, manifest)
        return
    if all(old.get(k) == manifest[k] for k in keys):
        return
    diff = ", ".join(f"{k} {old.get(k)} -> {manifest[k]}" for k in keys if old.get(k) != manifest[k])
    raise ToolkitError(f"{out} holds a different synthetic dataset ({diff})",
                       fix="pass --force to replace it, or choose another --out")


def _remove_old(out: Path, old: dict, new: dict) -> None:
    """Delete files of an earlier generation that the new one will not rewrite (no mixed splits)."""
    for split in ("train", "val"):
        for i in range(int(new[split]), int(old.get(split, 0) or 0)):
            img, lab = sample_paths(out, split, i)
            for p in (img, lab, instance_path(lab)):
                p.unlink(missing_ok=True)


def generate_dataset(out: str | os.PathLike, size: tuple[int, int] = (256, 512), n_train: int = 300,
                     n_val: int = 30, seed: int = 0, workers: int = 2, force: bool = False,
                     progress: bool = True) -> dict:
    """Write the dataset; returns a summary dict (counts, seconds, labelId pixel fractions)."""
    H, W = size
    if H < 16 or W < 16 or n_train < 0 or n_val < 0:
        raise ToolkitError("bad dataset size", expected="--size at least 16x16 and counts >= 0",
                           found=f"size {H}x{W}, train {n_train}, val {n_val}")
    out = Path(out)
    manifest = {"generator": "samples.generate", "version": GENERATOR_VERSION, "size": [H, W],
                "train": n_train, "val": n_val, "seed": seed, "complete": False}
    _check_out(out, manifest, force)
    ensure_writable_dir(out)
    with atomic_open(out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
    tasks = [(str(out), split, i, seed, H, W, force) for split, n in (("train", n_train), ("val", n_val))
             for i in range(n)]
    t0 = time.perf_counter()
    hist, written = _run_tasks(tasks, workers, progress)
    seconds = time.perf_counter() - t0
    total = max(int(hist.sum()), 1)
    fractions = {LABEL_NAMES.get(k, str(k)): float(hist[k]) / total for k in np.nonzero(hist)[0]}
    manifest.update(complete=True, pixel_fractions=fractions)
    with atomic_open(out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
    return {"out": str(out), "written": written, "skipped": len(tasks) - written,
            "train": n_train, "val": n_val, "size": (H, W), "seconds": seconds,
            "pixel_fractions": fractions}


def _run_tasks(tasks: list, workers: int, progress: bool) -> tuple[np.ndarray, int]:
    from tqdm import tqdm

    hist = np.zeros(256, np.int64)
    written = 0
    bar = tqdm(total=len(tasks), desc="generating", unit="img", disable=None if progress else True)
    if workers > 1 and len(tasks) > 4:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            for h, w in pool.imap_unordered(_make_one, tasks, chunksize=4):
                hist += h
                written += w
                bar.update()
    else:
        for task in tasks:
            h, w = _make_one(task)
            hist += h
            written += w
            bar.update()
    bar.close()
    return hist, written
