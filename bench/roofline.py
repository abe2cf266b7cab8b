"""Achieved vs peak: the model's FLOPs (counted once) and this machine's measured and theoretical peaks.

- Model FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of the PyTorch
  model on meta tensors (no arithmetic is done; 2 FLOPs per multiply-add, convolutions and matmuls
  only, which is where all but a sliver of the work is).
- Measured peak, per precision: the best of several GEMM kernels and sizes (:data:`KERNELS`,
  :data:`GEMM_SIZES`), because no one library is the fastest everywhere: on an AVX-512 Zen CPU
  ``torch.mm`` (MKL sgemm) reached 181 GFLOP/s while ONNX Runtime and OpenVINO ran the model itself
  at 322-325 GFLOP/s. FP32: torch.mm, numpy (its BLAS), ONNX Runtime MatMul (MLAS), OpenVINO MatMul
  (oneDNN). BF16, only where the CPU computes it natively (AVX512-BF16 / AMX): torch.mm on bf16,
  OpenVINO MatMul with the bf16 hint. INT8 (VNNI / AMX-INT8 where the CPU has them): ONNX Runtime
  MatMulInteger u8 x s8, OpenVINO's INT8 MatMul (a Q/DQ MatMul it fuses), ``torch._int_mm`` s8 x s8.
  INT8 rates are in GOP/s (2 ops per multiply-add), the unit an INT8 network's rate is read in.
  :func:`survey` times every kernel and size once; each benchmark round re-times the winner of each
  precision (:func:`remeasure`) and the best of the rounds is the peak.
- Theoretical peak (:func:`theoretical_peaks`): FMA units x vector lanes x ops per lane x clock x
  cores, per ISA, to check the measured one against (assumptions in :func:`theoretical_peaks`).

All measurements use ``threads`` threads, like the benchmark. A model rate above the measured peak
raises the peak to that rate (bench/report.py says so), so no table shows more than 100 %.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

GEMM_SIZES = (1024, 2048)
Call = Callable[[], Any]


def count_flops(model: Any, crop: tuple[int, int]) -> float:
    """FLOPs of one (1, 3, H, W) forward pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta_model = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty((1, 3, *crop), device="meta"))
    return float(counter.get_total_flops())


def _best(fn: Call, budget_s: float, min_reps: int = 3) -> float:
    """Fastest single call of ``fn`` after one warm-up, over at least ``min_reps`` calls / ``budget_s``."""
    fn()
    best, start, reps = float("inf"), time.perf_counter(), 0
    while reps < min_reps or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


# -- the GEMM kernels: each builder takes (n, threads) and returns a no-argument call --------------
def _torch_mm(dtype: str) -> Callable[[int, int], Call]:
    def make(n: int, threads: int) -> Call:
        import torch

        torch.set_num_threads(threads)
        if dtype == "int8":
            a, b = (torch.randint(-127, 128, (n, n), dtype=torch.int8) for _ in range(2))
            return lambda: torch._int_mm(a, b)
        a, b = (torch.randn(n, n).to(getattr(torch, dtype)) for _ in range(2))
        return lambda: torch.mm(a, b)

    return make


def _numpy_mm(n: int, threads: int) -> Call:
    """numpy's BLAS, limited to ``threads`` with threadpoolctl (without it: only at all cores)."""
    import os

    a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in range(2))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if threads < (os.cpu_count() or 1):
            raise RuntimeError("threadpoolctl missing: numpy's BLAS threads cannot be limited") from None
        return lambda: a @ b

    def call() -> Any:
        with threadpool_limits(threads, user_api="blas"):
            return a @ b

    return call


