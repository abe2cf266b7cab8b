"""FP32 ONNX export of a NonLocalNet variant (static crop, metadata inside, parity-checked).

    python export/to_onnx.py --model r50os8_cityscapes --checkpoint CKPT [--crop 512x1024] [--out artifacts]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from apps.cli import parse_hw, positive_int
from export.exporter import export_fp32, resolve_source


def add_model_args(ap: argparse.ArgumentParser, model_group: Any = None) -> None:
    """Flags shared with export/to_trt.py (``model_group``: where --model goes, e.g. an exclusive group)."""
    if model_group is None:
        ap.add_argument("--model", required=True, help="variant, e.g. r50os8_cityscapes")
    else:
        model_group.add_argument("--model", help="variant, e.g. r50os8_cityscapes")
    ap.add_argument("--checkpoint", help="weights (.pth); default: the variant's released file")
    ap.add_argument("--random-init", action="store_true", help="no weights: dry run of the pipeline")
    ap.add_argument("--crop", help="static input HxW (default: the variant's crop)")
    ap.add_argument("--batch", type=positive_int, default=1, help="static batch (default 1)")
    ap.add_argument("--output", choices=("logits", "labels"), default="logits",
                    help="logits (N,K,H,W float) or labels (argmax in the graph, N,H,W int32)")
    ap.add_argument("--data", help="images for the parity checks (dataset root or folder)")
    ap.add_argument("--out", default="artifacts", help="output directory (default artifacts/)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/to_onnx.py", description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--no-simplify", action="store_true", help="skip onnx-simplifier")
    args = ap.parse_args(argv)
    crop = parse_hw(args.crop) if args.crop else None
    source = resolve_source(args.model, args.checkpoint, args.random_init)
    path, meta, _ = export_fp32(source, Path(args.out), crop, args.batch, args.output, args.data,
                                simplify=not args.no_simplify)
    print(f"weights: {source.label}")
    return 0
