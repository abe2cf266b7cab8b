"""Achieved vs peak: the model's FLOPs (counted once) and this machine's measured FP32 / INT8 peaks.

- Model FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of the PyTorch
  model on meta tensors (no arithmetic is done; 2 FLOPs per multiply-add, convolutions and matmuls
  only, which is where all but a sliver of the work is).
- FP32 peak: ``torch.mm`` of two 2048x2048 float32 matrices (MKL / oneDNN sgemm), best of several.
- INT8 peak: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, MLAS; uses AVX512-VNNI /
  AVX-VNNI where the CPU has them, else the AVX2 / AVX-512 multiply-add path), 2048x2048, best of
  several. Reported in GOP/s (2 ops per multiply-add), the unit an INT8 network's rate is read in.
Both peaks use ``threads`` threads, like the benchmark.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np

from runtime.loaders import SessionFromOnnx

GEMM_N = 2048


def count_flops(model: Any, crop: tuple[int, int]) -> float:
    """FLOPs of one (1, 3, H, W) forward pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta_model = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty((1, 3, *crop), device="meta"))
    return float(counter.get_total_flops())


def _best(fn: Callable[[], Any], budget_s: float, min_reps: int = 3) -> float:
    """Fastest single call of ``fn`` after one warm-up, over at least ``min_reps`` calls / ``budget_s``."""
    fn()
    best, start, reps = float("inf"), time.perf_counter(), 0
    while reps < min_reps or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def fp32_peak(threads: int, budget_s: float = 3.0, n: int = GEMM_N) -> float:
    """GFLOP/s of an n x n float32 GEMM (torch.mm)."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    return 2 * n ** 3 / _best(lambda: torch.mm(a, b), budget_s) / 1e9


def int8_peak(threads: int, budget_s: float = 3.0, n: int = GEMM_N) -> float:
    """GOP/s of an n x n uint8 x int8 GEMM (ONNX Runtime MatMulInteger)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
    node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
    graph = helper.make_graph([node], "int8_gemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = SessionFromOnnx(model, threads=threads)()
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    onnx.checker.check_model(model)
    return 2 * n ** 3 / _best(lambda: sess.run(None, {"a": a}), budget_s) / 1e9


def measure_peaks(threads: int) -> dict[str, Any]:
    return {"fp32_gflops": fp32_peak(threads), "int8_gops": int8_peak(threads), "threads": threads,
            "fp32_how": f"torch.mm float32 {GEMM_N}x{GEMM_N}, best call",
            "int8_how": f"ONNX Runtime MatMulInteger uint8 x int8 {GEMM_N}x{GEMM_N}, best call"}
