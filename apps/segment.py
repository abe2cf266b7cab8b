"""Segment image and video files with any backend (tiled by default) and write label and colour PNGs.

    python -m runtime.segment IMAGE|VIDEO|FOLDER [...] --model ARTIFACT|VARIANT [--checkpoint CKPT]
        [--out runs/segment] [--mode tiled|whole|resize] [--stride HxW] [--overlay] [--overwrite]
        [--ray [ADDRESS] [--ray-actors N]]

Per image, in ``--out`` (folders keep their sub-folder structure): ``<name>_trainIds.png`` (class
indices, 255 nowhere), ``<name>_color.png`` (the palette) and, for Cityscapes variants,
``<name>_labelIds.png`` (the ids cityscapesScripts reads); ``--overlay`` adds ``<name>_overlay.png``.
A video ``clip.mp4`` gives the same files per frame as ``clip/<frame index>_*.png``. ``_leftImg8bit``
is dropped from names. Each frame prints its size, tile count and time; grayscale, RGBA and 16-bit
images are converted, images smaller than the crop are padded (runtime.tiling). A frame that cannot
be read is reported by name and the run goes on (exit status 1 at the end).

A re-run with the same model and options skips frames whose files are complete (each frame's
files are placed as one set), so an interrupted run resumes; outputs of another model in ``--out``
are refused unless ``--overwrite``. ``--ray [ADDRESS]`` runs the frames on Ray actors (a local Ray
without ADDRESS; put --ray after the inputs or write --ray=ADDRESS): same files (docs/ray.md).
ONNX Runtime and TensorRT artifacts need no torch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from apps.cli import add_ray_arguments, parse_hw, ray_options
from runtime.errors import ToolkitError
from runtime.segmentation import collect_inputs

collect_images = collect_inputs     # the name this command's tests and users know


def build_parser() -> argparse.ArgumentParser:
    from apps.cli import add_model_arguments

    p = argparse.ArgumentParser(prog="python -m runtime.segment", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="image or video files, or folders (searched recursively)")
    add_model_arguments(p)
    p.add_argument("--out", default="runs/segment", help="output folder (default runs/segment)")
    p.add_argument("--overlay", action="store_true", help="also write the colour map blended on the image")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity 0..1 (default 0.5)")
    p.add_argument("--overwrite", action="store_true",
                   help="segment every frame again, replacing what --out holds (default: skip complete frames "
                        "of the same model and options)")
    add_ray_arguments(p)
    return p


def segment(args: argparse.Namespace) -> list[dict]:
    """Run ``args.model`` over ``args.inputs``; returns one record per frame (status done, skipped
    or unreadable)."""
    from apps.cli import model_spec
    from runtime.segmentation import run_stamp
    from runtime.tiling import Tiler

    if not 0.0 <= args.alpha <= 1.0:
        raise ToolkitError("--alpha must be within 0..1", found=str(args.alpha))
    cluster = ray_options(args)
    inputs = collect_inputs(args.inputs)
    stride = parse_hw(args.stride, "--stride") if args.stride else None
    tiler = Tiler(stride=stride, mode=args.mode)
    spec = model_spec(args)
    alpha = args.alpha if args.overlay else None
    stamp = run_stamp(spec[0], spec[1], spec[2], args.mode, stride, alpha)
    out = Path(args.out)
    if cluster is not None:
        from runtime.cluster.segment import segment_on_ray

        return segment_on_ray(spec, inputs, out, tiler, alpha, stamp, args.overwrite, cluster)
    return _segment_here(spec, inputs, out, tiler, alpha, stamp, args.overwrite)


def _segment_here(spec: tuple, inputs: list, out: Path, tiler: object, alpha: float | None, stamp: dict,
                  overwrite: bool) -> list[dict]:
    from runtime.backends import open_backend
    from runtime.segmentation import describe, finish_out, iter_frames, prepare_out, run_frame, skip_complete

    records = []
    with open_backend(spec[0], spec[1], **spec[2]) as backend:
        resume = prepare_out(out, inputs, stamp, overwrite)
        print(f"{backend.label}: crop {backend.meta.crop[0]}x{backend.meta.crop[1]}, {tiler.mode}, "
              f"{len(inputs)} input(s) -> {out}")
        for job in iter_frames(inputs):
            record = (resume and skip_complete(job, out, backend.meta.variant, alpha is not None)
                      or run_frame(backend, tiler, job, out, alpha))
            print(describe(record), file=sys.stderr if record["status"] == "unreadable" else sys.stdout)
            records.append(record)
    if overwrite:
        finish_out(out, stamp)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    records = segment(build_parser().parse_args(argv))
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "unreadable")}
    if counts["skipped"] or counts["unreadable"]:
        print(f"{counts['done']} frame(s) segmented, {counts['skipped']} complete already (skipped), "
              f"{counts['unreadable']} could not be read")
    if counts["unreadable"]:
        names = ", ".join(r["name"] for r in records if r["status"] == "unreadable")
        print(f"error: {counts['unreadable']} frame(s) could not be read: {names}", file=sys.stderr)
        return 1
    return 0
