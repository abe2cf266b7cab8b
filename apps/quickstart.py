"""End-to-end quickstart on the synthetic sample set, the first thing a new user runs.

    python -m samples.quickstart [--data data/synth_cityscapes] [--run runs/r18w32os8_synth]
                                 [--artifacts artifacts/quickstart] [--retrain] [--limit N]

0. prints the machine and the CPU kernels it runs on (training prints its projected time after its
   first iterations, so a slow machine says at once how long it will take),
1. generates the synthetic Cityscapes-format set (skipped when it is already there),
2. trains the r18w32os8 sample model with ``--preset synthetic``: a finished run is reused, an
   interrupted one (Ctrl-C, SIGTERM) is resumed where it stopped; an interrupted quickstart exits 130
   (SIGINT) or 143 (SIGTERM) and exports nothing,
3. exports FP32, FP16 and INT8 (TensorRT, TensorRT INT8+FP16 and ONNX-Runtime-CPU layouts) ONNX artifacts,
   calibrated on 100 seeded train images (``--calib-images``, percentile 99.99 ranges), verifying each with
   ONNX Runtime,
4. runs the accuracy gate: every artifact against the PyTorch FP32 reference on the val split, and
   prints the mIoU / drop table (exit code non-zero when a drop exceeds its limit). Where the CPU
   computes bf16 natively (AVX512-BF16 / AMX) and OpenVINO is installed, the gate has one more row:
   the FP32 artifact run by the OpenVINO backend with bf16 float layers (held to the bf16 limit).

Each step is the same command a user would type; this script only chains them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

from apps.cli import positive_int
from runtime.errors import ToolkitError

MODEL = "r18w32os8_cityscapes"   # the sample model: see README, Training
CROP = "256x256"
TRAIN_ARGS = ["--preset", "synthetic"]
INTERRUPTED = (130, 143)          # what models.train returns after Ctrl-C / SIGTERM
# Measured (docs/results/): 9-10 min with AVX-512 kernels on an idle Xeon, 6.3 min on a Zen 5 (bf16 training),
# 12-13.5 min with AVX2 kernels; the sample model's val mIoU over those runs: 79.90 (Zen 5, AVX2 kernels),
# 80.04 / 80.07 (Zen 5, bf16), 80.73 and 80.97 (Xeon): a recipe of this size moves by about a point.
EXPECTED = ("about 6-10 min on 2 cores with AVX-512 kernels, 12-13.5 min with AVX2 kernels, less with AMX; about "
            "1 min of it after training; the sample model reaches 79.9-81.0 val mIoU (five measured runs, three CPUs)")


class Interrupted(Exception):
    """A step was stopped by Ctrl-C / SIGTERM; ``code`` is its exit code."""

    def __init__(self, title: str, code: int) -> None:
        super().__init__(title)
        self.title, self.code = title, code


def step(title: str, command: str, args: list[str], main: Callable[[Sequence[str]], int | None]) -> float:
    """Run one toolkit command (``command`` + ``args``) in-process, echoing it; non-zero exit stops."""
    print(f"\n== {title}\n$ {command} {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    code = int(main(args) or 0)
    elapsed = time.perf_counter() - t0
    print(f"-- {title}: {elapsed:.0f} s", flush=True)
    if code in INTERRUPTED:
        raise Interrupted(title, code)
    if code:
        raise ToolkitError(f"step '{title}' failed with exit code {code}", fix="see its output above")
    return elapsed


def print_machine() -> None:
    """Where this runs: CPU model and ISA, the kernels PyTorch uses, and the training precision."""
    import torch

    from models.train_log import amp_choice, cpu_kernels
    from runtime.sysinfo import describe

    print(f"machine: {describe()}\nkernels: {cpu_kernels()}; training precision: "
          f"{amp_choice('auto', torch.device('cpu'))[1]}\nexpected: {EXPECTED}; training measures its first "
          "iterations and prints the time it will take on this machine", flush=True)


def train_or_reuse(args: argparse.Namespace, train_main: Callable[[Sequence[str]], int | None]) -> float | None:
    """Reuse a finished run, resume an unfinished one, else train; returns the training seconds (None: reused)."""
    from models.trainer import run_state

    run = Path(args.run)
    state, it, total = ("none", 0, 0) if args.retrain else run_state(run)
    command = ["--model", MODEL, "--data", args.data, *TRAIN_ARGS, "--out", args.run]
    if state == "finished" and (run / "best.pth").is_file():
        print(f"\n== train: reusing the finished run {run / 'best.pth'} (pass --retrain to train again)")
        check_reusable(run / "best.pth")
        return None
    if state == "unfinished":
        check_reusable(run / "latest.pth")
        print(f"\n== train: resuming the unfinished run in {run} at iteration {it}/{total}")
        command.append("--resume")
    return step("train the sample model", "python -m models.train", command, train_main)


def check_reusable(ckpt: Path) -> None:
    """A run left by an older version (e.g. another sample variant) must not fail later inside the
    export with a shape list: say at once that it has to be retrained."""
    from models import create_model

    try:
        create_model(MODEL, checkpoint=str(ckpt))
    except ToolkitError as exc:
        raise ToolkitError(f"cannot reuse {ckpt}: {exc.message}",
                           fix="python -m samples.quickstart --retrain (or delete the run directory)") from None


def bf16_row(fp32_artifact: Path) -> list[str]:
    """The gate's flags for the OpenVINO bf16 row of the FP32 artifact, where this CPU runs bf16 natively
    (else none, and one line saying why)."""
    from runtime.backends.openvino_backend import cpu_native_hints

    try:
        import openvino  # noqa: F401
    except ImportError:
        print("note: no OpenVINO bf16 row in the gate: OpenVINO is not installed (pip install -e .[openvino])")
        return []
    if "bf16" not in cpu_native_hints():
        print("note: no OpenVINO bf16 row in the gate: bf16 is not native on this CPU (needs AVX512-BF16 or AMX)")
        return []
    return ["--also-openvino", str(fp32_artifact), "--ov-precision", "bf16"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m samples.quickstart", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/synth_cityscapes", help="synthetic dataset root")
    ap.add_argument("--run", default="runs/r18w32os8_synth", help="training run directory")
    ap.add_argument("--artifacts", default="artifacts/quickstart", help="where the ONNX artifacts go")
    ap.add_argument("--report", default="runs/quickstart_report", help="accuracy report directory")
    ap.add_argument("--retrain", action="store_true",
                    help="train from scratch even if <run> holds a finished or unfinished run")
    ap.add_argument("--limit", type=positive_int, help="evaluate on the first N val images only")
    ap.add_argument("--calib-method", default="percentile",
                    help="INT8 calibration method (percentile: measured best on the sample model, see README)")
    ap.add_argument("--calib-images", type=positive_int, default=100,
                    help="INT8 calibration images (export's default is 500; 100 keeps the quickstart short)")
    args = ap.parse_args(argv)
    try:
        return run_steps(args)
    except Interrupted as exc:
        print(f"\nquickstart interrupted during '{exc.title}' (exit {exc.code}); nothing was exported from it. "
              "Run the same command again to resume the training where it stopped.", flush=True)
        return exc.code


def run_steps(args: argparse.Namespace) -> int:
    """The chain of steps (see the module docstring)."""
    from apps.to_trt import main as export_main
    from apps.train import main as train_main
    from apps.evaluate import main as evaluate_main
    from apps.generate import main as generate_main

    t_start = time.perf_counter()
    print_machine()
    times = {"generate": step("generate the synthetic set",
                              "python -m samples.generate", ["--out", args.data], generate_main)}
    ckpt = Path(args.run) / "best.pth"
    trained = train_or_reuse(args, train_main)
    if trained is not None:
        times["train"] = trained
    common = ["--model", MODEL, "--checkpoint", str(ckpt), "--crop", CROP, "--out", args.artifacts,
              "--data", args.data, "--backend", "onnxruntime"]
    times["export fp32+fp16"] = step("export FP32 + FP16", "python export/to_trt.py", [*common, "--fp16"],
                                export_main)
    times["export int8"] = step("export + calibrate INT8", "python export/to_trt.py", [
        *common, "--int8", "--calib-data", args.data, "--calib-images", str(args.calib_images),
        "--calib-method", args.calib_method], export_main)
    artifacts = sorted(str(p) for p in Path(args.artifacts).glob(f"{MODEL}_{CROP}*.onnx"))
    evaluate = ["--data", args.data, "--reference", MODEL,
                "--checkpoint", str(ckpt), "--crop", CROP, "--artifacts", *artifacts, "--out", args.report]
    if args.limit:
        evaluate += ["--limit", str(args.limit)]
    evaluate += bf16_row(Path(args.artifacts) / f"{MODEL}_{CROP}.onnx")
    times["evaluate"] = step("accuracy gate vs the PyTorch reference", "python -m runtime.evaluate", evaluate,
                             evaluate_main)
    total = time.perf_counter() - t_start
    print("\nquickstart done in {:.0f} s ({})".format(total, ", ".join(f"{k} {v:.0f} s" for k, v in times.items())))
    print(f"report: {args.report}/  artifacts: {args.artifacts}/")
    return 0
