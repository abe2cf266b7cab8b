"""Pipelining benchmark for the video demo: end-to-end FPS vs the backend's pure inference rate.

    python -m runtime.video_benchmark data/drive.mp4 --model artifacts/r18os8_cityscapes_128x256.onnx \
        [--mode tiled|resize] [--max-frames 100] [--json runs/video_benchmark.json] [demo flags]

Takes the demo's own flags (same backend, tiler and renderer). On the same frames and in one run:
  * sequential reference, frames already decoded in memory: ``tiler.labels`` per frame, giving the
    backend-only rate (sum of pure backend-call time) and the tiler rate (+ normalise/tile/stitch);
  * the demo pipeline end to end (decode -> inference -> overlay/HUD -> record to a temp file);
interleaved ref, pipe, ref, pipe, ..., ref (``--rounds`` pipelines); each pipeline run is compared
with the references on both sides of it and the median is reported (robust to a drifting machine).
Ratio = end-to-end FPS / backend-only FPS; the target is >= 0.9 (pipelining hides decode, render
and recording behind inference). A source must be a file or folder (every frame processed).
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence


import numpy as np

import apps.video_demo as demo
from apps.cli import non_negative_int, parse_hw, positive_int
from runtime.errors import ToolkitError
from runtime.tables import format_table
from runtime.video_io import open_source, parse_source


def load_frames(args: Any, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of the source, decoded (RGB)."""
    source = open_source(parse_source(args.source, False), timeout_s=args.timeout)
    frames = []
    try:
        while len(frames) < n:
            frame = source.read()
            if frame is None:
                break
            frames.append(frame)
    finally:
        source.close()
    if not frames:
        raise ToolkitError(f"no frames could be read from {args.source}")
    return frames


def sequential(backend: Any, tiler: Any, frames: list[np.ndarray], warmup: int) -> dict[str, float]:
    """Backend-only and tiler FPS for frames in memory, one after the other, in a worker thread.

    A worker thread like the pipeline's: a CPU runtime can behave very differently in the main
    thread (PyTorch's OpenMP team spin-waits there; on a loaded 2-core machine that cost 100x).
    """
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out.update(_sequential(backend, tiler, frames, warmup))
        except BaseException as exc:  # re-raised in the caller
            out["error"] = exc

    thread = threading.Thread(target=work, name="reference")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out


def _sequential(backend: Any, tiler: Any, frames: list[np.ndarray], warmup: int) -> dict[str, float]:
    for frame in frames[:warmup]:
        tiler.labels(backend, frame)
    infer = total = 0.0
    for frame in frames:
        t0 = time.perf_counter()
        tiler.labels(backend, frame)
        total += time.perf_counter() - t0
        infer += tiler.last_timing["infer"]
    n = len(frames)
    return {"backend_fps": n / infer, "tiler_fps": n / total, "tiles_per_frame": tiler.last_timing["tiles"]}


def make_tiler(args: Any) -> Any:
    from runtime.tiling import Tiler

    return Tiler(stride=parse_hw(args.stride, "--stride") if args.stride else None, batch=None, mode=args.mode)


def pipeline_fps(args: Any, backend: Any, tmp: str) -> Any:
    """One end-to-end run of the demo pipeline (decode, infer, render, record); returns its Stats."""
    args.output = args.output or str(Path(tmp) / "bench.mp4")
    spec = parse_source(args.source, False)
    return demo.run(args, demo.make_source(spec, args, threading.Event()), backend, threading.Event())


def measure(args: Any, warmup: int, rounds: int) -> dict[str, Any]:
    """Interleave reference and pipeline runs: ref, pipe, ref, pipe, ..., ref (``rounds`` pipes).

    Each pipeline run is compared with the mean of the reference runs just before and after it,
    and the median of those ratios is reported, so a drifting, shared machine skews it little.
    """
    frames = load_frames(args, args.max_frames)
    args.max_frames = len(frames)
    backend = demo.open_model(args)
    refs: list[dict[str, float]] = []
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds + 1):
            with backend:
                refs.append(sequential(backend, make_tiler(args), frames, warmup))
                label = getattr(backend, "label", backend.name)
            if i < rounds:
                stats = pipeline_fps(args, backend, tmp)
                runs.append({"end_to_end_fps": stats.fps, "pipeline_inference_fps": stats.infer_fps,
                             "mean_latency_ms": stats.mean_latency_ms})
    for i, run in enumerate(runs):
        backend_fps = (refs[i]["backend_fps"] + refs[i + 1]["backend_fps"]) / 2
        tiler_fps = (refs[i]["tiler_fps"] + refs[i + 1]["tiler_fps"]) / 2
        run.update(backend_fps=backend_fps, tiler_fps=tiler_fps,
                   ratio_vs_backend=run["end_to_end_fps"] / backend_fps,
                   ratio_vs_tiler=run["end_to_end_fps"] / tiler_fps)
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    return {"backend": label, "mode": args.mode, "frames": len(frames), "rounds": rounds,
            "frame_hw": list(frames[0].shape[:2]), "tiles_per_frame": refs[0]["tiles_per_frame"],
            **med, "runs": runs, "reference_runs": refs, "command": " ".join(sys.argv)}


def print_table(r: dict[str, Any]) -> None:
    head = ("backend", "mode", "frames", "tiles/frame", "backend-only FPS", "tiler FPS", "end-to-end FPS",
            "e2e/backend", "e2e/tiler")
    row = (r["backend"], r["mode"], str(r["frames"]), f"{r['tiles_per_frame']:.0f}", f"{r['backend_fps']:.1f}",
           f"{r['tiler_fps']:.1f}", f"{r['end_to_end_fps']:.1f}", f"{r['ratio_vs_backend']:.2f}",
           f"{r['ratio_vs_tiler']:.2f}")
    print(format_table([row], head, rule=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = demo.build_parser()
    parser.prog = "python -m runtime.video_benchmark"
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--warmup", type=non_negative_int, default=5, help="untimed frames before each reference run")
    parser.add_argument("--rounds", type=positive_int, default=3, help="pipeline runs, interleaved with references")
    parser.set_defaults(max_frames=100)
    args = parser.parse_args(argv)
    demo.check_args(args)
    if args.show or args.live:
        raise ToolkitError("the benchmark runs headless on a file or folder", fix="drop --show / --live")
    result = measure(args, args.warmup, args.rounds)
    print_table(result)
    if args.json:
        from runtime.fileio import atomic_open

        with atomic_open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0
