"""INT8 Q/DQ ONNX from an FP32 ONNX and a calibration set (ONNX Runtime's quantize_static).

Two layouts, one per target (spec/tensorrt.md):

* ``trt``: what TensorRT (8.5 .. 11) builds INT8 engines from: symmetric INT8 activations and
  weights (all zero points 0), per-channel weight scales (Conv axis 0, ConvTranspose axis 1), Q/DQ
  on the inputs of Conv/MatMul/Gemm, on the residual input of every residual Add and on the
  MaxPool input (:mod:`calibration.placement`, as TensorRT's placement guide and ModelOpt put
  them), bias left in float, opset 17, FP32 scales: the TensorRT 8.x file.
* ``ort``: what ONNX Runtime's CPU provider fuses into integer kernels (QLinearConv etc.): U8S8,
  i.e. asymmetric UINT8 activations with Q/DQ around inputs *and* outputs, per-channel INT8
  weights, INT32 bias; the kept attention nodes read float tensors (no MatMulIntegerToFloat).

The INT8+FP16 file for TensorRT 10/11 (strongly typed: opset 19, FP16 scales) is made from the
``trt`` one by :func:`export.precision.convert_int8_fp16`; :mod:`calibration.fusion` checks both
against TensorRT's fusion rules.

The activation ranges are computed once per (FP32 model, calibration set, method) with ORT's
calibrators, one tile at a time (bounded memory, a progress bar), cached as JSON next to the
artifacts (atomic write) and shared by both layouts. Nodes kept out of INT8 default to the
non-local affinity chain (MatMul -> Mul -> Softmax -> MatMul).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from calibration.graph import DEFAULT_KEEP_INT8, fold_attention_scale, name_nodes, select_nodes
from runtime.errors import ToolkitError
from runtime.fileio import atomic_path
from runtime.loaders import SessionFromOnnx

METHODS = ("entropy", "max", "percentile")
LAYOUTS = ("trt", "ort")
PERCENTILES = (99.99, 99.999)
TRT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ENTROPY_BINS = 512          # ORT's default of 128 leaves the KL search a single candidate


def trt_extra_options(op_types: Sequence[str]) -> dict[str, Any]:
    """The quantize_static options of the TensorRT layout (spec/tensorrt.md, verbatim)."""
    return {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
            "AddQDQPairToWeight": True, "DedicatedQDQPair": False,
            "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
            "OpTypesToExcludeOutputQuantization": list(op_types), "ForceQuantizeNoInputCheck": True,
            "QDQDisableWeightAdjustForInt32Bias": True}


def ort_extra_options() -> dict[str, Any]:
    """U8S8 Q/DQ that ORT's CPU provider fuses (QLinearConv, QLinearAdd, ...)."""
    return {"ActivationSymmetric": False, "WeightSymmetric": True, "ForceQuantizeNoInputCheck": True}


def calibration_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise ToolkitError(f"unknown calibration method {method!r}", expected=", ".join(METHODS))
    return table[method]


def parse_method(text: str) -> tuple[str, float | None]:
    """``entropy`` | ``max`` | ``percentile`` (99.99) | ``percentile-99.999`` -> (method, percentile)."""
    name, _, pct = text.partition("-")
    calibration_method(name)
    if name != "percentile":
        if pct:
            raise ToolkitError(f"calibration method {text!r} takes no value", expected=", ".join(METHODS))
        return name, None
    value = float(pct) if pct.replace(".", "", 1).isdigit() else (PERCENTILES[0] if not pct else -1.0)
    if value not in PERCENTILES:
        raise ToolkitError(f"unsupported percentile in {text!r}",
                           expected="percentile, percentile-99.99 or percentile-99.999")
    return name, value