def gemm_onnx(kind: str, n: int) -> Any:
    """An n x n GEMM as ONNX: ``matmul`` (float32), ``integer`` (MatMulInteger u8 x s8 -> s32) or
    ``qdq`` (float32 in, Q/DQ u8 activations and s8 weights around a MatMul: the pattern INT8
    compilers fuse into an integer GEMM)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (n, n), dtype=np.int8) if kind != "matmul" else \
        rng.standard_normal((n, n)).astype(np.float32)
    inits = [numpy_helper.from_array(weights, "w")]
    x_type = TensorProto.UINT8 if kind == "integer" else TensorProto.FLOAT
    y_type = TensorProto.INT32 if kind == "integer" else TensorProto.FLOAT
    if kind == "qdq":
        inits += [numpy_helper.from_array(np.array(v, dt), k)
                  for k, v, dt in (("s", 0.05, np.float32), ("zu", 0, np.uint8), ("zs", 0, np.int8))]
        nodes = [helper.make_node("QuantizeLinear", ["a", "s", "zu"], ["aq"]),
                 helper.make_node("DequantizeLinear", ["aq", "s", "zu"], ["ad"]),
                 helper.make_node("DequantizeLinear", ["w", "s", "zs"], ["wd"]),
                 helper.make_node("MatMul", ["ad", "wd"], ["y"])]
    else:
        nodes = [helper.make_node("MatMulInteger" if kind == "integer" else "MatMul", ["a", "w"], ["y"])]
    graph = helper.make_graph(nodes, f"gemm_{kind}", [helper.make_tensor_value_info("a", x_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gemm_input(kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "integer":
        return rng.integers(0, 256, (n, n), dtype=np.uint8)
    return rng.standard_normal((n, n)).astype(np.float32)


def _ort(kind: str) -> Callable[[int, int], Call]:
    def make(n: int, threads: int) -> Call:
        from runtime.loaders import SessionFromOnnx

        sess, x = SessionFromOnnx(gemm_onnx(kind, n), threads=threads)(), _gemm_input(kind, n)
        return lambda: sess.run(None, {"a": x})

    return make


def _openvino(kind: str, hint: str) -> Callable[[int, int], Call]:
    def make(n: int, threads: int) -> Call:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(gemm_onnx(kind, n).SerializeToString(), b"")
        request = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                    "INFERENCE_PRECISION_HINT": hint}).create_infer_request()
        x = _gemm_input(kind, n)
        return lambda: request.infer({0: x})

    return make


KERNELS: dict[str, list[tuple[str, Callable[[int, int], Call]]]] = {
    "fp32": [("torch.mm f32", _torch_mm("float32")), ("numpy matmul f32", _numpy_mm),
             ("ONNX Runtime MatMul f32", _ort("matmul")), ("OpenVINO MatMul f32", _openvino("matmul", "f32"))],
    "bf16": [("torch.mm bf16", _torch_mm("bfloat16")), ("OpenVINO MatMul bf16", _openvino("matmul", "bf16"))],
    "int8": [("ONNX Runtime MatMulInteger u8*s8", _ort("integer")),
             ("OpenVINO INT8 MatMul (Q/DQ) u8*s8", _openvino("qdq", "f32")),
             ("torch._int_mm s8*s8", _torch_mm("int8"))],
}


def gemm_rate(make: Callable[[int, int], Call], n: int, threads: int, budget_s: float) -> float:
    """G(FL)OP/s of one kernel at size n (2 n^3 operations per call, best call)."""
    return 2 * n ** 3 / _best(make(n, threads), budget_s) / 1e9


def peak_precisions(features: list[str] | None = None) -> list[str]:
    """The precisions whose peak is measured here: bf16 only where the CPU computes it natively."""
    from runtime.sysinfo import native_bf16

    return ["fp32", "bf16", "int8"] if native_bf16(features) else ["fp32", "int8"]


def survey(threads: int, budget_s: float = 0.5, sizes: tuple[int, ...] = GEMM_SIZES,
           precisions: list[str] | None = None) -> list[dict[str, Any]]:
    """Every kernel of every precision at every size, once; a kernel whose library is missing or
    refuses the size is listed with its error, not measured."""
    rows = []
    for prec in precisions or peak_precisions():
        for name, make in KERNELS[prec]:
            for n in sizes:
                row: dict[str, Any] = {"precision": prec, "kernel": name, "n": n}
                try:
                    row["rate"] = gemm_rate(make, n, threads, budget_s)
                except Exception as exc:  # noqa: BLE001 - an optional library missing or failing: not a peak
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
                rows.append(row)
    return rows


def best_kernels(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per precision, the fastest (kernel, size) of a :func:`survey`."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "rate" in r and r["rate"] > best.get(r["precision"], {}).get("rate", 0.0):
            best[r["precision"]] = r
    return best


def remeasure(best: dict[str, dict[str, Any]], threads: int, budget_s: float = 1.0) -> dict[str, float]:
    """This round's rate of each precision's winning kernel: ``{"fp32": G(FL)OP/s, ...}``."""
    makers = {(p, name): make for p, kernels in KERNELS.items() for name, make in kernels}
    return {p: gemm_rate(makers[(p, b["kernel"])], b["n"], threads, budget_s) for p, b in best.items()}


def best_peaks(rounds: list[dict | None], survey_rows: list[dict[str, Any]]) -> dict[str, float]:
    """The peak of each precision: the most any round or the survey measured (older JSON keys mapped)."""
    measured = [peak_rates(r) for r in rounds if r] + [{r["precision"]: r["rate"]} for r in survey_rows if "rate" in r]
    out: dict[str, float] = {}
    for m in measured:
        for k, v in m.items():
            out[k] = max(out.get(k, 0.0), v)
    return out


def peak_rates(peaks: dict[str, Any] | None) -> dict[str, float]:
    """``{"fp32": ..., "int8": ..., ["bf16": ...]}`` from a run's peaks (older JSON: fp32_gflops / int8_gops)."""
    old = {"fp32_gflops": "fp32", "int8_gops": "int8", "bf16_gflops": "bf16"}
    return {old.get(k, k): float(v) for k, v in (peaks or {}).items() if isinstance(v, (int, float))}


