"""One report per version (prepared once per process, cached on disk) and the printed matrix."""
from __future__ import annotations

import functools
from typing import Any

from tests.trt_bindings.prepare import (CUDA_PYTHON, TENSORRT, Unavailable, prepare_cuda, prepare_tensorrt,
                                        run_check)

ROUTE_ORDER = ("fp32", "fp16", "int8-trt", "int8-fp16", "implicit")
ENGINE_STEP_TRT = "10.3.0"      # the TensorRT next to each cuda-python for the engine-step check


@functools.lru_cache(maxsize=None)
def tensorrt_report(version: str) -> dict[str, Any] | str:
    """The check_tensorrt report of ``version``, or why it cannot run here."""
    try:
        env = prepare_tensorrt(version)
    except Unavailable as exc:
        return str(exc)
    return run_check("tests.trt_bindings.check_tensorrt", env)


@functools.lru_cache(maxsize=None)
def cuda_report(version: str) -> dict[str, Any] | str:
    try:
        env = prepare_cuda(version)
        extra = [prepare_tensorrt(ENGINE_STEP_TRT)]
    except Unavailable as exc:
        return str(exc)
    return run_check("tests.trt_bindings.check_cuda", env, extra)


def collect() -> tuple[dict[str, Any], dict[str, Any]]:
    return ({v: tensorrt_report(v) for v in TENSORRT}, {v: cuda_report(v) for v in CUDA_PYTHON})


def _route(r: dict[str, Any]) -> str:
    if "refused" in r:
        return "refused"
    if r["strongly_typed"]:
        return "typed"
    return "+".join(f for f in r["builder_flags"] if f != "OBEY_PRECISION_CONSTRAINTS") or "-"


def format_matrix(trt: dict[str, Any], cuda: dict[str, Any]) -> str:
    head = ["TensorRT", "EXPLICIT_BATCH", "STRONGLY_TYPED", "FP16/INT8 flags", "implicit INT8", *ROUTE_ORDER,
            "audit"]
    rows = [head]
    for version, r in trt.items():
        if isinstance(r, str):
            rows.append([version, f"skipped: {r}"])
            continue
        f, e = r["features"], r["enum"]
        audit = r["audit"]
        rows.append([version, str(e["EXPLICIT_BATCH"]), str(e["STRONGLY_TYPED"]),
                     "yes" if f["fp16_flag"] and f["int8_flag"] else "no", "yes" if f["implicit_int8"] else "no",
                     *[_route(r["routes"][k]) for k in ROUTE_ORDER],
                     f"{audit['names_checked']} names, {len(audit['missing_unguarded'])} unguarded missing, "
                     f"{len(audit['missing_guarded'])} guarded missing"])
    width = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(width[i]) for i, c in enumerate(row)) for row in rows]
    lines.append("routes: typed = strongly typed network, no builder precision flags; A+B = builder flags "
                 "(FP32 layers pinned where listed); refused = ToolkitError naming the other file; int8-trt = "
                 "the TensorRT 8.x INT8 file (_int8_trt), int8-fp16 = the strongly typed one (_int8_fp16)")
    for version, r in cuda.items():
        if isinstance(r, str):
            lines.append(f"cuda-python {version}: skipped: {r}")
            continue
        paths = ", ".join(p for p, ok in r["paths"].items() if ok)
        dev = r["device_properties"]
        lines.append(f"cuda-python {version}: imports {paths}; no driver -> {dev.get('raised', 'returned')}: "
                     f"{dev.get('message', dev.get('returned'))}; engine step (TensorRT {r.get('tensorrt')}): "
                     f"{r.get('engine_mode_auto')}")
    return "\n".join(lines)
