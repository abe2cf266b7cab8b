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


# --- the tiny model and its ONNX exports (backend, evaluate, budget, Triton, denormal tests) ---
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from runtime.artifact import META_KEY, ArtifactMeta  # noqa: E402

VARIANT = "tiny_cityscapes"


def variant_meta(model, **changes) -> ArtifactMeta:
    v, ds = model.variant, model.variant.dataset
    meta = ArtifactMeta(v.name, v.num_classes, ds.class_names, ds.palette, v.crop, ds.mean, ds.std)
    return meta.replace(**changes)


def export_onnx(checkpoint: Path, out_dir: Path, output: str = "logits") -> Path:
    """The export helper's FP32 ONNX (static crop, opset 17, simplified, parity-checked, metadata)."""
    from export.exporter import export_fp32, resolve_source

    path, _meta, _reused = export_fp32(resolve_source(VARIANT, str(checkpoint), False), out_dir,
                                       output=output, log=lambda *a: None)
    return path


def with_meta(src: Path, dst: Path, meta: ArtifactMeta | None) -> Path:
    """A copy of ``src`` whose toolkit metadata is replaced by ``meta`` (None: removed)."""
    import onnx

    from export.exporter import write_meta

    proto = onnx.load(str(src))
    if meta is None:
        kept = [p for p in proto.metadata_props if p.key != META_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
    else:
        write_meta(proto, meta)
    onnx.save(proto, str(dst))
    return dst


def synthetic_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB frame (low-frequency blobs upsampled), uint8."""
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def write_png(path, array: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array[:, :, ::-1] if array.ndim == 3 else array)


def write_self_labelled(root, split: str, frames, reference) -> None:
    """A Cityscapes-layout ``split`` under ``root`` (city ``testcity``): each RGB frame and, as its
    ground truth, ``reference``'s own tiled prediction (so the reference scores 100 % mIoU)."""
    from runtime.data import train_to_label_ids
    from runtime.tiling import Tiler

    for i, img in enumerate(frames):
        base = f"testcity_000000_{i:06d}"
        write_png(root / f"leftImg8bit/{split}/testcity/{base}_leftImg8bit.png", img)
        write_png(root / f"gtFine/{split}/testcity/{base}_gtFine_labelIds.png",
                  train_to_label_ids(Tiler().labels(reference, img)))


def seeded_tiny(folder: Path, seed: int = 0) -> tuple:
    """(model, checkpoint path): the tiny variant with seeded random weights, saved in ``folder``."""
    import torch

    from models import create_model
    from models.checkpoints import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(VARIANT)
    return model, save_checkpoint(folder / "tiny.pth", model)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded tiny model, its checkpoint, and logits / labels ONNX exports of it."""
    d = tmp_path_factory.mktemp("tiny")
    model, ckpt = seeded_tiny(d)
    meta = variant_meta(model)
    return {"model": model, "ckpt": ckpt, "dir": d, "meta": meta,
            "onnx": export_onnx(ckpt, d), "labels_onnx": export_onnx(ckpt, d / "labels", output="labels")}
