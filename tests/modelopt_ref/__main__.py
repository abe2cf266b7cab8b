"""``python -m tests.modelopt_ref FP32.onnx OURS.onnx [OURS2.onnx ...] [--calib F | --random-calib N]``

Builds the ModelOpt venv if needed, quantizes FP32.onnx with ModelOpt (INT8, CPU calibration),
then prints, for each OURS file, the layer-by-layer table of which inputs read a DequantizeLinear
in OURS and in ModelOpt's file, and the Q/DQ / Cast / residual-Add counts of all files.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from .compare import compare, counts, format_counts, format_table, initializer_names, quantized_inputs
from .quantize import run_modelopt


def input_shape(fp32_onnx: Path) -> tuple[int, ...]:
    """The static shape of the model's first graph input (a symbolic dimension counts as 1)."""
    model = onnx.load(str(fp32_onnx), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim)


def random_calibration(shape: tuple[int, ...], samples: int, seed: int = 0) -> np.ndarray:
    """``samples`` batches of standard-normal data (i.e. already mean/std-normalised), stacked on axis 0."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples * shape[0], *shape[1:]), dtype=np.float32)


def load_calibration(path: Path) -> np.ndarray:
    """Calibration tiles from ``path``: a float32 NCHW ``.npy``, or the toolkit's calibration ``.npz``.

    The toolkit's cache (``calibration/calib_*.npz``) holds uint8 NHWC ``pixels``; they are
    normalised with the model zoo's MEAN/STD into float32 NCHW.
    """
    if path.suffix == ".npz":
        from runtime.zoo import MEAN, STD

        with np.load(path) as data:
            pixels = data["pixels"].astype(np.float32)
        mean, std = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
        return np.ascontiguousarray(((pixels - mean) / std).transpose(0, 3, 1, 2))
    return np.load(path).astype(np.float32)


def default_output(fp32_onnx: Path, method: str, high_precision: str) -> Path:
    """Where ModelOpt's file goes by default: beside the FP32 file."""
    return fp32_onnx.with_name(f"{fp32_onnx.stem}_modelopt_int8_{method}_{high_precision}.onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m tests.modelopt_ref", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp32", type=Path, help="the FP32 ONNX both quantizers start from")
    p.add_argument("ours", type=Path, nargs="+", help="the toolkit's Q/DQ ONNX file(s) made from FP32")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--calib", type=Path, help="calibration tiles: float32 NCHW .npy or the toolkit's calib_*.npz")
    src.add_argument("--random-calib", type=int, metavar="N", help="N random normalised samples (default 8)")
    p.add_argument("--method", default="max", choices=("max", "entropy"), help="ModelOpt calibration method")
    p.add_argument("--high-precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--out", type=Path, help="ModelOpt's output file (default: beside FP32)")
    p.add_argument("--modelopt", type=Path, help="compare with this existing ModelOpt file instead of running it")
    p.add_argument("--all", action="store_true", help="also list layers neither file quantizes")
    return p.parse_args(argv)


def modelopt_file(args: argparse.Namespace) -> Path:
    """ModelOpt's quantized file: the given one, or a fresh run on ``args.fp32``."""
    if args.modelopt:
        return args.modelopt
    calib = (load_calibration(args.calib) if args.calib
             else random_calibration(input_shape(args.fp32), args.random_calib or 8))
    out = args.out or default_output(args.fp32, args.method, args.high_precision)
    started = time.monotonic()
    run_modelopt(args.fp32, calib, out, method=args.method, high_precision=args.high_precision)
    print(f"ModelOpt INT8 ({args.method}, {args.high_precision}, calibration {tuple(calib.shape)}): "
          f"{out} in {time.monotonic() - started:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run ModelOpt, print one comparison table per OURS file and the counts of all files."""
    args = parse_args(argv)
    theirs_path = modelopt_file(args)
    fp32_names = initializer_names(args.fp32)
    theirs = quantized_inputs(theirs_path, fp32_names)
    for ours_path in args.ours:
        rows = compare(quantized_inputs(ours_path, fp32_names), theirs, only_quantized=not args.all)
        print(f"\n== {ours_path.name} (ours) vs {theirs_path.name} (modelopt)")
        print(format_table(rows, ours_name="ours", theirs_name="modelopt"))
    files = {p.name: counts(p) for p in [*args.ours, theirs_path]}
    print("\n== counts")
    print(format_counts(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
