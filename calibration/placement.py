"""Q/DQ placement beyond the weighted layers: residual Adds and pooling inputs.

ONNX Runtime's ``quantize_static`` puts Q/DQ on the inputs of Conv/MatMul/Gemm only (the TensorRT
layout's op types). TensorRT's Q/DQ placement guide and NVIDIA ModelOpt add two more places, and
so does this module, from the same calibrated ranges:

* **the residual input of every residual Add** ("quantize the residual input in skip
  connections"): TensorRT then fuses the convolution on the other input with the Add and reads the
  skip tensor as INT8. Where the residual input already reads a DequantizeLinear (the identity skip
  of a ResNet block is the quantized input of the block's first conv) nothing is added; where both
  inputs come from convolutions (a downsample block), the input with the shorter path back to the
  two branches' common ancestor is the skip (the 1x1 downsample conv, not the 3x3 main branch).
* **the MaxPool input**: the pooling runs on INT8 and TensorRT propagates the scale through it.

``both_inputs=True`` quantizes both inputs of each residual Add instead: the placement NNCF uses for
OpenVINO, where a fully quantized Add fuses into the preceding convolution as an INT8 sum
(measured with OpenVINO's execution graph; see docs/int8.md).

Every added pair is symmetric INT8 (zero point 0), per tensor, its scale max(|lo|, |hi|) / 127 from
the calibration ranges of the tensor, with one QuantizeLinear per tensor and DQ shared by every
quantized reader (as ``DedicatedQDQPair=False`` writes them).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from calibration.graph import consumers, producers
from runtime.errors import ToolkitError

INT8_MAX = 127.0
POOL_OPS = ("MaxPool",)


@dataclass(frozen=True)
class Placement:
    """Where Q/DQ pairs were added: ``(node name, input slot)`` per quantized input."""

    residual: tuple[tuple[str, int], ...]
    pooling: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return f"{len(self.residual)} residual Add input(s), {len(self.pooling)} pooling input(s) quantized"


def load_ranges(path: str | Path) -> dict[str, tuple[float, float]]:
    """tensor name -> (lowest, highest) from a ranges JSON written by :func:`calibration.qdq.compute_ranges`."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(Path(path))
    out = {}
    for name, td in data.data.items():
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in td.range_value)
        out[name] = (lo, hi)
    return out


def symmetric_scale(lo: float, hi: float) -> float:
    """The INT8 scale of a symmetric range; a range of zero width gets the smallest usable scale."""
    amax = max(abs(lo), abs(hi))
    return amax / INT8_MAX if amax > 0 else 1.0 / INT8_MAX


def _is_activation(name: str, inits: set[str], prod: dict) -> bool:
    node = prod.get(name)
    return name not in inits and not (node is not None and node.op_type == "Constant")


def residual_adds(graph) -> list:
    """Add nodes whose two inputs are both activations (skip connections, the non-local residual)."""
    prod = producers(graph)
    inits = {i.name for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "Add" and len(n.input) == 2
            and all(_is_activation(i, inits, prod) for i in n.input)]


def _distances(prod: dict, start: str) -> dict[str, int]:
    """tensor -> number of nodes between it and ``start`` walking up the graph (BFS)."""
    dist, todo = {start: 0}, deque([start])
    while todo:
        name = todo.popleft()
        node = prod.get(name)
        if node is None:
            continue
        for src in node.input:
            if src and src not in dist:
                dist[src] = dist[name] + 1
                todo.append(src)
    return dist


def residual_slot(prod: dict, add) -> int:
    """Which input of ``add`` is the skip: the one nearer the two branches' common ancestor."""
    a, b = (_distances(prod, name) for name in add.input[:2])
    common = set(a) & set(b)
    if not common:
        return 1
    ancestor = min(common, key=lambda t: (a[t] + b[t], t))
    return 1 if a[ancestor] > b[ancestor] else 0      # a tie quantizes input 0, as ModelOpt does


def _reads_dq(prod: dict, name: str) -> bool:
    node = prod.get(name)
    return node is not None and node.op_type == "DequantizeLinear"


class _Inserter:
    """Adds (or reuses) one Q -> DQ pair per tensor and rewires chosen readers to its output."""

    def __init__(self, model, ranges: dict[str, tuple[float, float]]) -> None:
        self.graph, self.ranges = model.graph, ranges
        self.cons = consumers(model.graph)      # Q -> DQ pairs are looked up here; new pairs join at finish()
        self.new_nodes: list = []
        self.made: dict[str, str] = {}

    def dq_output(self, tensor: str) -> str:
        """The DequantizeLinear output for ``tensor``: an existing pair's, else a new pair's."""
        from onnx import helper, numpy_helper

        if tensor in self.made:
            return self.made[tensor]
        for user in self.cons.get(tensor, []):
            if user.op_type == "QuantizeLinear":
                dq = [n for n in self.cons.get(user.output[0], []) if n.op_type == "DequantizeLinear"]
                if dq:
                    self.made[tensor] = dq[0].output[0]
                    return self.made[tensor]
        if tensor not in self.ranges:
            raise ToolkitError(f"no calibration range for {tensor}",
                               fix="recalibrate (delete the calibration/ranges*.json cache next to the artifacts)")
        scale = np.float32(symmetric_scale(*self.ranges[tensor]))
        self.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{tensor}_scale"),
                                       numpy_helper.from_array(np.array(0, np.int8), f"{tensor}_zero_point")])
        q_out, dq_out = f"{tensor}_QuantizeLinear_Output", f"{tensor}_DequantizeLinear_Output"
        self.new_nodes += [
            helper.make_node("QuantizeLinear", [tensor, f"{tensor}_scale", f"{tensor}_zero_point"], [q_out],
                             name=f"{tensor}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, f"{tensor}_scale", f"{tensor}_zero_point"], [dq_out],
                             name=f"{tensor}_DequantizeLinear")]
        self.made[tensor] = dq_out
        return dq_out

    def finish(self) -> None:
        from calibration.graph import topological_sort

        if self.new_nodes:
            self.graph.node.extend(self.new_nodes)
            topological_sort(self.graph)


def place_qdq(model, ranges: dict[str, tuple[float, float]], skip: Iterable[str] = (),
              both_inputs: bool = False) -> Placement:
    """Quantize residual Add inputs and pooling inputs of ``model`` in place (see the module doc).

    ``skip``: node names left float (the kept attention / head), whose inputs are not touched.
    """
    graph, skipped = model.graph, set(skip)
    ins = _Inserter(model, ranges)
    prod = producers(graph)
    residual: list[tuple[str, int]] = []
    for add in residual_adds(graph):
        if add.name in skipped:
            continue
        slots = (0, 1) if both_inputs else (residual_slot(prod, add),)
        for slot in slots:
            if not _reads_dq(prod, add.input[slot]):
                add.input[slot] = ins.dq_output(add.input[slot])
                residual.append((add.name, slot))
    pooling: list[tuple[str, int]] = []
    for node in graph.node:
        if node.op_type in POOL_OPS and node.name not in skipped and not _reads_dq(prod, node.input[0]):
            node.input[0] = ins.dq_output(node.input[0])
            pooling.append((node.name, 0))
    ins.finish()
    return Placement(tuple(residual), tuple(pooling))
