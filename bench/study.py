"""The peer study behind ``python export/benchmark.py`` (apps/peer_benchmark.py): artifacts,
interleaved latency rounds of every path, the agreement study and the table."""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.tables import format_table


@dataclasses.dataclass
class StudyOptions:
    """One peer-study run (``python export/benchmark.py``'s flags of the same names)."""

    model: str = "r50os8_cityscapes"
    out: str = "artifacts/bench"
    checkpoint: str | None = None
    crop: str | None = None
    frame: str | None = None
    calib_data: str = "data/synth_cityscapes"
    calib_method: str = "entropy"
    calib_images: int = 8
    runs: int = 3
    threads: int = 1
    skip: list[str] = dataclasses.field(default_factory=list)
    ort_options: bool = False
    agreement_checkpoint: str | None = None
    agreement_model: str = "r18os8_cityscapes"
    agreement_crop: str | None = None
    agreement_calib_images: int = 64
    reused: dict = dataclasses.field(default_factory=dict)      # filled by make_artifacts

def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def call_all(fn: Callable, inputs: list[np.ndarray]) -> float:
    """Seconds to run ``fn`` on every input (one crop, or the tiles of one frame) in turn."""
    t0 = time.perf_counter()
    for x in inputs:
        fn(x)
    return time.perf_counter() - t0


def latency_rounds(runners: list, inputs: list[np.ndarray], runs: int, log: Callable,
                   peaks: Callable[[], dict] | None = None) -> dict[str, Any]:
    """Build each runner (setup time apart), one warm-up each, then ``runs`` interleaved rounds.

    Every round runs every path once, in the same order, so a noisy neighbour hits all of them;
    the machine's peaks are re-measured in each round (``peaks``; the best of the rounds is the
    peak). The quietest round is the one with the smallest total time; its figures and each path's
    median are both reported.
    """
    fns: dict[str, Callable] = {}
    for r in runners:
        fns[r.name], r.setup_s = timed(r.build)
        warm = call_all(fns[r.name], inputs)
        log(f"  ready {r.name}: setup {r.setup_s:.1f} s, warm-up {warm:.2f} s {r.facts or ''}")
    rounds: list[dict[str, Any]] = []
    for i in range(runs):
        row: dict[str, Any] = {r.name: call_all(fns[r.name], inputs) for r in runners}
        if peaks:
            row["peaks"] = peaks()
        rounds.append(row)
        log(f"  round {i + 1}/{runs}: " + ", ".join(f"{r.name} {row[r.name]:.2f}" for r in runners))
    del fns
    quiet = min(range(runs), key=lambda i: sum(rounds[i][r.name] for r in runners))
    paths = {r.name: {"precision": r.precision, "owner": r.owner, "what": r.what, "setup_s": r.setup_s,
                      "facts": r.facts, "runs": [rd[r.name] for rd in rounds],
                      "median_s": statistics.median(rd[r.name] for rd in rounds),
                      "min_s": min(rd[r.name] for rd in rounds), "quietest_s": rounds[quiet][r.name]}
             for r in runners}
    measured = [rd["peaks"] for rd in rounds if rd.get("peaks")]
    best = {k: max(m[k] for m in measured) for k in measured[0]} if measured else None
    return {"paths": paths, "quietest_round": quiet + 1, "rounds": runs,
            "peaks": best, "peaks_all_rounds": [rd.get("peaks") for rd in rounds]}


