"""Where the time of an ONNX artifact goes in ONNX Runtime on this CPU: kernel time per operator
type and the slowest nodes, from ONNX Runtime's own profiler (or, ``--backend openvino``, OpenVINO's
per-layer counters: which layers it fused into integer kernels).

    python -m runtime.profile artifacts/model_int8_ort.onnx [more.onnx] --runs 40 --threads 2 [--top 12]
    python -m runtime.profile --backend openvino [--ov-precision bf16] model_int8_trt.onnx nncf.xml --runs 5

Each artifact runs ``--runs`` times on one seeded random batch of its static input shape (after
``--warmup`` untimed runs) in a session like the runtime's (all graph optimisations, the given
threads); the profiler's per-node kernel times are summed per operator type and per node and
divided by the runs. The nodes are ONNX Runtime's, after its fusions (``QLinearConv``,
``ReorderOutput``, ...), so this shows what the CPU actually executes: e.g. why an INT8 file with a
quantised softmax is slower than one with a float softmax. Kernel times leave out the time between
kernels, so the total is below the wall time per run (both are printed).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from apps.cli import non_negative_int, positive_int
from runtime.denormals import flush_denormals
from runtime.errors import ToolkitError
from runtime.fileio import atomic_open, ensure_writable_dir
from runtime.loaders import SessionFromOnnx
from runtime.sysinfo import describe, machine_info


def profile_artifact(path: str, runs: int = 20, warmup: int = 3, threads: int | None = None,
                     flush: bool = True) -> dict[str, Any]:
    """``{"ops": {op: ms/run}, "nodes": [[op, node, ms/run], ...], "kernel_ms", "wall_ms"}``, slowest first."""
    from runtime.artifact import read_onnx_meta

    try:
        meta = read_onnx_meta(Path(path))
    except ToolkitError:                # a plain ONNX file: its own input shape
        meta = None
    with tempfile.TemporaryDirectory(prefix="ort_profile_") as tmp:
        # as the runtime's backend (all optimisations, denormals flushed: see runtime.denormals); log
        # severity 4: a file that fails to load raises the loader's error, no profiler complaint
        sess = SessionFromOnnx(path, threads=threads, optimization="all", flush_denormals=flush,
                               profile=os.path.join(tmp, "profile"), log_severity=4)()
        inp = _float_input(sess, path)
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if meta is not None and len(shape) == 4:
            shape = [meta.batch, 3, *meta.crop]
        x = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(FLOAT_INPUTS[inp.type])}
        with flush_denormals(flush):
            for _ in range(warmup):
                sess.run(None, x)
            t0 = time.perf_counter()
            for _ in range(runs):
                sess.run(None, x)
            wall = (time.perf_counter() - t0) * 1e3 / runs
        events = json.loads(Path(sess.end_profiling()).read_text())
    return summarise(events, runs, warmup, wall)


FLOAT_INPUTS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def profile_openvino(path: str, runs: int = 20, warmup: int = 3, threads: int | None = None,
                     precision: str = "f32") -> dict[str, Any]:
    """The same figures from OpenVINO's per-layer counters (``PERF_COUNT``): time per executed layer
    type and kernel (e.g. ``Convolution brgconv_avx512_I8`` vs ``MatMul brgemm_avx512_f32``), i.e. which
    layers OpenVINO fused into integer kernels. ``path``: any model OpenVINO reads (.onnx, or an .xml
    IR such as an NNCF-quantized model); ``precision``: the float layers' hint (f32 | bf16 | f16)."""
    from runtime.errors import require

    ov = require("openvino", "OpenVINO is not installed", fix="pip install -e .[openvino]")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": True, "NUM_STREAMS": 1,
              "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    shape = [d if d > 0 else 1 for d in compiled.inputs[0].get_partial_shape().get_min_shape()]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        request.infer({0: x})
    ops: Counter = Counter()
    nodes: Counter = Counter()
    t0 = time.perf_counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            ms = info.real_time.total_seconds() * 1e3
            ops[f"{info.node_type} {info.exec_type}"] += ms
            nodes[(f"{info.node_type} {info.exec_type}", info.node_name)] += ms
    wall = (time.perf_counter() - t0) * 1e3 / runs
    return {"ops": {op: ms / runs for op, ms in ops.most_common()},
            "nodes": [[op, name, ms / runs] for (op, name), ms in nodes.most_common()],
            "kernel_ms": sum(ops.values()) / runs, "wall_ms": wall, "runs": runs}


