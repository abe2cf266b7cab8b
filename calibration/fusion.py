"""Will TensorRT run each quantized layer in INT8? A static model of its Q/DQ fusion rules.

TensorRT builds an explicitly quantized network by fusing each DequantizeLinear into the layer
that reads it and each QuantizeLinear into the layer that writes it. This module walks a Q/DQ
ONNX file and says, for every layer that should run INT8 (each weighted layer, each residual Add,
each pooling layer with a quantized input), "INT8" or "not INT8, because ...", with the reasons
TensorRT's developer guide and NVIDIA ModelOpt give:

* a Cast between a DequantizeLinear and its consumer ("forces DQ outputs to FP32" under strong
  typing: ModelOpt's ``fold_dq_fp32_to_fp16_casts`` exists to remove it) or in front of a
  QuantizeLinear (``fold_q_fp16_to_fp32_casts``);
* a weighted layer without a DequantizeLinear on its weights ("an IDequantizeLayer is required
  between the weights and the linear operator that uses them") or on its data input;
* a scale whose type differs from the tensor it quantizes, or a weighted layer whose dequantized
  inputs differ in type (strongly typed networks do not convert implicitly);
* a per-tensor weight scale, or one on the wrong axis (Conv 0, ConvTranspose 1);
* a zero point that is not INT8 0 (TensorRT is symmetric), a quantized (INT32) bias;
* a residual Add whose skip input is not quantized (the convolution on the other input cannot
  fuse the Add: "quantize the residual input in skip-connections");
* an orphan: a QuantizeLinear not read by DequantizeLinear only, a DequantizeLinear not fed by a
  QuantizeLinear or an INT8 constant.

Targets: ``"strong"`` (TensorRT 10/11 strongly typed, the ``_int8_fp16`` file: opset >= 19 where any
scale is FP16) and ``"weak"`` (TensorRT 8.5/8.6 with INT8+FP16 builder flags, the ``_int8_trt`` file:
opset <= 17, FP32 scales only, as 8.6's parser and IQuantizeLayer take). Layers listed in ``kept``
(the non-local affinity and the head, float on purpose) are reported as float, not as failures.

This is a model of the compiler, checked against ModelOpt's output in tests; the compiler itself
answers on the target: ``python -m export.layer_report ENGINE`` (TensorRT's engine inspector).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from calibration.graph import consumers, producers

WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
POOLING = ("MaxPool",)
QDQ = ("QuantizeLinear", "DequantizeLinear")
TARGETS = ("strong", "weak")
FLOAT, FLOAT16, INT8, INT32 = 1, 10, 3, 6


@dataclass(frozen=True)
class Verdict:
    """One layer: ``int8`` True when TensorRT will run it in INT8; else ``reasons`` say why not."""

    node: str
    op: str
    int8: bool
    reasons: tuple[str, ...] = ()
    kept_float: bool = False

    def line(self) -> str:
        if self.int8:
            return f"{self.node} ({self.op}): INT8"
        if self.kept_float:
            return f"{self.node} ({self.op}): float, kept on purpose"
        return f"{self.node} ({self.op}): not INT8, because " + "; ".join(self.reasons)


@dataclass
class FusionReport:
    """Every layer's verdict plus file-level problems (opset, orphans)."""

    target: str
    verdicts: list[Verdict] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.int8 and not v.kept_float]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.file_problems

    def counts(self) -> dict[str, int]:
        return {"int8": sum(v.int8 for v in self.verdicts), "kept_float": sum(v.kept_float for v in self.verdicts),
                "not_int8": len(self.failures), "file_problems": len(self.file_problems)}

    def problems(self) -> list[str]:
        return self.file_problems + [v.line() for v in self.failures]

    def summary(self) -> str:
        c = self.counts()
        by_op: dict[str, int] = {}
        for v in self.verdicts:
            if v.int8:
                by_op[v.op] = by_op.get(v.op, 0) + 1
        ops = ", ".join(f"{n} {op}" for op, n in sorted(by_op.items()))
        text = (f"fusion check ({'TensorRT 10/11 strongly typed' if self.target == 'strong' else 'TensorRT 8.x flags'}): "
                f"{c['int8']} layers INT8 ({ops}), {c['kept_float']} kept float")
        return text + ("" if self.ok else f", {c['not_int8']} NOT INT8, {c['file_problems']} file problem(s)")


