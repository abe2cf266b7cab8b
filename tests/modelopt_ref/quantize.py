"""Run NVIDIA ModelOpt's ONNX INT8 post-training quantizer (CPU calibration) in its own venv.

The main environment never imports ModelOpt: the quantizer runs as
``<venv>/bin/python -m modelopt.onnx.quantization ...`` in a subprocess (see :mod:`.venv`).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .venv import ensure_venv, venv_python

TIMEOUT_S = 1800


class ModelOptFailed(Exception):
    """ModelOpt's quantizer exited with an error (the message ends with its output tail)."""


def _tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def quantizer_command(python: Path, fp32_onnx: Path, calib_npy: Path, out: Path,
                      method: str = "max", high_precision: str = "fp16",
                      extra_args: Sequence[str] = ()) -> list[str]:
    """The ModelOpt INT8 command line: calibration on the CPU execution provider, one .npy input."""
    return [str(python), "-m", "modelopt.onnx.quantization",
            f"--onnx_path={fp32_onnx}", "--quantize_mode=int8",
            f"--calibration_data_path={calib_npy}", "--calibration_eps", "cpu",
            f"--calibration_method={method}", f"--high_precision_dtype={high_precision}",
            f"--output_path={out}", *extra_args]


def run_modelopt(fp32_onnx: Path, calib: np.ndarray, out: Path, method: str = "max",
                 high_precision: str = "fp16", *, extra_args: Sequence[str] = ()) -> Path:
    """Quantize ``fp32_onnx`` to INT8 Q/DQ with ModelOpt, calibrated on ``calib``; return ``out``.

    ``calib`` is the model input's batch of calibration samples (e.g. ``(8, 3, H, W)`` float32
    normalised tiles; ModelOpt splits it along axis 0 into batches of the model's static batch size).
    ``method``: ``max`` or ``entropy``; ``high_precision``: ``fp32``, ``fp16`` or ``bf16``;
    ``extra_args``: more quantizer flags, e.g. ``["--dq_only"]`` or ``["--disable_mha_qdq"]``.
    The quantizer's output is also written to ``<out stem>.modelopt.log`` beside ``out``.
    Builds the ModelOpt venv first when needed (raises ``venv.ModelOptUnavailable`` if it cannot);
    raises :class:`ModelOptFailed` with the output tail when the quantizer fails.
    """
    fp32_onnx, out = Path(fp32_onnx).resolve(), Path(out).resolve()
    python = venv_python(ensure_venv())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelopt-ref-") as tmp:
        calib_npy = Path(tmp) / "calib.npy"
        np.save(calib_npy, np.ascontiguousarray(calib, dtype=np.float32))
        cmd = quantizer_command(python, fp32_onnx, calib_npy, out, method, high_precision, extra_args)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["CUDA_VISIBLE_DEVICES"] = ""
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ModelOptFailed(f"ModelOpt timed out after {TIMEOUT_S} s: {' '.join(cmd)}") from None
        log = proc.stdout + proc.stderr
        (out.parent / f"{out.stem}.modelopt.log").write_text(
            f"$ {' '.join(cmd)}\n[exit {proc.returncode}, {time.monotonic() - started:.1f} s]\n{log}")
    if proc.returncode != 0 or not out.is_file():
        raise ModelOptFailed(f"ModelOpt failed (exit {proc.returncode}) on {fp32_onnx}:\n{_tail(log)}")
    return out
