"""Shared test set-up: repo root on sys.path, deterministic small-thread torch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Busy-waiting OpenMP threads make PyTorch on the main thread crawl when other threads compete
# (measured ~100x slower per tile under load); must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# tests/py38 is the separate Python 3.8 / 3.10 (Jetson) job of .ci/run, on prebuilt artifacts.
collect_ignore = [] if os.environ.get("NONLOCALNET_PY38_DIR") else ["py38"]


def write_images(folder: Path, n: int, hw=(96, 200), seed: int = 0) -> list[Path]:
    """``n`` seeded synthetic street scenes as PNG files (calibration / verification images)."""
    import cv2
    import numpy as np

    from samples.dataset import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rgb, _ = render_scene(np.random.default_rng([seed, i]), *hw)
        paths.append(folder / f"img_{i:03d}.png")
        cv2.imwrite(str(paths[-1]), rgb[:, :, ::-1])
    return paths


def tiny_int8_files(out: Path, images: Path | None = None, variant: str = "tiny_cityscapes",
                    crop: tuple[int, int] | None = None) -> dict:
    """A variant's (tiny by default) FP32 and INT8 artifacts through the export pipeline (random init,
    max calibration on 4 synthetic images): keys fp32, calib, req, verifier, trt, ort, mixed, lines."""
    from export.pipeline import Artifact, CalibRequest, Verifier, calibration_set, make_int8
    from export.exporter import export_fp32, resolve_source
    from export.verify import verification_tiles

    if images is None:
        images = out / "images"
        write_images(images, 6)
    quiet = lambda *a: None  # noqa: E731
    path, meta, _ = export_fp32(resolve_source(variant, None, True), out, crop=crop, log=quiet)
    fp32 = Artifact("fp32", path, meta, False)
    req = CalibRequest(str(images), "max", None, max_images=4)
    calib = calibration_set(fp32, req, progress=False)
    verifier = Verifier(path, verification_tiles(str(images), meta.crop, meta.mean, meta.std), False, quiet)
    lines: list[str] = []
    trt, ort_art, mixed = make_int8(fp32, calib, req, verifier, log=lines.append, progress=False)
    return {"fp32": fp32, "calib": calib, "req": req, "verifier": verifier, "trt": trt, "ort": ort_art,
            "mixed": mixed, "lines": lines}
