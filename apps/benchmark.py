"""Side-by-side speed and memory of backends on full frames, with the same tiling.

    python -m runtime.benchmark --reference r50os8_cityscapes --artifacts a.onnx b_int8.onnx \\
        --frame 1024x2048 --warmup 1 --iters 3 [--whole] [--autocast bf16] --out results.json

Per backend: latency per tile (p50/p90/p99 of every backend call during the timed frames, divided
by the batch), tiles/s, full frames/s with tiling, tiling overhead (preprocess + stitch + argmax as
a share of frame time) and peak resident memory (``ru_maxrss``). Each backend runs in its own
subprocess by default so peak memory is its own (``--no-isolate`` runs them in this process; RSS is
then a running high-water mark). ``--whole`` adds the PyTorch reference run on the whole frame
at once, to compare its peak memory with tiled inference. Absolute times on a shared machine are
noisy; ratios from one run are the figures to quote.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apps.cli import (ALSO_OPENVINO_HELP, OV_PRECISION_HELP, OV_PRECISIONS, also_openvino_files, non_negative_int,
                      parse_hw, positive_int)
from runtime.errors import ToolkitError
from runtime.preprocess import synthetic_frame
from runtime.sysinfo import describe, machine_info
from runtime.tables import format_table

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark in MiB (Linux: KiB units; macOS: bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except OSError:
        return None


class TimedBackend:
    """Delegates to a backend and records the wall time of every call."""

    def __init__(self, backend: Any) -> None:
        self._b = backend
        self.calls: list[tuple[float, int]] = []   # (seconds, tiles in the call)
        self.recording = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._b, name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self._b(batch)
        if self.recording:
            self.calls.append((time.perf_counter() - t0, batch.shape[0]))
        return out


def measure(spec: dict) -> dict[str, Any]:
    """Open one backend from ``spec`` and time ``iters`` frames after ``warmup`` frames."""
    from runtime.backends import open_backend
    from runtime.tiling import Tiler

    frame = synthetic_frame(*spec["frame"])
    t0 = time.perf_counter()
    backend = open_backend(spec["artifact"], backend=spec.get("backend", "auto"), **spec.get("options", {}))
    with backend:
        open_s = time.perf_counter() - t0
        rss_open = current_rss_mb()
        timed = TimedBackend(backend)
        tiler = Tiler(stride=spec.get("stride"), mode=spec["mode"])
        for _ in range(spec["warmup"]):
            tiler.labels(timed, frame)
        timed.recording = True
        frames = []
        for _ in range(spec["iters"]):
            tiler.labels(timed, frame)
            frames.append(dict(tiler.last_timing))
        info = backend.describe()
        label = backend.label + spec.get("suffix", "")
    return summarise(label, info, timed.calls, frames, open_s, rss_open)


def summarise(label: str, info: dict, calls: list, frames: list[dict], open_s: float,
              rss_open: float | None) -> dict[str, Any]:
    per_tile = np.asarray([s / n for s, n in calls]) * 1e3
    total = np.asarray([f["total"] for f in frames])
    overhead = sum(f["preprocess"] + f["stitch"] for f in frames) / max(sum(f["total"] for f in frames), 1e-12)
    p = np.percentile(per_tile, [50, 90, 99]) if per_tile.size else [float("nan")] * 3
    return {"label": label, **info, "tiles_per_frame": int(frames[0]["tiles"]) if frames else 0,
            "ms_per_tile_p50": float(p[0]), "ms_per_tile_p90": float(p[1]), "ms_per_tile_p99": float(p[2]),
            "tiles_per_s": float(1e3 / p[0]) if per_tile.size else None,
            "ms_per_frame_p50": float(np.median(total) * 1e3), "frames_per_s": float(1.0 / np.median(total)),
            "tiling_overhead_pct": float(overhead * 100.0), "open_s": open_s,
            "rss_after_open_mb": rss_open, "peak_rss_mb": peak_rss_mb(), "frames_timed": len(frames)}


def run_isolated(spec: dict) -> dict[str, Any]:
    """``measure`` in a fresh interpreter so peak RSS belongs to this backend alone."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-m", "apps.benchmark", "--worker", json.dumps(spec), "--worker-out", str(out)]
        proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not out.is_file():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit {proc.returncode}"
            return {"label": spec["artifact"] + spec.get("suffix", ""), "error": last[len("error: "):] if last.startswith("error: ") else last}
        return json.loads(out.read_text())


def artifact_options(args: argparse.Namespace, artifact: str) -> dict[str, Any]:
    """Backend options for one artifact from --providers / --threads / --ov-precision."""
    from runtime.backends import backend_for

    kind = backend_for(artifact, args.backend)
    if args.ov_precision and kind != "openvino" and args.also_openvino is None:
        raise ToolkitError("--ov-precision only applies to OpenVINO", fix="add --backend openvino or --also-openvino")
    if kind == "openvino":
        return {"threads": args.threads, "precision": args.ov_precision or "f32"}
    if kind == "onnxruntime":
        return {"providers": args.providers, "threads": args.threads}
    return {}