# -- the theoretical figure -------------------------------------------------------------------------
FMA_UNITS = 2        # vector FMA pipes per core: Intel Xeon (Skylake-SP on) and AMD Zen 2-5 have two
AMX_OPS = {"bf16": 1024, "int8": 2048}    # AMX tile ops per cycle per core (Intel's Sapphire Rapids figures)


def ops_per_cycle(features: list[str], fma_units: int = FMA_UNITS) -> dict[str, int]:
    """Operations per cycle per core (2 per multiply-add) for each precision this ISA computes.

    FP32: FMA units x fp32 lanes (16 with AVX-512, 8 with AVX2/FMA, 4 with NEON) x 2. BF16
    (AVX512-BF16 ``vdpbf16ps``: two bf16 products per fp32 lane): 2x FP32; AMX-BF16: 1024. INT8:
    AVX512-VNNI / AVX-VNNI ``vpdpbusd`` (four u8 x s8 products per 32-bit lane): 4x FP32 at the same
    width; without VNNI (``vpmaddubsw`` + ``vpmaddwd`` + ``vpaddd`` per group of four): 2x FP32;
    AMX-INT8: 2048.
    """
    lanes = 16 if "AVX-512" in features else 8 if ("AVX2" in features or "FMA" in features) else \
        4 if "NEON" in features else 1
    fp32 = fma_units * lanes * 2
    vnni = "AVX512-VNNI" in features or ("AVX-VNNI" in features and lanes == 8)
    out = {"fp32": fp32, "int8": fp32 * (4 if vnni else 2)}
    if "AVX512-BF16" in features:
        out["bf16"] = 2 * fp32
    for prec, ops in AMX_OPS.items():
        if f"AMX-{prec.upper()}" in features:
            out[prec] = max(out.get(prec, 0), ops)
    return out


def cpu_clock_ghz(cpufreq: str = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
                  cpuinfo: str = "/proc/cpuinfo") -> tuple[float | None, str]:
    """The clock the theoretical figure assumes: the highest the kernel reports (cpufreq's maximum,
    boost included), else /proc/cpuinfo's 'cpu MHz' (in a VM: the host's nominal clock, turbo unseen)."""
    try:
        return int(Path(cpufreq).read_text().split()[0]) / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError, IndexError):
        pass
    from runtime.sysinfo import _cpuinfo

    mhz = _cpuinfo(cpuinfo).get("cpu mhz")
    try:
        return float(mhz) / 1e3, "/proc/cpuinfo cpu MHz (nominal; turbo may run above it)"
    except (TypeError, ValueError):
        return None, "no clock reported"


def theoretical_peaks(features: list[str], clock_ghz: float | None, cores: int,
                      fma_units: int = FMA_UNITS) -> dict[str, Any]:
    """G(FL)OP/s = ops per cycle per core x clock x cores, per precision, with the assumptions spelled out."""
    if not clock_ghz:
        return {"rates": {}, "how": "no clock reported: no theoretical figure"}
    per_cycle = ops_per_cycle(features, fma_units)
    rates = {p: ops * clock_ghz * cores for p, ops in per_cycle.items()}
    how = (f"{fma_units} FMA units x {per_cycle['fp32'] // (2 * fma_units)} fp32 lanes x 2 x {clock_ghz:.2f} GHz "
           f"x {cores} cores (one thread per core); " +
           ", ".join(f"{p} {ops} ops/cycle/core" for p, ops in per_cycle.items()))
    return {"rates": rates, "how": how, "clock_ghz": clock_ghz, "cores": cores, "per_cycle": per_cycle}


def machine_theoretical(threads: int) -> dict[str, Any]:
    """:func:`theoretical_peaks` for this CPU at ``threads`` cores (at most the CPUs this process may
    use), noting where the clock came from."""
    from runtime.sysinfo import isa_features, threads as usable_cpus

    clock, source = cpu_clock_ghz()
    out = theoretical_peaks(isa_features(), clock, min(threads, usable_cpus()))
    out["clock_source"] = source
    return out
