"""Verification tiles and agreement figures shared by every export step.

Tiles come from real images when the user gives some (``--data`` / ``--calib-data``): they are
normalised and cut exactly like the runtime does it (``runtime.preprocess.normalize`` +
``runtime.tiling.extract_tiles``). Without images they are synthetic street scenes rendered by
``samples.dataset`` at the crop size; only where that cannot run, seeded random noise. The
description returned with the tiles says which, so the CLI can print it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.batches import run_static
from runtime.errors import ToolkitError


@dataclass
class VerifyTiles:
    """Normalised float32 tiles (T, 3, H, W) and where they came from (printed in the summary)."""

    tiles: np.ndarray
    source: str
    real_images: bool


def noise_tiles(crop: Sequence[int], mean: Sequence[float], std: Sequence[float], count: int = 2,
                seed: int = 0) -> VerifyTiles:
    """Seeded uniform-noise RGB images, normalised like the runtime (used only without images)."""
    from runtime.preprocess import normalize

    rng = np.random.default_rng(seed)
    h, w = int(crop[0]), int(crop[1])
    tiles = np.stack([normalize(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mean, std)
                      for _ in range(count)])
    return VerifyTiles(tiles, f"{count} tiles of seeded random noise (seed {seed}; no images given: "
                              "pass --data DIR to check on real images)", False)


def image_tiles(root: str | os.PathLike, crop: Sequence[int], mean: Sequence[float],
                std: Sequence[float], count: int = 4, seed: int = 0) -> VerifyTiles:
    """``count`` tiles, one per image, from a seeded choice of images under ``root``."""
    from calibration.calibset import list_source_images, pick_tiles

    paths = list_source_images(root, ("val", "train"), flag="--data")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False).tolist())
    tiles = pick_tiles([paths[i] for i in chosen], crop, None, mean, std, tiles_per_image=1, seed=seed)
    return VerifyTiles(tiles, f"{len(tiles)} tiles from {len(chosen)} images in {root}", True)


def synthetic_tiles(crop: Sequence[int], mean: Sequence[float], std: Sequence[float], count: int = 4,
                    seed: int = 0) -> VerifyTiles | str:
    """Street scenes rendered by ``samples.dataset`` at the crop size, or why they cannot be made here.

    Any failure of the optional sample generator (not importable on this Python, e.g. a TypeError
    from newer typing syntax on 3.8, or a rendering error) returns the reason instead of raising:
    verification then runs on seeded noise and says so. It must never break an export step, in
    particular not the one right after a finished TensorRT engine build.
    """
    from runtime.preprocess import normalize

    try:
        from samples.dataset import render_scene

        h, w = int(crop[0]), int(crop[1])
        tiles = np.stack([normalize(render_scene(np.random.default_rng([seed, i]), h, w)[0], mean, std)
                          for i in range(count)])
    except Exception as exc:      # optional generator; the reason is printed with the fallback
        return f"samples.dataset unavailable ({type(exc).__name__}: {exc})"
    return VerifyTiles(tiles, f"{count} synthetic street scenes (samples.dataset, seed {seed})", True)


def verification_tiles(data: str | os.PathLike | None, crop: Sequence[int], mean: Sequence[float],
                       std: Sequence[float], count: int = 4, seed: int = 0) -> VerifyTiles:
    """Tiles from ``data`` when given, else synthetic scenes, else seeded noise (``source`` says which)."""
    if data is not None:
        return image_tiles(data, crop, mean, std, count=count, seed=seed)
    synth = synthetic_tiles(crop, mean, std, count, seed)
    if isinstance(synth, VerifyTiles):
        return synth
    noise = noise_tiles(crop, mean, std, min(count, 2), seed)
    noise.source += f"; {synth}"
    return noise


def run_batched(fn: Any, tiles: np.ndarray, batch: int, desc: str | None = None) -> np.ndarray:
    """Call ``fn`` on static batches of ``batch`` tiles (the last one zero-filled, then trimmed)."""
    from tqdm import tqdm

    total = -(-len(tiles) // batch)
    return run_static(fn, tiles, batch, progress=lambda it: tqdm(it, total=total, desc=desc, unit="batch",
                                                                 disable=None if desc else True, leave=False))


def run_onnx(path: str | os.PathLike, tiles: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Outputs of an ONNX artifact on ``tiles`` through the runtime's ONNX Runtime backend."""
    from runtime.backends import open_backend

    with open_backend(str(path), backend="onnxruntime", threads=threads) as backend:
        return run_batched(backend, tiles.astype(np.float32, copy=False), backend.input_shape[0],
                           desc=f"ONNX Runtime {Path(path).name}")


def agreement(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Pixel agreement (argmax) and, for two logit arrays, max |diff| and NaN/Inf count."""
    ref_labels = reference.argmax(1) if reference.ndim == 4 else reference
    test_labels = test.argmax(1) if test.ndim == 4 else test
    if ref_labels.shape != test_labels.shape:
        raise ToolkitError("outputs to compare have different shapes",
                           found=f"{ref_labels.shape} vs {test_labels.shape}")
    out = {"agreement": float(np.mean(ref_labels == test_labels)), "pixels": int(ref_labels.size)}
    if reference.ndim == 4 and test.ndim == 4:
        finite = np.isfinite(test)
        out["nonfinite"] = int(test.size - np.count_nonzero(finite))
        diff = np.abs(reference.astype(np.float64) - np.where(finite, test, 0).astype(np.float64))
        out["max_abs_diff"] = float(diff.max())
    return out


def format_agreement(name: str, stats: dict[str, float]) -> str:
    """``name: max |diff| 1.2e-05, pixel agreement 100.0000% (131072 px)``."""
    parts = []
    if "max_abs_diff" in stats:
        parts.append(f"max |diff| {stats['max_abs_diff']:.3g}")
    parts.append(f"pixel agreement {100 * stats['agreement']:.4f}% ({int(stats['pixels'])} px)")
    if stats.get("nonfinite"):
        parts.append(f"{int(stats['nonfinite'])} NaN/Inf values")
    return f"{name}: " + ", ".join(parts)