def preprocess(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """ORT's quantization pre-processing (shape inference + basic graph clean-up), nodes named,
    the attention scale folded onto the small MatMul operand (:func:`fold_attention_scale`)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    name_nodes(model.graph, "q")
    fold_attention_scale(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))


class TileReader:
    """``CalibrationDataReader`` over a calibration set (ORT's interface: get_next/rewind)."""

    def __init__(self, calib: Any, input_name: str, batch: int = 1) -> None:
        self.calib, self.input_name, self.batch = calib, input_name, batch
        self._it: Any = None
        self.rewind()

    def rewind(self) -> None:
        self._it = iter(self.calib.batches(self.batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def __len__(self) -> int:
        return -(-len(self.calib) // self.batch)


class _One:
    """A reader holding exactly one batch (so ORT processes, then frees, one tile at a time)."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self.feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


def compute_ranges(model_path: Path, calib: Any, method: str, percentile: float | None,
                   cache_path: Path, batch: int = 1, progress: bool = True) -> bool:
    """Calibrate ``model_path`` on ``calib`` and write the ranges JSON; False if it was cached."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from tqdm import tqdm

    if cache_path.is_file():
        return False
    options: dict[str, Any] = {"num_bins": ENTROPY_BINS} if method == "entropy" else {}
    if method == "percentile":
        options = {"num_bins": 2048, "percentile": percentile, "symmetric": False}
    input_name = _input_name(model_path)
    with tempfile.TemporaryDirectory(prefix="calib.") as tmp:
        calibrator = create_calibrator(model_path, None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=calibration_method(method), extra_options=options)
        reader = TileReader(calib, input_name, batch)
        with contextlib.redirect_stdout(io.StringIO()):   # ORT prints a line per collect call
            for _ in tqdm(range(len(reader)), desc=f"calibrating ({method})", unit="batch",
                          disable=not progress or None, file=sys.stderr):
                calibrator.collect_data(_One(reader.get_next()))
            ranges = calibrator.compute_data()
        del calibrator
    with atomic_path(cache_path) as tmp_path:
        save_tensors_data(ranges, tmp_path)
    return True


def _input_name(model_path: Path) -> str:
    import onnx

    return onnx.load(str(model_path), load_external_data=False).graph.input[0].name


def excluded_nodes(model_path: Path, keep: Iterable[str]) -> list[str]:
    """Node names to leave in float: ``keep`` entries are "attention", op types or node names."""
    import onnx

    keep = list(keep)
    return select_nodes(onnx.load(str(model_path)).graph, keep) if keep else []


def quantize(pre_path: Path, ranges_path: Path, out_path: Path, layout: str, method: str,
             keep: Iterable[str] = DEFAULT_KEEP_INT8, calib: Any = None) -> list[str]:
    """Write the Q/DQ model of ``layout`` to ``out_path``; returns the node names kept in float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if layout not in LAYOUTS:
        raise ToolkitError(f"unknown INT8 layout {layout!r}", expected=", ".join(LAYOUTS))
    excluded = excluded_nodes(pre_path, keep)
    if layout == "trt":
        kwargs = dict(op_types_to_quantize=list(TRT_OP_TYPES), activation_type=QuantType.QInt8,
                      extra_options=trt_extra_options(TRT_OP_TYPES))
    else:
        kwargs = dict(activation_type=QuantType.QUInt8, extra_options=ort_extra_options())
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(ranges_path)
    elif calib is not None:   # older ONNX Runtime: no range cache, calibrate again
        kwargs["calibration_data_reader"] = TileReader(calib, _input_name(pre_path))
    else:
        raise ToolkitError("this ONNX Runtime cannot reuse calibration ranges",
                           fix="pip install -U onnxruntime (>= 1.32), or pass the calibration set")
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(pre_path), str(out_path), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        calibrate_method=calibration_method(method), **kwargs)
    if layout == "ort":
        _float_attention(out_path, excluded)
    else:
        _place_residuals(out_path, ranges_path, excluded)
    return excluded


def _place_residuals(path: Path, ranges_path: Path, excluded: Sequence[str]) -> None:
    """TensorRT layout: Q/DQ on the residual input of each residual Add and on pooling inputs
    (:mod:`calibration.placement`), from the same calibrated ranges."""
    import onnx

    from calibration.placement import load_ranges, place_qdq

    model = onnx.load(str(path))
    place_qdq(model, load_ranges(ranges_path), skip=excluded)
    onnx.save(model, str(path))


def _float_attention(path: Path, excluded: Sequence[str]) -> None:
    """ORT layout: the kept attention nodes read float tensors (README: the affinity stays float).

    Left as quantised, ORT fuses DQ -> MatMul(theta, phi) into ``MatMulIntegerToFloat``; measured
    on CPU (README, INT8 attention choice) the float MatMul is as accurate and not slower.
    """
    import onnx

    from calibration.graph import attention_nodes

    model = onnx.load(str(path))
    kept = set(attention_nodes(model.graph)) & set(excluded)
    if kept and dequantize_inputs_of(model, kept):
        onnx.save(model, str(path))


def dequantize_inputs_of(model: Any, names: Iterable[str]) -> int:
    """Feed the nodes ``names`` their float tensors instead of a Q -> DQ round trip; drop the Q/DQ
    left unused. In the ORT layout a node kept float still reads DQ outputs when its producer is
    quantized, and ORT then fuses DQ -> MatMul into an integer ``MatMulIntegerToFloat``: this keeps
    such a node float for real. Returns the count of rewired inputs."""
    from calibration.graph import consumers, float_source, producers

    graph, wanted = model.graph, set(names)
    prod = producers(graph)
    rewired = 0
    for node in graph.node:
        if node.name not in wanted:
            continue
        for slot, name in enumerate(node.input):
            source = float_source(prod, name)
            if source is not None:
                node.input[slot] = source
                rewired += 1
    outputs = {o.name for o in graph.output}
    for op in ("DequantizeLinear", "QuantizeLinear"):
        cons = consumers(graph)
        dead = [n for n in graph.node if n.op_type == op and not cons.get(n.output[0]) and n.output[0] not in outputs]
        for n in dead:
            graph.node.remove(n)
    used = {name for n in graph.node for name in n.input}
    unused = [i for i in graph.initializer if i.name not in used and i.name not in outputs]
    for init in unused:
        graph.initializer.remove(init)
    return rewired


def fused_ops(path: str | os.PathLike, threads: int | None = None) -> dict[str, int]:
    """Op-type counts of the graph ONNX Runtime actually runs (after ORT_ENABLE_ALL optimisation)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="ortopt.") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        # log severity 3: the "hardware specific optimizations" warning is expected here
        SessionFromOnnx(path, threads=threads, optimization="all", optimized_path=optimized, log_severity=3)()
        model = onnx.load(str(optimized))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


INTEGER_KERNELS = ("QLinearConv", "ConvInteger", "NhwcQLinearConv", "QLinearMatMul", "MatMulInteger",
                   "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def integer_kernel_count(counts: dict[str, int]) -> int:
    """How many fused integer convolution / matmul kernels an optimised graph holds."""
    return sum(v for k, v in counts.items() if k in INTEGER_KERNELS)