def build_specs(args: argparse.Namespace) -> list[dict]:
    frame = list(parse_hw(args.frame, "--frame"))
    stride = list(parse_hw(args.stride, "--stride")) if args.stride else None
    base = {"frame": frame, "mode": args.mode, "stride": stride, "warmup": args.warmup, "iters": args.iters}
    specs = []
    if args.reference:
        opts = {"checkpoint": args.checkpoint, "device": args.device, "threads": args.threads,
                "crop": list(parse_hw(args.crop)) if args.crop else None, "batch": args.batch}
        specs.append({**base, "artifact": args.reference, "backend": "torch", "options": opts})
        for ac in args.autocast or []:
            specs.append({**base, "artifact": args.reference, "backend": "torch", "options": {**opts, "autocast": ac}})
        if args.whole:
            specs.append({**base, "artifact": args.reference, "backend": "torch", "mode": "whole",
                          "suffix": " (whole frame)", "options": {**opts, "crop": frame}})
    ov_files = also_openvino_files(args.also_openvino, args.artifacts, args.backend)
    ov_opts = {"threads": args.threads, "precision": args.ov_precision or "f32"}
    for a in args.artifacts:
        specs.append({**base, "artifact": a, "backend": args.backend, "options": artifact_options(args, a)})
        if a in ov_files:
            specs.append({**base, "artifact": a, "backend": "openvino", "options": ov_opts})
    specs += [{**base, "artifact": f, "backend": "openvino", "options": ov_opts}
              for f in ov_files if f not in args.artifacts]
    if not specs:
        raise ToolkitError("nothing to benchmark", fix="pass --artifacts FILE ... and/or --reference VARIANT")
    from runtime.backends import open_backend
    for s in specs:   # fail fast on a bad path / name / option, before any subprocess starts
        open_backend(s["artifact"], backend=s.get("backend", "auto"), **s["options"])
        if s["backend"] != "torch" and not s["artifact"].startswith("triton://") and not Path(s["artifact"]).is_file():
            raise ToolkitError(f"artifact not found: {s['artifact']}")
    return specs


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def print_table(results: list[dict]) -> None:
    head = ["backend", "prec", "ms/tile p50", "p90", "p99", "tiles/s", "frames/s", "x ref", "overhead %", "peak RSS MB"]
    rows = [head]
    for r in results:
        if r.get("error"):
            rows.append([r["label"], "-", "error: " + r["error"]] + [""] * (len(head) - 3))
            continue
        rows.append([r["label"], r.get("precision", "-"), _fmt(r["ms_per_tile_p50"], ".1f"), _fmt(r["ms_per_tile_p90"], ".1f"),
                     _fmt(r["ms_per_tile_p99"], ".1f"), _fmt(r["tiles_per_s"], ".2f"), _fmt(r["frames_per_s"], ".3f"),
                     _fmt(r.get("speedup_vs_reference"), ".2f"), _fmt(r["tiling_overhead_pct"], ".2f"),
                     _fmt(r["peak_rss_mb"], ".0f")])
    print(format_table(rows[1:], head, align="lr"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", nargs="*", default=[], help=".onnx / .engine files")
    p.add_argument("--reference", "--model", dest="reference", help="PyTorch variant to include (eager FP32)")
    p.add_argument("--checkpoint", help="checkpoint for the reference (random init if omitted: speed only)")
    p.add_argument("--autocast", nargs="*", choices=("fp16", "bf16"), help="also run the reference under autocast (bf16 is fast only with AVX512-BF16/AMX)")
    p.add_argument("--whole", action="store_true", help="also run the reference on the whole frame (memory)")
    p.add_argument("--frame", default="1024x2048", help="synthetic frame size HxW")
    p.add_argument("--crop", help="reference crop HxW (default: the variant's crop)")
    p.add_argument("--stride", help="tiling stride HxW (default: overlap >= 1/3 of the crop)")
    p.add_argument("--mode", default="tiled", choices=("tiled", "whole", "resize"))
    p.add_argument("--batch", type=positive_int, default=1, help="tiles per PyTorch call")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed frames per backend")
    p.add_argument("--iters", type=positive_int, default=3, help="timed frames per backend")
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | openvino | tensorrt | triton for --artifacts")
    p.add_argument("--also-openvino", nargs="*", metavar="FILE", help=ALSO_OPENVINO_HELP)
    p.add_argument("--ov-precision", choices=OV_PRECISIONS, help=OV_PRECISION_HELP)
    p.add_argument("--providers", help="ONNX Runtime providers: cpu (default), cuda, tensorrt")
    p.add_argument("--threads", type=positive_int, help="threads for ONNX Runtime, OpenVINO and PyTorch")
    p.add_argument("--device", default="cpu", help="reference device")
    p.add_argument("--no-isolate", action="store_true", help="run every backend in this process")
    p.add_argument("--out", default="runs/benchmark.json", help="results JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        result = measure(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    from runtime.fileio import atomic_open, ensure_writable_dir

    ensure_writable_dir(Path(args.out).parent)
    results = []
    for spec in build_specs(args):
        print(f"benchmark: {spec['artifact']}{spec.get('suffix', '')} ...", file=sys.stderr)
        results.append(measure(spec) if args.no_isolate else run_isolated(spec))
    ref = next((r for r in results if r.get("backend") == "torch" and not r.get("error")), None)
    for r in results:
        if ref and not r.get("error"):
            r["speedup_vs_reference"] = r["frames_per_s"] / ref["frames_per_s"]
    report = {"frame": args.frame, "mode": args.mode, "warmup": args.warmup, "iters": args.iters,
              "isolated": not args.no_isolate, "machine": machine_info(), "results": results}
    with atomic_open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"machine: {describe(report['machine'])}")
    print_table(results)
    print(f"results: {args.out}")
    return 1 if any(r.get("error") for r in results) else 0
