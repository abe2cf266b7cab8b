"""Accuracy check: every candidate artifact against the PyTorch FP32 reference, with the same tiling.

    python -m runtime.evaluate --data data/synth_cityscapes --reference r18os8_cityscapes \\
        --checkpoint runs/r18.pth --artifacts artifacts/*.onnx [--limit N] [--out DIR] \\
        [--max-drop 0.5 | fp32=0.01,fp16=0.1,int8=0.5] [--save-preds] [--mode tiled] \\
        [--also-openvino [FILE ...] --ov-precision bf16] [--ray [ADDRESS] [--ray-actors N]]

Per backend (one at a time): mIoU against the ground truth (one confusion matrix over the split,
ignore label excluded, classes absent from both skipped), drop against the reference in mIoU points
(x100), pixel agreement with the reference, per-class IoU, latency. Exit status 1 when a drop
exceeds its limit (limit chosen by the artifact's precision) or a backend produces NaN/Inf, so it
works as a CI gate; 2 on a usage error. Writes ``evaluate.json`` and ``evaluate.md`` to ``--out``.

``--also-openvino [FILE ...]`` adds rows of the same .onnx files run by the OpenVINO backend (no FILE:
every .onnx artifact) next to the ``--backend`` rows; ``--ov-precision`` sets their float precision.
An FP32 file run with ``--ov-precision bf16`` is a bf16 row, held to the bf16 limit (by default the
FP16 limit, 0.1 points); an INT8 file keeps the INT8 limit whatever its float layers run in.

``--ray [ADDRESS]`` shards the frames over Ray actors (a local Ray without ADDRESS) and gives the
same report: per-frame confusion matrices and agreement counts added up exactly (docs/ray.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from apps.cli import (ALSO_OPENVINO_HELP, OV_PRECISION_HELP, OV_PRECISIONS, add_ray_arguments, add_triton_arguments,
                      also_openvino_files, max_drop_limits, parse_hw, positive_int, ray_options, triton_model_arg)
from runtime.errors import ToolkitError
from runtime.evaluation import DEFAULT_MAX_DROP, evaluate, print_table, write_reports

def parse_max_drop(text: str | None) -> dict[str, float]:
    """``"0.5"`` (every precision) or ``"fp16=0.2,int8=1"`` -> the defaults updated (mIoU points)."""
    return max_drop_limits(text, DEFAULT_MAX_DROP)



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset root (Cityscapes/VOC/ADE20k layout)")
    p.add_argument("--reference", "--model", dest="reference", required=True, help="variant, e.g. r18os8_cityscapes")
    p.add_argument("--checkpoint", help="reference checkpoint (.pth); omit only for a dry run")
    p.add_argument("--artifacts", nargs="+", default=[],
                   help=".onnx / .engine files or triton://HOST:PORT/MODEL served models to check")
    p.add_argument("--crop", help="reference crop HxW (default: the artifacts' crop, else the variant's)")
    p.add_argument("--stride", help="tiling stride HxW (default: overlap >= 1/3 of the crop)")
    p.add_argument("--mode", default="tiled", choices=("tiled", "whole", "resize"))
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=positive_int, help="first N images only")
    p.add_argument("--label-ids", default="labelIds", choices=("labelIds", "trainIds"),
                   help="Cityscapes: what the *_gtFine_labelIds.png files hold (default labelIds, 0..33)")
    p.add_argument("--max-drop", help="limits in mIoU points: POINTS for every precision (as export/to_trt.py "
                                      "--max-drop), or per precision, e.g. fp32=0.01,fp16=0.1,int8=0.5 (the defaults)")
    p.add_argument("--backend", default="auto",
                   help="force a backend for the artifacts (e.g. openvino for .onnx files)")
    p.add_argument("--providers", help="ONNX Runtime providers: cpu (default), cuda, tensorrt")
    p.add_argument("--threads", type=positive_int, help="ONNX Runtime / OpenVINO inference threads")
    p.add_argument("--also-openvino", nargs="*", metavar="FILE", help=ALSO_OPENVINO_HELP)
    p.add_argument("--ov-precision", choices=OV_PRECISIONS,
                   help=OV_PRECISION_HELP + "; applies to the OpenVINO rows (--backend openvino or --also-openvino)")
    p.add_argument("--device", default="cpu", help="reference device: cpu or cuda")
    add_triton_arguments(p)
    p.add_argument("--out", default="runs/evaluate", help="report directory")
    p.add_argument("--save-preds", action="store_true",
                   help="write colourised predictions, disagreement maps and *_labelIds.png")
    add_ray_arguments(p, reference=True)
    return p


def artifact_options(args: argparse.Namespace) -> dict[str, Any]:
    """--providers / --threads / --ov-precision as backend options for the artifacts."""
    openvino = args.backend.lower() in ("openvino", "ov")
    if args.ov_precision and not openvino and getattr(args, "also_openvino", None) is None:
        raise ToolkitError("--ov-precision only applies to --backend openvino or --also-openvino rows",
                           found=f"--backend {args.backend}")
    if openvino:
        if args.providers:
            raise ToolkitError("--providers only applies to ONNX Runtime", found="--backend openvino")
        return {"threads": args.threads, "precision": args.ov_precision or "f32"}
    if args.providers or args.threads:
        if any(not str(a).lower().endswith(".onnx") for a in args.artifacts):
            raise ToolkitError("--providers/--threads apply to ONNX Runtime only",
                               fix="pass only .onnx artifacts with these flags, or drop them")
        return {"providers": args.providers, "threads": args.threads}
    return {}


def openvino_rows(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """The ``--also-openvino`` rows: (artifact, "openvino", options)."""
    files = also_openvino_files(args.also_openvino, args.artifacts, args.backend)
    return [(f, "openvino", {"threads": args.threads, "precision": args.ov_precision or "f32"}) for f in files]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.cluster.gate import ray_executor
    from runtime.fileio import ensure_writable_dir

    out = ensure_writable_dir(args.out)
    limits = parse_max_drop(args.max_drop)
    cluster = ray_options(args)
    served = triton_model_arg(args)
    if served:
        args.artifacts = [*args.artifacts, served]
    report = evaluate(args.data, args.reference, args.artifacts, checkpoint=args.checkpoint,
                      crop=parse_hw(args.crop) if args.crop else None,
                      stride=parse_hw(args.stride, "--stride") if args.stride else None, mode=args.mode,
                      split=args.split, limit=args.limit, max_drop=limits, backend=args.backend,
                      backend_options=artifact_options(args), extra_rows=openvino_rows(args),
                      save_dir=str(Path(out) / "preds") if args.save_preds else None, device=args.device,
                      label_ids=args.label_ids, executor=ray_executor(cluster) if cluster else None)
    paths = write_reports(report, out)
    print_table(report)
    print(f"reports: {paths[0]} {paths[1]}")
    if not report["passed"]:
        print("FAILED: at least one artifact exceeds its mIoU drop limit or produced NaN/Inf", file=sys.stderr)
        return 1
    return 0
