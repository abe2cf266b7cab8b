"""Export benchmark on this CPU: PyTorch eager vs ONNX Runtime FP32 / FP16 / INT8 (both layouts).

    python export/benchmark.py [--model r50os8_cityscapes] [--checkpoint PATH] [--crop 512x1024]
        [--calib-data data/synth_cityscapes] [--runs 3] [--threads 2] [--out artifacts/bench]
        [--agreement-checkpoint r18.pth --agreement-model r18os8_cityscapes --agreement-crop 256x512]

One run, side by side: the artifacts are made with the toolkit's own pipeline (wall times of
export, FP16 conversion, calibration, quantisation, each including its ONNX Runtime verification),
then every backend runs the same crop in interleaved rounds (so a noisy machine hits all equally).
ORT session options that matter on CPU are measured too (flush denormals, optimisation level,
threads). With --agreement-checkpoint the FP16 / INT8 artifacts of a trained model are compared
with its FP32 artifact on the dataset's val frames through the runtime tiler (pixel agreement and
mIoU). Prints a table and writes JSON (``--out``/benchmark.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from runtime.apps.cli import positive_int

QUIET = lambda *a: None  # noqa: E731


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ort_session(path: Path, threads: int, flush_denormals: bool = True, level: str = "all") -> Callable:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if flush_denormals:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def torch_runner(model: Any, threads: int, flush_denormals: bool = False) -> Callable:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flush_denormals)
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


def latency_rounds(runners: dict[str, Callable], x: np.ndarray, runs: int, log: Callable) -> dict[str, dict]:
    """One warm-up each, then ``runs`` interleaved rounds; median and min seconds per crop."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for name, fn in runners.items():
        _, t = timed(lambda: fn(x))
        log(f"  warm-up {name}: {t:.2f} s")
    for r in range(runs):
        for name, fn in runners.items():
            times[name].append(timed(lambda: fn(x))[1])
        log(f"  round {r + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()))
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "runs": v} for k, v in times.items()}


def make_artifacts(args: argparse.Namespace, log: Callable) -> tuple[dict[str, Path], dict[str, float], Any]:
    """FP32, FP16 (fp32-attention and all-fp16) and both INT8 artifacts, with wall times."""
    from export.pipeline import Artifact, CalibRequest, Verifier, calibration_set, make_fp16, make_int8
    from export.to_onnx import build_model, export_fp32, resolve_source
    from export.verify import verification_tiles
    from runtime.apps.cli import parse_hw

    out = Path(args.out)
    source = resolve_source(args.model, args.checkpoint, args.checkpoint is None)
    walls: dict[str, float] = {}
    (path, meta, reused), walls["export_fp32"] = timed(lambda: export_fp32(
        source, out, parse_hw(args.crop) if args.crop else None, log=log))
    fp32 = Artifact("fp32", path, meta, reused)
    tiles = verification_tiles(args.calib_data, meta.crop, meta.mean, meta.std, count=2)
    verifier = Verifier(path, tiles, enforce=False, log=log, why_not="benchmark")
    arts = {"fp32": path}
    fp16, walls["fp16_convert"] = timed(lambda: make_fp16(fp32, verifier, log=log))
    arts["fp16"] = fp16.path
    all16, walls["fp16_all_convert"] = timed(lambda: make_fp16(fp32, verifier, keep=(), log=log))
    arts["fp16_all"] = all16.path
    req = CalibRequest(args.calib_data, args.calib_method, None, args.calib_images)
    calib, walls["calib_set"] = timed(lambda: calibration_set(fp32, req))
    (trt, ort_art, mixed), walls["calibrate_quantize_verify"] = timed(
        lambda: make_int8(fp32, calib, req, verifier, log=log))
    arts["int8_trt"], arts["int8_ort"], arts["int8_fp16"] = trt.path, ort_art.path, mixed.path
    walls["verify_tiles"] = len(tiles.tiles)
    args.reused = {"export_fp32": reused, "fp16_convert": fp16.reused, "fp16_all_convert": all16.reused,
                   "calib_set": calib.reused, "calibrate_quantize_verify": trt.reused and ort_art.reused and mixed.reused}
    return arts, walls, build_model(source)


