"""FP16 / mixed-precision ONNX from an FP32 ONNX, with FP32 inputs and outputs.

Since TensorRT 11 an FP16 engine is built from an FP16 (or mixed) ONNX; TensorRT 10 builds it
the same way with STRONGLY_TYPED. The conversion is done here with plain ``onnx`` (no
onnxconverter-common): float initializers and constants become FP16, every node computes in
FP16 except the ones kept in FP32, and Cast nodes are inserted wherever a tensor crosses between
the two (graph input, graph output, and around the kept nodes).

By default the non-local affinity chain (MatMul -> Mul -> Softmax -> MatMul) stays FP32: its
logits over thousands of positions are where FP16 (max 65504) overflows. ``keep=()`` converts
everything ("all-fp16"); ``keep`` also takes op types or node names.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from calibration.graph import DEFAULT_KEEP, name_nodes, select_nodes
from runtime.errors import ToolkitError

# inputs that must stay float32 whatever the node's precision: (op type) -> input slots
ALWAYS_FLOAT_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
FLOAT, FLOAT16 = 1, 10      # onnx.TensorProto.FLOAT / FLOAT16


def layout_name(keep: Sequence[str]) -> str:
    """The ``ArtifactMeta.layout`` of an FP16 artifact: fp32-attention | all-fp16 | custom."""
    if tuple(keep) == DEFAULT_KEEP:
        return "fp32-attention"
    return "all-fp16" if not keep else "custom"


def _constants_to_initializers(graph) -> None:
    """Turn ``Constant`` nodes holding a tensor into initializers (handled like the weights)."""
    from onnx import numpy_helper

    keep = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs:
            arr = numpy_helper.to_array(attrs["value"].t)
            graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _type_map(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({init.name: init.data_type for init in g.initializer})
    return types


def _is_data_slot(node, slot: int) -> bool:
    if node.op_type == "Cast":
        return False
    return slot not in ALWAYS_FLOAT_INPUTS.get(node.op_type, ())


class _Converter:
    """One pass over a topologically sorted graph; see the module docstring."""

    def __init__(self, model, kept: set[str]) -> None:
        self.model, self.graph, self.kept = model, model.graph, kept
        self.types = _type_map(model)
        self.inits = {init.name: init for init in self.graph.initializer}
        self.casts: dict[tuple[str, int], str] = {}
        self.nodes: list = []

    def run(self) -> None:
        self._convert_initializers()
        for node in list(self.graph.node):
            self._visit(node)
        self._cast_outputs()
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)

    def _wants(self, node) -> int:
        return FLOAT if node.name in self.kept else FLOAT16

    def _convert_initializers(self) -> None:
        """FP16 copies of float initializers read by FP16 data slots (in place if nobody needs FP32)."""
        from onnx import numpy_helper

        users: dict[str, set[int]] = {}
        for node in self.graph.node:
            for slot, name in enumerate(node.input):
                if name in self.inits and self.inits[name].data_type == FLOAT:
                    want = self._wants(node) if _is_data_slot(node, slot) else FLOAT
                    users.setdefault(name, set()).add(want)
        for name, wants in users.items():
            if FLOAT16 not in wants:
                continue
            arr = numpy_helper.to_array(self.inits[name])
            if np.abs(arr).max(initial=0) > 65504:
                raise ToolkitError(f"weight {name} does not fit FP16 (|w| > 65504)",
                                   fix=f"keep the node that reads it in FP32 (--keep-fp32 NODE)")
            half = numpy_helper.from_array(arr.astype(np.float16), name if wants == {FLOAT16} else f"{name}__fp16")
            if wants == {FLOAT16}:
                self.inits[name].CopyFrom(half)
            else:
                self.graph.initializer.append(half)
                self.casts[(name, FLOAT16)] = half.name
            self.types[half.name] = FLOAT16

    def _cast(self, tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in self.casts:
            from onnx import helper

            out = f"{tensor}__to_{'fp16' if to == FLOAT16 else 'fp32'}"
            self.nodes.append(helper.make_node("Cast", [tensor], [out], to=to, name=f"{out}_cast"))
            self.types[out] = to
            self.casts[key] = out
        return self.casts[key]

    def _visit(self, node) -> None:
        want = self._wants(node)
        for slot, name in enumerate(node.input):
            if not name or self.types.get(name) not in (FLOAT, FLOAT16):
                continue
            need = want if _is_data_slot(node, slot) else (FLOAT if node.op_type != "Cast" else None)
            if need is not None and self.types[name] != need:
                node.input[slot] = self._cast(name, need)
        if node.op_type == "Cast" and want == FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = FLOAT16
        if node.op_type == "ConstantOfShape" and want == FLOAT16:
            self._half_value_attr(node)
        for name in node.output:
            if node.op_type == "Cast":
                self.types[name] = self._cast_target(node)
            elif self.types.get(name) in (FLOAT, FLOAT16):
                self.types[name] = want
        self.nodes.append(node)

    @staticmethod
    def _cast_target(node) -> int:
        return next(a.i for a in node.attribute if a.name == "to")

    @staticmethod
    def _half_value_attr(node) -> None:
        from onnx import numpy_helper

        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))

    def _cast_outputs(self) -> None:
        """Graph outputs declared FP32 but now produced in FP16 get a final Cast back to FP32."""
        from onnx import helper

        for out in self.graph.output:
            if out.type.tensor_type.elem_type != FLOAT or self.types.get(out.name) != FLOAT16:
                continue
            inner = f"{out.name}__fp16"
            for node in self.nodes:
                for seq in (node.input, node.output):
                    for i, name in enumerate(seq):
                        if name == out.name:
                            seq[i] = inner
            self.nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"{out.name}_to_fp32"))


def convert_fp16(model, keep: Iterable[str] = DEFAULT_KEEP):
    """Return ``(fp16_model, kept_node_names)``; inputs/outputs stay FP32, ``keep`` stays FP32.

    ``keep`` entries: "attention" (the non-local affinity chain), op types or node names.
    The result passes ``onnx.checker`` with full shape inference.
    """
    import onnx

    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    name_nodes(graph, "fp16")
    _constants_to_initializers(graph)
    kept = select_nodes(graph, list(keep)) if keep else []
    _Converter(converted, set(kept)).run()
    del graph.value_info[:]
    converted = onnx.shape_inference.infer_shapes(converted, strict_mode=True)
    onnx.checker.check_model(converted, full_check=True)
    return converted, kept


def precision_summary(model) -> dict[str, int]:
    """Counts of nodes computing in FP16 / FP32 and of inserted Casts (for the CLI summary)."""
    types = _type_map(model)
    fp16 = fp32 = casts = 0
    for node in model.graph.node:
        if node.op_type == "Cast":
            casts += 1
            continue
        outs = [types.get(o) for o in node.output]
        fp16 += FLOAT16 in outs
        fp32 += FLOAT in outs
    return {"fp16_nodes": fp16, "fp32_nodes": fp32, "casts": casts}


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def convert_int8_fp16(qdq_model, keep: Iterable[str] = DEFAULT_KEEP):
    """The mixed INT8+FP16 model from a TensorRT-layout Q/DQ model: ``(model, kept_fp32_nodes)``.

    What TensorRT 11 (and 10 strongly typed) needs for INT8 to beat FP16, as ModelOpt's ONNX
    quantizer writes it with ``high_precision_dtype="fp16"``: the Q/DQ convolutions stay INT8,
    every other float layer computes in FP16, ``keep`` (the non-local affinity) stays FP32, network
    inputs and outputs stay FP32. At opset 17 QuantizeLinear/DequantizeLinear take FP32 only (FP16
    scales need opset 19, which TensorRT 8.5/8.6 and ONNX Runtime 1.16 do not all parse), so the
    Q/DQ nodes stay FP32 with a Cast on each side, as ModelOpt does below opset 19.
    """
    kinds = [k for k in QDQ_OPS if any(n.op_type == k for n in qdq_model.graph.node)]
    if len(kinds) != 2:
        raise ToolkitError("the INT8+FP16 conversion needs a Q/DQ model",
                           found=f"QuantizeLinear/DequantizeLinear present: {', '.join(kinds) or 'none'}")
    model, kept = convert_fp16(qdq_model, list(keep) + kinds)
    kept_float = [name for name in kept if not any(n.name == name and n.op_type in QDQ_OPS
                                                   for n in model.graph.node)]
    return model, kept_float