class _Graph:
    """Lookup tables over one model: producers, consumers, initializers, element types."""

    def __init__(self, model) -> None:
        import onnx

        self.model, self.graph = model, model.graph
        self.prod, self.cons = producers(model.graph), consumers(model.graph)
        self.inits = {i.name: i for i in model.graph.initializer}
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        except Exception:      # noqa: BLE001 - a broken file still gets the structural checks
            inferred = model.graph
        values = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
        self.types = {v.name: v.type.tensor_type.elem_type for v in values}
        self.types.update({i.name: i.data_type for i in model.graph.initializer})

    def producer_op(self, name: str) -> str | None:
        node = self.prod.get(name)
        return node.op_type if node is not None else None

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        init = self.inits.get(name)
        return numpy_helper.to_array(init) if init is not None else None


def _dq_problems(g: _Graph, dq, target: str) -> list[str]:
    """What keeps one DequantizeLinear (and the Q feeding it) from fusing."""
    problems = []
    zp = g.inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    src = g.prod.get(dq.input[0])
    if src is None and dq.input[0] in g.inits:
        if g.inits[dq.input[0]].data_type == INT32:
            problems.append(f"{dq.name} dequantizes an INT32 constant (a quantized bias)")
        elif g.inits[dq.input[0]].data_type != INT8:
            problems.append(f"{dq.name} dequantizes a non-INT8 constant")
    elif src is None or src.op_type != "QuantizeLinear":
        problems.append(f"orphan: {dq.name} is fed by {src.op_type if src is not None else 'nothing'}, "
                        "not a QuantizeLinear")
    else:
        problems += _q_problems(g, src, target)
    if zp is not None and (zp.data_type != INT8 or g.array(zp.name).any()):
        problems.append(f"{dq.name}: zero point not INT8 0 (TensorRT is symmetric)")
    scale_t = g.types.get(dq.input[1])
    if target == "weak" and scale_t != FLOAT:
        problems.append(f"{dq.name}: scale type {_tname(scale_t)}; TensorRT 8.x takes FP32 scales only")
    return problems


def _q_problems(g: _Graph, q, target: str) -> list[str]:
    problems = []
    if len(q.input) < 3 or not q.input[2]:
        problems.append(f"{q.name} has no zero point (its output would be UINT8)")
    if g.producer_op(q.input[0]) == "Cast":
        problems.append(f"a Cast in front of {q.name} (TensorRT cannot fold it into the quantization)")
    in_t, scale_t = g.types.get(q.input[0]), g.types.get(q.input[1])
    if in_t is not None and scale_t is not None and in_t != scale_t:
        problems.append(f"{q.name}: scale type {_tname(scale_t)} != input type {_tname(in_t)}")
    if target == "weak" and scale_t != FLOAT:
        problems.append(f"{q.name}: scale type {_tname(scale_t)}; TensorRT 8.x takes FP32 scales only")
    users = g.cons.get(q.output[0], [])
    if not users or any(u.op_type != "DequantizeLinear" for u in users):
        problems.append(f"orphan: {q.name} is not read by DequantizeLinear only")
    return problems


def _tname(t: int | None) -> str:
    return {FLOAT: "FP32", FLOAT16: "FP16", INT8: "INT8", INT32: "INT32"}.get(t, str(t))


def _input_dq(g: _Graph, node, slot: int) -> tuple[object | None, list[str]]:
    """(the DequantizeLinear feeding ``node.input[slot]`` or None, problems on the way)."""
    name = node.input[slot]
    src = g.prod.get(name)
    if src is not None and src.op_type == "Cast":
        inner = g.prod.get(src.input[0])
        if inner is not None and inner.op_type == "DequantizeLinear":
            return inner, [f"a Cast ({src.name}) between {inner.name} and {node.name}"]
    if src is not None and src.op_type == "DequantizeLinear":
        return src, []
    return None, []


def _weighted(g: _Graph, node, target: str) -> list[str]:
    """Reasons a Conv / ConvTranspose / MatMul / Gemm will not run INT8 (empty: it will)."""
    reasons: list[str] = []
    slots = (0, 1)
    dq_types = set()
    for slot in slots:
        dq, problems = _input_dq(g, node, slot)
        reasons += problems
        what = "weight" if slot == 1 and node.op_type != "MatMul" else "data"
        if dq is None:
            reasons.append(f"its {what} input is not quantized (no DequantizeLinear)")
            continue
        reasons += _dq_problems(g, dq, target)
        dq_types.add(g.types.get(dq.input[1]))
        if what == "weight" and node.op_type in WEIGHT_AXIS:
            reasons += _weight_axis(g, node, dq)
    if len(dq_types) > 1:
        reasons.append("its dequantized inputs differ in type (" + ", ".join(sorted(map(_tname, dq_types))) + ")")
    if len(node.input) > 2 and node.input[2] and g.producer_op(node.input[2]) == "DequantizeLinear":
        reasons.append("its bias is quantized (TensorRT rejects an INT32 bias DequantizeLinear)")
    return reasons