def run_latency(args: argparse.Namespace, arts: dict[str, Path], model: Any, log: Callable) -> dict:
    from runtime.apps.cli import parse_hw

    crop = parse_hw(args.crop) if args.crop else tuple(model.variant.crop)
    x = np.random.default_rng(0).standard_normal((1, 3, *crop)).astype(np.float32)
    t = args.threads
    runners = {"pytorch_eager_fp32": torch_runner(model, t),
               "pytorch_eager_fp32_ftz": torch_runner(model, t, flush_denormals=True),
               "ort_fp32": ort_session(arts["fp32"], t),
               "ort_fp16": ort_session(arts["fp16"], t),
               "ort_fp16_all": ort_session(arts["fp16_all"], t),
               "ort_int8_ort_layout": ort_session(arts["int8_ort"], t),
               "ort_int8_trt_layout": ort_session(arts["int8_trt"], t),
               "ort_int8_fp16_trt_layout": ort_session(arts["int8_fp16"], t)}
    log("latency per crop (main table):")
    main = latency_rounds(runners, x, args.runs, log)
    del runners
    options = {"ort_fp32_no_ftz": ort_session(arts["fp32"], t, flush_denormals=False),
               "ort_fp32_basic_opt": ort_session(arts["fp32"], t, level="basic"),
               "ort_fp32_1thread": ort_session(arts["fp32"], 1),
               "ort_int8_ort_no_ftz": ort_session(arts["int8_ort"], t, flush_denormals=False),
               "ort_int8_ort_1thread": ort_session(arts["int8_ort"], 1)}
    log("ONNX Runtime options:")
    opts = latency_rounds(options, x, max(1, args.runs - 1), log)
    return {"main": main, "options": opts, "crop": list(crop)}


def agreement_study(args: argparse.Namespace, log: Callable) -> dict:
    """FP16 / INT8 vs FP32 artifacts of a trained model on the val frames, through the runtime tiler."""
    from export.pipeline import Artifact, CalibRequest, Verifier, calibration_set, make_fp16, make_int8
    from export.to_onnx import export_fp32, resolve_source
    from export.verify import verification_tiles
    from runtime.backends import open_backend
    from runtime.apps.cli import parse_hw
    from runtime.data import open_dataset
    from runtime.metrics import ConfusionMeter
    from runtime.tiling import Tiler

    out = Path(args.out) / "agreement"
    source = resolve_source(args.agreement_model, args.agreement_checkpoint, False)
    crop = parse_hw(args.agreement_crop) if args.agreement_crop else None
    path, meta, reused = export_fp32(source, out, crop, data=args.calib_data, log=log)
    fp32 = Artifact("fp32", path, meta, reused)
    verifier = Verifier(path, verification_tiles(args.calib_data, meta.crop, meta.mean, meta.std), False, log,
                        why_not="agreement study")
    req = CalibRequest(args.calib_data, args.calib_method, None, args.agreement_calib_images)
    arts = {"fp32": fp32, "fp16": make_fp16(fp32, verifier, log=log),
            "fp16_all": make_fp16(fp32, verifier, keep=(), log=log)}
    arts["int8_trt"], arts["int8_ort"], arts["int8_fp16"] = make_int8(fp32, calibration_set(fp32, req), req,
                                                                      verifier, log=log)
    val = open_dataset(args.calib_data, split="val")
    tiler = Tiler()
    labels: dict[str, list[np.ndarray]] = {}
    meters = {k: ConfusionMeter(meta.num_classes) for k in arts}
    for key, art in arts.items():
        with open_backend(str(art.path), threads=args.threads) as backend:
            labels[key] = []
            for sample in val:
                pred = tiler.labels(backend, sample.image)
                labels[key].append(pred)
                if sample.label is not None:
                    meters[key].update(pred, sample.label)
    ref = labels["fp32"]
    result = {"model": args.agreement_model, "checkpoint": args.agreement_checkpoint, "crop": list(meta.crop),
              "frames": len(ref), "data": args.calib_data, "calib_images": req.max_images,
              "max_abs_attention_logit": attention_logit_max(path, val, meta)}
    for key in arts:
        agree = float(np.mean(np.concatenate([(a == b).ravel() for a, b in zip(labels[key], ref)])))
        result[key] = {"agreement_vs_fp32": agree, "miou": float(meters[key].miou())}
    return result