def make_artifacts(args: StudyOptions, log: Callable) -> tuple[dict[str, Path], dict[str, float], Any, Any]:
    """FP32, FP16 (fp32-attention and all-fp16) and both INT8 artifacts, with wall times."""
    from export.chain import ChainRequest, export_chain
    from export.exporter import build_model
    from export.pipeline import CalibRequest
    from runtime.values import parse_hw

    req = ChainRequest(model=args.model, out=Path(args.out), checkpoint=args.checkpoint,
                       random_init=args.checkpoint is None, crop=parse_hw(args.crop) if args.crop else None,
                       data=args.calib_data, fp16=[("attention",), ()], verify_count=2, enforce=False,
                       why_not="benchmark", calib=CalibRequest(args.calib_data, args.calib_method, None,
                                                               args.calib_images))
    result = export_chain(req, log)
    roles = result.by_role()
    arts = {"fp32": roles["fp32"].path, "fp16": roles["fp16"].path, "fp16_all": roles["fp16_all"].path,
            "int8_trt": roles["int8-trt"].path, "int8_ort": roles["int8-ort"].path, "int8_fp16": roles["int8-fp16"].path}
    int8 = [roles[k] for k in ("int8-trt", "int8-ort", "int8-fp16")]
    args.reused = {"export_fp32": roles["fp32"].reused, "fp16_convert": roles["fp16"].reused,
                   "fp16_all_convert": roles["fp16_all"].reused, "calib_set": result.calib.reused,
                   "calibrate_quantize_verify": all(a.reused for a in int8)}
    return arts, result.walls, build_model(result.source), result.calib


def latency_inputs(args: StudyOptions, crop: tuple[int, int], mean: Any, std: Any) -> list[np.ndarray]:
    """One random crop, or (--frame HxW) the runtime tiler's tiles of one synthetic frame."""
    if not args.frame:
        return [np.random.default_rng(0).standard_normal((1, 3, *crop)).astype(np.float32)]
    from runtime.preprocess import synthetic_frame
    from runtime.values import parse_hw
    from runtime.preprocess import normalize
    from runtime.tiling import extract_tiles

    tiles, _ = extract_tiles(normalize(synthetic_frame(*parse_hw(args.frame, "--frame")), mean, std), crop)
    return [np.ascontiguousarray(t[None]) for t in tiles]


def run_latency(args: StudyOptions, arts: dict[str, Path], model: Any, calib: Any, log: Callable) -> dict:
    from bench.peers import build_runners, not_timed, ort_option_runners
    from bench.roofline import best_peaks, count_flops, machine_theoretical, remeasure
    from runtime.values import parse_hw

    crop = parse_hw(args.crop) if args.crop else tuple(model.variant.crop)
    ds = model.variant.dataset
    inputs = latency_inputs(args, crop, ds.mean, ds.std)
    flops = count_flops(model, crop) * len(inputs)
    log(f"model: {flops / 1e9:.1f} GFLOP per timed unit ({len(inputs)} crop(s) of {crop[0]}x{crop[1]})")
    t = args.threads
    runners = build_runners(arts, model, calib, t, inputs[0], set(args.skip))
    survey_rows, best = peak_survey(t, log)
    log("latency, interleaved rounds:")
    main = latency_rounds(runners, inputs, args.runs, log, lambda: remeasure(best, t))
    main["peaks"] = best_peaks(main["peaks_all_rounds"], survey_rows)
    out = {"main": main, "crop": list(crop), "frame": args.frame, "crops_per_unit": len(inputs),
           "flops_per_unit": flops, "threads": t, "not_timed": not_timed(set(args.skip)),
           "peak_survey": survey_rows, "peak_kernels": {p: f"{b['kernel']} {b['n']}^2" for p, b in best.items()},
           "theoretical": machine_theoretical(t)}
    if args.ort_options:
        log("ONNX Runtime options (separate rounds):")
        out["options"] = latency_rounds(ort_option_runners(arts, t), inputs, max(1, args.runs - 1), log)
    return out


def peak_survey(threads: int, log: Callable) -> tuple[list[dict], dict[str, dict]]:
    """Every GEMM kernel and size once (bench/roofline.py); the winner of each precision is re-timed
    in every round."""
    from bench.roofline import best_kernels, survey

    rows = survey(threads)
    best = best_kernels(rows)
    log("peak survey: " + ", ".join(f"{p} {b['rate']:.0f} ({b['kernel']} {b['n']}^2)" for p, b in best.items()))
    return rows, best


