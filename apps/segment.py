"""Segment image files with any backend (tiled by default) and write label and colour PNGs.

    python -m runtime.segment IMAGE|FOLDER [...] --model ARTIFACT|VARIANT [--checkpoint CKPT]
        [--out runs/segment] [--mode tiled|whole|resize] [--stride HxW] [--overlay]

Per image, in ``--out`` (folders keep their sub-folder structure): ``<name>_trainIds.png`` (class
indices, 255 nowhere), ``<name>_color.png`` (the palette) and, for Cityscapes variants,
``<name>_labelIds.png`` (the ids cityscapesScripts reads); ``--overlay`` adds ``<name>_overlay.png``.
``_leftImg8bit`` is dropped from names. Each image prints its size, tile count and time; grayscale,
RGBA and 16-bit images are converted, images smaller than the crop are padded (runtime.tiling).
ONNX Runtime and TensorRT artifacts need no torch.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence


import numpy as np

from apps.cli import parse_hw
from runtime.errors import ToolkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def build_parser() -> argparse.ArgumentParser:
    from apps.cli import add_model_arguments

    p = argparse.ArgumentParser(prog="python -m runtime.segment", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    add_model_arguments(p)
    p.add_argument("--out", default="runs/segment", help="output folder (default runs/segment)")
    p.add_argument("--overlay", action="store_true", help="also write the colour map blended on the image")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity 0..1 (default 0.5)")
    return p


def collect_images(inputs: Sequence[str]) -> list[tuple[Path, Path]]:
    """(image path, output stem relative to --out) for every input; duplicates are an error."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ToolkitError(f"no images in folder {path}", expected=" ".join(IMAGE_SUFFIXES))
            found += [(f, f.relative_to(path).with_suffix("")) for f in files]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            raise ToolkitError(f"input not found: {path}", fix="pass image files or folders")
    stems: dict[Path, Path] = {}
    for image, rel in found:
        stem = rel.with_name(rel.name.replace("_leftImg8bit", ""))
        if stem in stems:
            raise ToolkitError(f"{image} and {stems[stem]} would write the same output files",
                               fix="segment them in separate runs (or with separate --out folders)")
        stems[stem] = image
    return [(image, stem) for stem, image in stems.items()]


def write_outputs(out: Path, stem: Path, image: np.ndarray, labels: np.ndarray, meta: Any,
                  overlay_alpha: float | None) -> list[Path]:
    from apps.cli import dataset_name_of
    from runtime.data import train_to_label_ids
    from runtime.fileio import write_png
    from runtime.visualize import colorize, overlay

    base = out / stem
    written = [base.with_name(base.name + "_trainIds.png"), base.with_name(base.name + "_color.png")]
    write_png(written[0], labels)
    write_png(written[1], colorize(labels, meta.palette))
    if dataset_name_of(meta.variant) == "cityscapes":
        written.append(base.with_name(base.name + "_labelIds.png"))
        write_png(written[-1], train_to_label_ids(labels))
    if overlay_alpha is not None:
        written.append(base.with_name(base.name + "_overlay.png"))
        write_png(written[-1], overlay(image, labels, meta.palette, overlay_alpha))
    return written


def segment(args: argparse.Namespace) -> list[dict]:
    """Run ``args.model`` over ``args.inputs``; returns one record per image."""
    from runtime.preprocess import read_image
    from runtime.tiling import Tiler
    from apps.cli import open_model

    if not 0.0 <= args.alpha <= 1.0:
        raise ToolkitError("--alpha must be within 0..1", found=str(args.alpha))
    images = collect_images(args.inputs)
    tiler = Tiler(stride=parse_hw(args.stride, "--stride") if args.stride else None, mode=args.mode)
    out, records = Path(args.out), []
    with open_model(args) as backend:
        print(f"{backend.label}: crop {backend.meta.crop[0]}x{backend.meta.crop[1]}, {args.mode}, "
              f"{len(images)} image(s) -> {out}")
        for image_path, stem in images:
            image = read_image(image_path)
            start = time.perf_counter()
            labels = tiler.labels(backend, image)
            seconds = time.perf_counter() - start
            written = write_outputs(out, stem, image, labels, backend.meta,
                                    args.alpha if args.overlay else None)
            tiles = int(tiler.last_timing["tiles"]) if tiler.mode == "tiled" else 0
            present = [backend.meta.class_names[c] for c in np.unique(labels) if c < backend.meta.num_classes]
            print(f"  {image_path}: {image.shape[0]}x{image.shape[1]}"
                  + (f", {tiles} tiles" if tiles else "") + f", {seconds * 1000:.0f} ms -> {written[0].name} "
                  f"(+{len(written) - 1}); classes: {', '.join(present)}")
            records.append(dict(image=str(image_path), height=image.shape[0], width=image.shape[1],
                                seconds=seconds, outputs=[str(w) for w in written]))
    return records


def main(argv: Sequence[str] | None = None) -> int:
    segment(build_parser().parse_args(argv))
    return 0