def latency_rows(lat: dict) -> list[str]:
    main, base = lat["main"], lat["main"]["ort_fp32"]["median_s"]
    eager = main["pytorch_eager_fp32"]["median_s"]
    rows = [f"latency per {lat['crop'][0]}x{lat['crop'][1]} crop, batch 1 (options: separate rounds)",
            "| backend | median s/crop | min s/crop | speed-up vs ORT FP32 | vs PyTorch eager |",
            "|---|---:|---:|---:|---:|"]
    for name, r in list(main.items()) + list(lat["options"].items()):
        rows.append(f"| {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {base / r['median_s']:.2f}x | "
                    f"{eager / r['median_s']:.2f}x |")
    return rows


def attention_logit_max(fp32_path: Path, frames: Any, meta: Any) -> float:
    """Largest |Softmax input| of the FP32 model over the frames (FP16 overflows above 65504)."""
    import onnx
    import onnxruntime as ort

    from runtime.preprocess import normalize
    from runtime.tiling import extract_tiles

    model = onnx.load(str(fp32_path))
    soft = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in soft)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    peak = 0.0
    for sample in frames:
        tiles, _ = extract_tiles(normalize(sample.image, meta.mean, meta.std), meta.crop)
        for tile in tiles:
            outs = sess.run(soft, {meta.input_name: tile[None]})
            peak = max(peak, *(float(np.abs(o).max()) for o in outs))
    return peak


def table(results: dict) -> str:
    rows = []
    if "latency" in results:
        rows += latency_rows(results["latency"]) + [""]
    rows.append("| step (wall, incl. its ONNX Runtime verification) | seconds |")
    rows.append("|---|---:|")
    reused = results.get("reused", {})
    rows += [f"| {k}{' (reused, not rebuilt)' if reused.get(k) else ''} | {v:.1f} |"
             for k, v in results["walls"].items() if k != "verify_tiles"]
    if "agreement" in results:
        a = results["agreement"]
        rows += ["", f"agreement with FP32 on {a['frames']} val frames of {a['data']} ({a['model']}, crop "
                     f"{a['crop'][0]}x{a['crop'][1]}, INT8 calibrated on {a['calib_images']} train images; "
                     f"max |attention logit| {a['max_abs_attention_logit']:.1f}, FP16 max 65504):",
                 "| artifact | pixel agreement vs FP32 | mIoU |", "|---|---:|---:|"]
        rows += [f"| {k} | {100 * a[k]['agreement_vs_fp32']:.3f}% | {100 * a[k]['miou']:.2f} |"
                 for k in ("fp32", "fp16", "fp16_all", "int8_trt", "int8_ort", "int8_fp16")]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/benchmark.py", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="r50os8_cityscapes")
    ap.add_argument("--checkpoint", help="weights (default: seeded random init; speed does not depend on them)")
    ap.add_argument("--crop", help="HxW (default: the variant's crop)")
    ap.add_argument("--calib-data", default="data/synth_cityscapes")
    ap.add_argument("--calib-method", default="entropy")
    ap.add_argument("--calib-images", type=positive_int, default=8)
    ap.add_argument("--runs", type=positive_int, default=3)
    ap.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="artifacts/bench")
    ap.add_argument("--agreement-checkpoint")
    ap.add_argument("--agreement-model", default="r18os8_cityscapes")
    ap.add_argument("--agreement-crop")
    ap.add_argument("--agreement-calib-images", type=positive_int, default=64)
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args(argv)
    log = print
    from runtime.sysinfo import describe, machine_info

    log(f"machine: {describe()}")
    results: dict[str, Any] = {"model": args.model, "threads": args.threads, "machine": machine_info(),
                               "argv": list(argv if argv is not None else sys.argv[1:])}
    arts, results["walls"], model = make_artifacts(args, log)
    results["reused"] = args.reused
    if not args.skip_latency:
        results["latency"] = run_latency(args, arts, model, log)
    if args.agreement_checkpoint:
        results["agreement"] = agreement_study(args, log)
    from runtime.fileio import atomic_open

    with atomic_open(Path(args.out) / "benchmark.json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(table(results))
    print(f"wrote {Path(args.out) / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    from runtime.apps.cli import run_cli

    sys.exit(run_cli(main))
