"""Load test of a served frame model: N concurrent clients x M frames each, over HTTP.

    python -m apps.serve_load --url http://127.0.0.1:8000 --model r18os8_cityscapes_512x1024_frame \\
        --clients 8 --requests 50 --frame 256x512 --check artifacts/r18os8_cityscapes_512x1024.onnx

Every client sends whole RGB frames (a few seeded synthetic ones, in turn) and gets label maps back.
With ``--check ARTIFACT`` each answer is compared with the toolkit's in-process result (same
tiler, ONNX Runtime in this process). Prints clients, requests, failures, mismatches, throughput,
p50/p99 latency and the tile model's mean executed batch (the dynamic batcher at work); writes JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apps.cli import parse_hw, positive_int
from runtime.errors import ToolkitError
from runtime.tables import format_table


def synthetic_frames(h: int, w: int, count: int) -> list[np.ndarray]:
    from runtime.preprocess import synthetic_frame

    return [synthetic_frame(h, w, seed=i) for i in range(count)]


def reference_labels(artifact: str, frames: list[np.ndarray], stride: Any = None) -> list[np.ndarray]:
    """The toolkit's in-process label maps for ``frames`` (what the served model must return)."""
    from runtime.backends import open_backend
    from runtime.tiling import Tiler

    tiler = Tiler(stride=stride)
    with open_backend(artifact) as backend:
        return [tiler.labels(backend, f) for f in frames]


def tile_counts(url: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of ``model`` from Triton's statistics."""
    from runtime.triton.client import TritonHTTP

    client = TritonHTTP(url)
    try:
        stats = client.get_json(f"/v2/models/{model}/stats").get("model_stats", [{}])[0]
    finally:
        client.close()
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _client(url: str, model: str, frames: list, expected: list | None, n: int, cid: int, out: dict,
            lock: threading.Lock) -> None:
    from runtime.triton.client import TritonHTTP

    client = TritonHTTP(url, timeout=120.0)
    try:
        for i in range(n):
            k = (cid + i) % len(frames)
            t0 = time.perf_counter()
            try:
                labels = client.infer(model, [("frame", frames[k])], ["labels"])["labels"]
            except ToolkitError as exc:
                with lock:
                    out["failures"] += 1
                    out["errors"].setdefault(str(exc), 0)
                    out["errors"][str(exc)] += 1
                continue
            dt = time.perf_counter() - t0
            same = expected is None or np.array_equal(labels, expected[k])
            with lock:
                out["latency"].append(dt)
                out["mismatches"] += 0 if same else 1
    finally:
        client.close()


def load_test(url: str, model: str, frames: list[np.ndarray], clients: int, requests: int,
              expected: list[np.ndarray] | None = None, tile_model: str | None = None) -> dict[str, Any]:
    """Run the load; returns counts, throughput and latency percentiles (ms)."""
    out: dict[str, Any] = {"failures": 0, "mismatches": 0, "latency": [], "errors": {}}
    lock = threading.Lock()
    before = tile_counts(url, tile_model) if tile_model else (0, 0)
    threads = [threading.Thread(target=_client, args=(url, model, frames, expected, requests, c, out, lock), daemon=True)
               for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    try:
        after = tile_counts(url, tile_model) if tile_model and out["latency"] else before
    except ToolkitError:     # the server went away during the load: no batching figure
        after = before
    lat = np.asarray(out["latency"]) * 1e3
    tiles, execs = after[0] - before[0], after[1] - before[1]
    return {"model": model, "clients": clients, "requests": clients * requests, "ok": len(lat),
            "failures": out["failures"], "mismatches": out["mismatches"] if expected is not None else None,
            "seconds": seconds, "frames_per_s": len(lat) / seconds if seconds else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "tile_inferences": tiles, "tile_executions": execs,
            "mean_tile_batch": tiles / execs if execs else None, "errors": out["errors"]}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(r: dict[str, Any]) -> str:
    head = ["clients", "requests", "failures", "mismatches", "frames/s", "p50 ms", "p99 ms", "mean tile batch"]
    row = [str(r["clients"]), str(r["requests"]), str(r["failures"]), _fmt(r["mismatches"], "d"),
           _fmt(r["frames_per_s"], ".1f"), _fmt(r["p50_ms"], ".1f"), _fmt(r["p99_ms"], ".1f"),
           _fmt(r["mean_tile_batch"], ".2f")]
    return format_table([row], head, align="r", markdown=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m apps.serve_load", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="Triton server URL")
    p.add_argument("--model", required=True, help="served frame model (NAME_frame)")
    p.add_argument("--clients", type=positive_int, default=8)
    p.add_argument("--requests", type=positive_int, default=50, help="frames per client")
    p.add_argument("--frame", default="256x512", help="synthetic frame size HxW")
    p.add_argument("--distinct", type=positive_int, default=4, help="distinct synthetic frames")
    p.add_argument("--check", help="artifact to compare every answer with (in-process toolkit result)")
    p.add_argument("--stride", help="tiling stride HxW for --check (must match the frame model's)")
    p.add_argument("--out", default="runs/serve_load.json", help="results JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.fileio import atomic_open, ensure_writable_dir
    from runtime.sysinfo import describe, machine_info
    from runtime.triton.client import TritonHTTP

    ensure_writable_dir(Path(args.out).parent)
    client = TritonHTTP(args.url)
    try:
        config = client.config(args.model)
    finally:
        client.close()
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    if params.get("role") != "frame":
        raise ToolkitError(f"{args.model} is not a frame model", fix=f"use {args.model}_frame")
    frames = synthetic_frames(*parse_hw(args.frame, "--frame"), args.distinct)
    expected = reference_labels(args.check, frames, parse_hw(args.stride, "--stride") if args.stride else None) \
        if args.check else None
    result = load_test(args.url, args.model, frames, args.clients, args.requests, expected, params.get("tile_model"))
    result.update(frame=args.frame, check=args.check, machine=machine_info())
    with atomic_open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"machine: {describe(result['machine'])}")
    print(f"model {args.model} at {args.url}, frames {args.frame}, {args.distinct} distinct")
    print(table(result))
    for message, count in result["errors"].items():
        print(f"error x{count}: {message}", file=sys.stderr)
    print(f"results: {args.out}")
    return 1 if result["failures"] or result["mismatches"] else 0