def _float_input(sess: Any, path: str) -> Any:
    """The session's one input, which must take floats: the profile feeds a seeded random float batch."""
    inputs = sess.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in FLOAT_INPUTS:
        found = ", ".join(f"{i.name}: {i.type}" for i in inputs)
        raise ToolkitError(f"cannot profile {path}: it needs one float input (the profile feeds a random float "
                           "batch)", found=found, fix="profile a toolkit ONNX artifact (one float32 image input)")
    return inputs[0]


def summarise(events: list[dict], runs: int, skip: int, wall_ms: float) -> dict[str, Any]:
    """Per-op and per-node ms/run from ONNX Runtime profiler events, leaving out the first ``skip``
    runs (the profiled session's own warm-up)."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    cut = starts[skip] if len(starts) > skip else 0
    ops: Counter = Counter()
    nodes: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e.get("ts", 0) >= cut:
            op = e.get("args", {}).get("op_name", "?")
            ops[op] += e["dur"]
            nodes[(op, e["name"][:-len("_kernel_time")])] += e["dur"]
    per_run = 1e-3 / runs
    return {"ops": {op: us * per_run for op, us in ops.most_common()},
            "nodes": [[op, name, us * per_run] for (op, name), us in nodes.most_common()],
            "kernel_ms": sum(ops.values()) * per_run, "wall_ms": wall_ms, "runs": runs}


def report_lines(path: str, prof: dict[str, Any], top: int) -> list[str]:
    total = prof["kernel_ms"] or 1.0
    lines = [f"{path}: {prof['wall_ms']:.2f} ms per run (wall), {prof['kernel_ms']:.2f} ms in kernels, "
             f"{prof['runs']} runs", "  by operator type:"]
    lines += [f"    {op:<28} {ms:8.3f} ms  {100 * ms / total:5.1f} %" for op, ms in list(prof["ops"].items())[:top]]
    lines.append(f"  slowest {min(top, len(prof['nodes']))} nodes:")
    lines += [f"    {op:<22} {name[:72]:<72} {ms:8.3f} ms" for op, name, ms in prof["nodes"][:top]]
    return lines


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m runtime.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", nargs="+", help=".onnx files (--backend openvino: also OpenVINO .xml models)")
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"),
                    help="whose profiler: ONNX Runtime's kernels (default) or OpenVINO's per-layer counters")
    ap.add_argument("--ov-precision", choices=("f32", "bf16", "f16"), default="f32",
                    help="--backend openvino: precision of the float layers (default f32)")
    ap.add_argument("--runs", type=positive_int, default=20, help="profiled runs per artifact (default 20)")
    ap.add_argument("--warmup", type=non_negative_int, default=3, help="untimed runs first (default 3)")
    ap.add_argument("--threads", type=positive_int, help="ONNX Runtime intra-op threads (default: its own)")
    ap.add_argument("--top", type=positive_int, default=12, help="operator types and nodes listed (default 12)")
    ap.add_argument("--no-flush-denormals", action="store_true",
                    help="keep IEEE denormal floats (the runtime flushes them to zero: see runtime/denormals.py)")
    ap.add_argument("--out", help="also write the figures as JSON")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [p for p in args.artifacts if not Path(p).is_file()]
    if missing:
        raise ToolkitError(f"ONNX file not found: {missing[0]}", fix="check the path or export it first")
    if args.backend == "openvino" and args.no_flush_denormals:
        raise ToolkitError("--no-flush-denormals applies to --backend onnxruntime only")
    if args.out:                                  # before any profiling: a bad --out must not waste the run
        if Path(args.out).is_dir():
            raise ToolkitError(f"--out {args.out} is a folder", fix="name a JSON file, e.g. --out profile.json")
        ensure_writable_dir(Path(args.out).parent)
    info = machine_info()
    print(f"machine: {describe(info)}")
    results = {}
    for path in args.artifacts:
        if args.backend == "openvino":
            results[path] = profile_openvino(path, args.runs, args.warmup, args.threads, args.ov_precision)
        else:
            results[path] = profile_artifact(path, args.runs, args.warmup, args.threads, not args.no_flush_denormals)
        print("\n".join(report_lines(path, results[path], args.top)))
    if args.out:
        with atomic_open(Path(args.out), "w") as f:
            json.dump({"machine": info, "threads": args.threads, "artifacts": results}, f, indent=1)
    return 0
