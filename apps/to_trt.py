"""Checkpoint -> FP32 ONNX -> FP16 / INT8 ONNX artifacts -> TensorRT engines (+ sidecar JSON).

    python export/to_trt.py --model r50os8_cityscapes --fp16
    python export/to_trt.py --model r50os8_cityscapes --int8 --calib-data data/synth_cityscapes
    python export/to_trt.py --onnx artifacts/r50os8_cityscapes_512x1024_fp16.onnx --backend tensorrt

Precision is a property of the ONNX artifact (TensorRT 11 leaves no other way): --fp16 makes an
FP16/mixed ONNX (non-local affinity kept FP32), --int8 three calibrated Q/DQ ONNX files, one per
target: ``_int8_fp16`` for TensorRT 10/11 (strongly typed: opset 19, FP16 scales, float layers FP16,
affinity FP32), ``_int8_trt`` for TensorRT 8.x (opset 17, FP32 scales; built with INT8+FP16 flags,
affinity pinned FP32) and ``_int8_ort`` for ONNX Runtime on CPUs. The engine step picks the file of
the installed TensorRT; every TensorRT file passes the fusion check (calibration/fusion.py). No
flag: FP32. Every artifact is verified with ONNX Runtime.

--max-drop X (with --int8 or --fp16, --calib-data, optional --eval-data): search the fastest
artifact whose mIoU drop against PyTorch on held-out frames stays within X points (export/budget.py).

--backend auto (default): engines where TensorRT and a CUDA GPU exist, otherwise the ONNX
artifacts plus the exact command to run on the target; onnxruntime: the ONNX artifacts only
(CPU deployment); tensorrt: a missing TensorRT/GPU is an error. --onnx builds engines from
artifacts made elsewhere (no PyTorch needed on the target).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from apps.cli import drop_points, options, parse_hw, positive_int
from runtime.errors import ToolkitError


def build_parser() -> argparse.ArgumentParser:
    from apps.to_onnx import add_model_args

    ap = argparse.ArgumentParser(prog="python export/to_trt.py", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    add_model_args(ap, src)
    src.add_argument("--onnx", nargs="+", metavar="FILE", help="build engines from these toolkit ONNX artifacts")
    ap.add_argument("--fp16", action="store_true",
                    help="FP16/mixed artifact (INT8 engines run their float layers FP16 anyway); for GPUs: on a CPU, ONNX Runtime runs it no "
                         "faster than FP32 (use FP32 or --int8 there, or bf16 in the runtime commands: --backend openvino "
                         "--ov-precision bf16 where the CPU has AVX512-BF16/AMX)")
    ap.add_argument("--int8", action="store_true", help="INT8 Q/DQ artifacts calibrated on --calib-data")
    ap.add_argument("--calib-data", help="calibration images: Cityscapes/ADE20k/VOC root or image folder")
    ap.add_argument("--calib-method", help="entropy (default), max, percentile (99.99) or percentile-99.999")
    ap.add_argument("--calib-images", type=positive_int, help="at most this many calibration images (default 500)")
    ap.add_argument("--int8-implicit", action="store_true",
                    help="TensorRT <= 10 only: implicit INT8 (entropy calibrator + cache) instead of Q/DQ")
    ap.add_argument("--keep-fp32", help="FP16: nodes kept FP32: 'attention' (default), op types, names, 'none'")
    ap.add_argument("--keep-int8", help="INT8: nodes kept float (default 'attention,head'; 'none')")
    ap.add_argument("--max-drop", metavar="POINTS",
                    help="with --int8 or --fp16: search the fastest artifact whose mIoU drop vs PyTorch on "
                         "held-out frames stays within POINTS (see export/budget.py)")
    ap.add_argument("--eval-data", help="--max-drop: labelled held-out frames (default: the val split of --calib-data)")
    ap.add_argument("--label-ids", choices=("labelIds", "trainIds"),
                    help="--max-drop: what the evaluation frames' Cityscapes *_gtFine_labelIds.png files hold "
                         "(default labelIds, 0..33)")
    ap.add_argument("--max-float-layers", type=int, metavar="N",
                    help="--max-drop: at most N layer units kept in float per candidate (default: half)")
    ap.add_argument("--no-float-for-speed", action="store_true",
                    help="--int8 --max-drop: do not keep units float just because ONNX Runtime runs the model "
                         "faster on this CPU with them float (e.g. a TensorRT-only target)")
    ap.add_argument("--qat-data", metavar="DIR",
                    help="--int8 --max-drop: when no post-training candidate fits, fine-tune the fastest layout with "
                         "fake quantization on the train split of DIR (quantization-aware training, export/budget/qat.py)")
    ap.add_argument("--qat-iters", type=positive_int, help="--qat-data: fine-tuning iterations (default 300)")
    ap.add_argument("--qat-lr", type=float, help="--qat-data: base learning rate of the poly schedule (default 0.002)")
    ap.add_argument("--qat-batch", type=positive_int, help="--qat-data: crops per iteration (default 4)")
    ap.add_argument("--no-qat", action="store_true", help="--int8 --max-drop: post-training candidates only (the default "
                                                          "without --qat-data)")
    ap.add_argument("--workspace", type=float, help="TensorRT workspace in GiB (default 4)")
    ap.add_argument("--timing-cache", help="TensorRT timing cache file (read if present, updated)")
    ap.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def check_flags(args: argparse.Namespace) -> None:
    """Refuse contradictory or dangling flags (no silent fix-ups)."""
    def need(cond: bool, msg: str, fix: str) -> None:
        if not cond:
            raise ToolkitError(msg, fix=fix)

    calib_flags = [f for f, v in (("--calib-data", args.calib_data), ("--calib-method", args.calib_method),
                                  ("--calib-images", args.calib_images)) if v is not None]
    check_budget_flags(args, need)
    needs_calib = (args.int8 and (args.model or args.int8_implicit)) or (args.fp16 and args.max_drop is not None)
    need(not calib_flags or needs_calib, f"{calib_flags[0] if calib_flags else ''} only applies when calibrating",
         "add --int8 (with --model), or --int8 --int8-implicit (with --onnx), or drop it")
    need(not needs_calib or args.calib_data, "--int8 needs calibration images",
         "pass --calib-data DIR (a dataset root or a folder of images)")
    need(not args.int8_implicit or args.int8, "--int8-implicit needs --int8", "add --int8")
    need(args.workspace is None or args.workspace > 0, "--workspace must be > 0 GiB", "e.g. --workspace 4")
    if args.backend == "onnxruntime":
        bad = [f for f, v in (("--workspace", args.workspace), ("--timing-cache", args.timing_cache),
                              ("--int8-implicit", args.int8_implicit)) if v]
        need(not bad, f"{', '.join(bad)} only apply to TensorRT engine builds",
             "drop them, or use --backend auto/tensorrt")
    if args.onnx:
        extra = [f for f, v in (("--keep-fp32", args.keep_fp32), ("--keep-int8", args.keep_int8),
                                ("--checkpoint", args.checkpoint), ("--random-init", args.random_init),
                                ("--crop", args.crop)) if v]
        need(not extra, f"{', '.join(extra)} do not apply to --onnx (the artifacts are already made)",
             "drop them, or use --model to make new artifacts")
        need(args.backend != "onnxruntime", "--onnx only builds TensorRT engines", "use --backend auto or tensorrt")
        need(not args.int8 or args.int8_implicit, "--int8 with --onnx only means --int8 --int8-implicit",
             "the precision of an artifact is in its file: pass the *_int8_fp16.onnx artifact instead")


def check_budget_flags(args: argparse.Namespace, need: Any) -> None:
    """--max-drop: one precision, trained weights, held-out frames; its sub-flags need it."""
    budget = args.max_drop is not None
    sub = [f for f, v in (("--eval-data", args.eval_data), ("--label-ids", args.label_ids),
                          ("--max-float-layers", args.max_float_layers),
                          ("--no-float-for-speed", args.no_float_for_speed or None), ("--qat-data", args.qat_data),
                          ("--no-qat", args.no_qat or None)) if v is not None]
    need(budget or not sub, f"{', '.join(sub)} only apply to --max-drop", "add --max-drop POINTS or drop them")
    check_qat_flags(args, need)
    if not budget:
        return
    args.max_drop = drop_points(args.max_drop)          # the parser runtime.evaluate's --max-drop shares
    need(bool(args.model), "--max-drop searches from a --model checkpoint", "use --model (not --onnx)")
    need(args.int8 != args.fp16, "--max-drop needs exactly one of --int8 or --fp16",
         "search INT8 (--int8 --max-drop X) or FP16 (--fp16 --max-drop X)")
    need(not args.int8_implicit, "--max-drop searches Q/DQ artifacts, not implicit INT8", "drop --int8-implicit")
    need(not args.random_init, "--max-drop needs trained weights (a random model's drop means nothing)",
         "pass --checkpoint PATH")
    need(args.max_float_layers is None or args.max_float_layers >= 0, "--max-float-layers must be >= 0",
         "e.g. --max-float-layers 4")
    need(bool(args.calib_data), "--max-drop needs --calib-data",
         "pass --calib-data DIR (INT8: calibration; FP16: the activation ranges)")
    need(not (args.fp16 and (args.calib_method or args.keep_int8 or args.no_float_for_speed)),
         "--calib-method/--keep-int8/--no-float-for-speed do not apply to --fp16 --max-drop", "drop them")


def check_qat_flags(args: argparse.Namespace, need: Any) -> None:
    """--qat-data and its sub-flags: --int8 --max-drop only; --no-qat excludes them."""
    sub = [f for f, v in (("--qat-iters", args.qat_iters), ("--qat-lr", args.qat_lr), ("--qat-batch", args.qat_batch))
           if v is not None]
    need(not args.no_qat or not (args.qat_data or sub), "--no-qat conflicts with --qat-data and its flags",
         "drop one of them")
    need(bool(args.qat_data) or not sub, f"{', '.join(sub)} only apply to --qat-data", "add --qat-data DIR or drop them")
    for flag in ("qat_iters", "qat_lr", "qat_batch"):      # unset: BudgetOptions' defaults
        if getattr(args, flag) is None:
            delattr(args, flag)
    if not args.qat_data:
        return
    need(args.int8, "--qat-data fine-tunes INT8 candidates", "use it with --int8 --max-drop")
    need(os.path.isdir(args.qat_data), f"--qat-data directory not found: {args.qat_data}",
         "pass a labelled dataset root with a train split (python -m samples.generate makes one)")
    need(getattr(args, "qat_lr", 0.5) < 1 and getattr(args, "qat_lr", 0.5) > 0, "--qat-lr must be in (0, 1)",
         "e.g. --qat-lr 0.002")



def engine_mode(backend: str, log: Any) -> tuple[bool, str]:
    """(build engines here?, reason). --backend tensorrt without TensorRT/GPU is an error."""
    from export.trt_builder import INSTALL_HINT, tensorrt_status

    if backend == "onnxruntime":
        return False, "--backend onnxruntime: ONNX artifacts only (CPU deployment)"
    ok, reason = tensorrt_status()
    if not ok and backend == "tensorrt":
        raise ToolkitError(f"--backend tensorrt but {reason}", fix=INSTALL_HINT)
    return ok, reason


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)        # recorded in --max-drop reports
    check_flags(args)
    log = print
    can_build, reason = engine_mode(args.backend, log)
    from export.engines import EngineOptions, build_engines, target_command

    engine_opts = options(args, EngineOptions)
    if args.onnx:
        from export.engines import engines_from_files
        for line in engines_from_files(engine_opts, log):
            log(line)
        return 0
    if args.max_drop is not None:
        from export.budget import BudgetOptions, budget_artifacts
        artifacts, sources = budget_artifacts(options(args, BudgetOptions), log)
        calib = None
    else:
        artifacts, sources, calib = make_artifacts(args, log)
    lines = [f"weights: {sources}"] + [_row(a) for a in artifacts]
    if can_build:
        lines += build_engines(engine_opts, artifacts, calib, log)
    elif args.backend == "auto":
        lines.append(f"engine step skipped: {reason}; it needs TensorRT and a CUDA GPU on the target. "
                     f"Copy {Path(args.out)}/ there and run: {target_command(engine_opts, artifacts)}")
    else:
        lines.append(reason)
    log("summary:\n  " + "\n  ".join(lines))
    return 0


def chain_request(args: argparse.Namespace) -> Any:
    """The flags as an :class:`export.chain.ChainRequest` (FP16 / INT8 only when asked for)."""
    from calibration.graph import DEFAULT_KEEP, DEFAULT_KEEP_INT8, parse_keep
    from calibration.qdq import parse_method
    from export.chain import ChainRequest
    from export.pipeline import CalibRequest

    method, pct = parse_method(args.calib_method or "entropy")
    calib = CalibRequest(args.calib_data, method, pct, args.calib_images or 500) if args.int8 else None
    return ChainRequest(model=args.model, out=Path(args.out), checkpoint=args.checkpoint, random_init=args.random_init,
                        crop=parse_hw(args.crop) if args.crop else None, batch=args.batch, output=args.output,
                        data=args.data, fp16=[parse_keep(args.keep_fp32, DEFAULT_KEEP)] if args.fp16 else [],
                        calib=calib, keep_int8=parse_keep(args.keep_int8, DEFAULT_KEEP_INT8), progress=not args.quiet)


def make_artifacts(args: argparse.Namespace, log: Any) -> tuple[list[Any], str, Any]:
    """FP32 ONNX, then the FP16 / INT8 artifacts asked for; each verified with ONNX Runtime."""
    from export.chain import export_chain

    result = export_chain(chain_request(args), log)
    return result.artifacts, result.source.label, result.calib


def _row(art: Any) -> str:
    v = art.verify
    what = "reused" if art.reused else "written"
    check = f"agreement {100 * v['agreement']:.3f}% vs {v['against']}" if "agreement" in v else "not verified"
    return f"{art.role:9s} {art.path}  ({what}; {check})"