def agreement_study(args: StudyOptions, log: Callable) -> dict:
    """FP16 / INT8 vs FP32 artifacts of a trained model on the val frames, through the runtime tiler."""
    from export.chain import ChainRequest, export_chain
    from export.pipeline import CalibRequest
    from runtime.backends import open_backend
    from runtime.data import open_dataset
    from runtime.metrics import ConfusionMeter
    from runtime.tiling import Tiler
    from runtime.values import parse_hw

    req = CalibRequest(args.calib_data, args.calib_method, None, args.agreement_calib_images)
    result = export_chain(ChainRequest(
        model=args.agreement_model, out=Path(args.out) / "agreement", checkpoint=args.agreement_checkpoint,
        crop=parse_hw(args.agreement_crop) if args.agreement_crop else None, data=args.calib_data,
        fp16=[("attention",), ()], calib=req, enforce=False, why_not="agreement study"), log)
    roles = result.by_role()
    arts = {"fp32": roles["fp32"], "fp16": roles["fp16"], "fp16_all": roles["fp16_all"],
            "int8_trt": roles["int8-trt"], "int8_ort": roles["int8-ort"], "int8_fp16": roles["int8-fp16"]}
    path, meta = result.fp32.path, result.fp32.meta
    val = open_dataset(args.calib_data, split="val", label_ids_flag=None)
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


def attention_logit_max(fp32_path: Path, frames: Any, meta: Any) -> float:
    """Largest |Softmax input| of the FP32 model over the frames (FP16 overflows above 65504)."""
    import onnx

    from runtime.loaders import SessionFromOnnx
    from runtime.preprocess import normalize
    from runtime.tiling import extract_tiles

    model = onnx.load(str(fp32_path))
    soft = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in soft)
    sess = SessionFromOnnx(model)()
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
        from bench.report import latency_rows

        rows += latency_rows(results["latency"], results["machine"]) + [""]
    reused = results.get("reused", {})
    walls = [[f"{k}{' (reused, not rebuilt)' if reused.get(k) else ''}", f"{v:.1f}"]
             for k, v in results["walls"].items() if k != "verify_tiles"]
    rows.append(format_table(walls, ["step (wall, incl. its ONNX Runtime verification)", "seconds"], align="lr",
                             markdown=True))
    if "agreement" in results:
        a = results["agreement"]
        rows += ["", f"agreement with FP32 on {a['frames']} val frames of {a['data']} ({a['model']}, crop "
                     f"{a['crop'][0]}x{a['crop'][1]}, INT8 calibrated on {a['calib_images']} train images; "
                     f"max |attention logit| {a['max_abs_attention_logit']:.1f}, FP16 max 65504):",
                 format_table([[k, f"{100 * a[k]['agreement_vs_fp32']:.3f}%", f"{100 * a[k]['miou']:.2f}"]
                               for k in ("fp32", "fp16", "fp16_all", "int8_trt", "int8_ort", "int8_fp16")],
                              ["artifact", "pixel agreement vs FP32", "mIoU"], align="lr", markdown=True)]
    return "\n".join(rows)


def reprint(path: Path) -> int:
    """The table of a saved run, with the summary recomputed by the current report code."""
    from bench.report import summarise
    from runtime.errors import ToolkitError

    if not path.is_file():
        raise ToolkitError(f"benchmark JSON not found: {path}")
    results = json.loads(path.read_text())
    if "latency" in results:
        main_ = results["latency"]["main"]
        from bench.roofline import best_peaks

        if any(main_.get("peaks_all_rounds") or []):
            main_["peaks"] = best_peaks(main_["peaks_all_rounds"], results["latency"].get("peak_survey") or [])
        results["latency"]["summary"] = summarise(results["latency"])
    print(table(results))
    return 0