def _weight_axis(g: _Graph, node, dq) -> list[str]:
    scale = g.array(dq.input[1])
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    want = WEIGHT_AXIS[node.op_type]
    if scale is None or scale.ndim != 1 or scale.size < 2:
        return [f"its weight scale is per-tensor (TensorRT expects per-channel on axis {want})"]
    if axis != want:
        return [f"its weight scale is on axis {axis}, not {want}"]
    return []


def _residual(g: _Graph, add, target: str) -> list[str]:
    """Why a residual Add will not run INT8 (empty: it will): its skip input must read a DequantizeLinear."""
    from calibration.placement import residual_slot

    skip = residual_slot(g.prod, add)
    dq, reasons = _input_dq(g, add, skip)
    if dq is None:
        other, _ = _input_dq(g, add, 1 - skip)
        if other is None:
            return reasons + [f"its residual input {add.input[skip]} is not quantized "
                              "(the convolution on the other input cannot fuse the Add)"]
        dq = other
    return reasons + _dq_problems(g, dq, target)


def check_fusion(model, target: str = "strong", kept: Iterable[str] = ()) -> FusionReport:
    """The verdict of every layer of a Q/DQ ``model`` for ``target`` (see the module doc)."""
    from calibration.placement import residual_adds

    if target not in TARGETS:
        raise ValueError(f"unknown fusion target {target!r}")
    g, kept = _Graph(model), set(kept)
    report = FusionReport(target)
    report.file_problems += _file_problems(g, target)
    for node in model.graph.node:
        if node.op_type in WEIGHTED:
            if node.name in kept:
                report.verdicts.append(Verdict(node.name, node.op_type, False, kept_float=True))
                continue
            reasons = _weighted(g, node, target)
            report.verdicts.append(Verdict(node.name, node.op_type, not reasons, tuple(reasons)))
    for add in residual_adds(model.graph):
        if add.name in kept:
            continue
        reasons = _residual(g, add, target)
        report.verdicts.append(Verdict(add.name, "Add", not reasons, tuple(reasons)))
    for node in model.graph.node:
        if node.op_type in POOLING and node.name not in kept:
            dq, reasons = _input_dq(g, node, 0)
            if dq is None and not reasons:
                reasons = ["its input is not quantized"]
            elif dq is not None:
                reasons += _dq_problems(g, dq, target)
            report.verdicts.append(Verdict(node.name, node.op_type, not reasons, tuple(reasons)))
    return report


def _file_problems(g: _Graph, target: str) -> list[str]:
    """Opset, presence of Q/DQ, orphan Q/DQ anywhere in the file."""
    model = g.model
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = model.graph.node
    if not any(n.op_type in QDQ for n in nodes):
        return ["no QuantizeLinear/DequantizeLinear nodes"]
    fp16_scales = any(g.types.get(n.input[1]) == FLOAT16 for n in nodes if n.op_type in QDQ)
    if opset < 13:
        problems.append(f"opset {opset} < 13 (per-channel Q/DQ needs 13)")
    if fp16_scales and opset < 19:
        problems.append(f"FP16 scales need opset 19, the file has {opset}")
    if target == "weak" and opset > 17:
        problems.append(f"opset {opset}: TensorRT 8.x parses opset <= 17")
    for node in nodes:
        if node.op_type == "QuantizeLinear":
            users = g.cons.get(node.output[0], [])
            if not users or any(u.op_type != "DequantizeLinear" for u in users):
                problems.append(f"orphan: {node.name} is not read by DequantizeLinear only")
        elif node.op_type == "DequantizeLinear":
            src = g.prod.get(node.input[0])
            if src is None and node.input[0] not in g.inits:
                problems.append(f"orphan: {node.name} is fed by nothing")
            for user in g.cons.get(node.output[0], []):
                if user.op_type == "Cast":
                    problems.append(f"a Cast ({user.name}) right after {node.name}")
    return problems
