"""Export benchmark on this CPU: the toolkit's paths and their peers side by side, per precision.

    python export/benchmark.py [--model r50os8_cityscapes] [--checkpoint PATH] [--crop 512x1024]
        [--frame 1024x2048] [--calib-data data/synth_cityscapes] [--runs 3] [--threads 2]
        [--skip compile bf16 ...] [--ort-options] [--out artifacts/bench]
        [--agreement-checkpoint r18.pth --agreement-model r18os8_cityscapes --agreement-crop 256x512]

One run, side by side: the artifacts are made with the toolkit's own pipeline (wall times of
export, FP16 conversion, calibration, quantisation, each including its ONNX Runtime verification),
then every path runs the same crop (or, with --frame, the tiler's crops of one frame) in
interleaved rounds, so a noisy machine hits all equally; the quietest round and each path's median
are reported. Paths (bench/peers.py): the toolkit's (ONNX Runtime FP32 / FP16 / INT8 in both Q/DQ
layouts, the toolkit's OpenVINO backend on its FP32 and INT8 files, at f32 and, where the CPU has
native bf16, with bf16 float layers; elsewhere those rows read "not native here", untimed) and the
peers (PyTorch eager, torch.compile, OpenVINO FP32 and its default CPU precision, bf16 forced in
OpenVINO and PyTorch, NNCF INT8 at OpenVINO's default float precision and at f32). Setup times
(compile, quantise) are measured apart. Achieved G(FL)OP/s per path against the machine's FP32 /
BF16 / INT8 peaks: the best of several GEMM kernels and sizes, re-timed every round, checked against
the ISA's theoretical figure, never shown above 100 % (bench/roofline.py); ratios vs PyTorch eager
FP32, vs the fastest peer of each precision and, for INT8 rows, vs NNCF at the same float precision
(bench/report.py). With
--agreement-checkpoint the FP16 / INT8 artifacts of a trained model are compared with its FP32
artifact on the dataset's val frames through the runtime tiler (pixel agreement and mIoU). Prints a
table and writes JSON (``--out``/benchmark.json). The machine line (CPU, ISA, caps, threads,
versions) heads both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from apps.cli import options, positive_int
from bench.study import StudyOptions, agreement_study, make_artifacts, reprint, run_latency, table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/benchmark.py", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="r50os8_cityscapes")
    ap.add_argument("--checkpoint", help="weights (default: seeded random init; speed does not depend on them)")
    ap.add_argument("--crop", help="HxW (default: the variant's crop)")
    ap.add_argument("--calib-data", default="data/synth_cityscapes")
    ap.add_argument("--calib-method", default="entropy")
    ap.add_argument("--calib-images", type=positive_int, default=8)
    ap.add_argument("--runs", type=positive_int, default=3, help="interleaved rounds (quietest and median reported)")
    ap.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, help="threads for every path")
    ap.add_argument("--out", default="artifacts/bench")
    ap.add_argument("--agreement-checkpoint")
    ap.add_argument("--agreement-model", default="r18os8_cityscapes")
    ap.add_argument("--agreement-crop")
    ap.add_argument("--agreement-calib-images", type=positive_int, default=64)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--frame", help="time the runtime tiler's tiles of one synthetic HxW frame (e.g. 1024x2048: "
                                    "9 crops of 512x1024) instead of one crop")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="paths to leave out, by name or group: compile, fp16, bf16 (with the INT8 rows' bf16 float "
                         "layers), int8, peer, toolkit, nncf_int8, ...")
    ap.add_argument("--ort-options", action="store_true",
                    help="also time ONNX Runtime session options (denormals, optimisation level, 1 thread)")
    ap.add_argument("--report", metavar="JSON", help="print the table of an earlier run's benchmark.json and exit")
    args = ap.parse_args(argv)
    if args.report:
        return reprint(Path(args.report))
    log = print
    from runtime.sysinfo import describe, machine_info

    log(f"machine: {describe()}")
    results: dict[str, Any] = {"model": args.model, "threads": args.threads, "machine": machine_info(),
                               "argv": list(argv if argv is not None else sys.argv[1:])}
    study = options(args, StudyOptions)
    arts, results["walls"], model, calib = make_artifacts(study, log)
    results["reused"] = study.reused
    if not args.skip_latency:
        from bench.report import summarise

        results["latency"] = run_latency(study, arts, model, calib, log)
        results["latency"]["summary"] = summarise(results["latency"])
    if args.agreement_checkpoint:
        results["agreement"] = agreement_study(study, log)
    results["machine"] = machine_info()     # again at the end: versions of everything the run imported
    from runtime.fileio import atomic_open

    with atomic_open(Path(args.out) / "benchmark.json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(table(results))
    print(f"wrote {Path(args.out) / 'benchmark.json'}")
    return 0
