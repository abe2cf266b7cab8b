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
FP16_SCALE_OPSET = 19        # the first opset whose QuantizeLinear/DequantizeLinear take FP16 scales
FP16_TINY = float(np.finfo(np.float16).tiny)     # smallest normal FP16 (6.1e-5)


class _MixedInt8Converter(_Converter):
    """:class:`_Converter` for a Q/DQ graph: Q/DQ compute in the type of the tensor they act on.

    A QuantizeLinear takes the type of its input (FP32 at the network input or after a kept FP32
    node, FP16 elsewhere) and a DequantizeLinear the type its readers compute in (FP16 unless every
    reader is kept FP32), so a DQ feeds its Conv directly and no Cast ever sits between a
    DequantizeLinear and its consumer or in front of a QuantizeLinear (ModelOpt's layout; TensorRT
    fuses DQ into the following layer only then). Q and DQ of one pair may differ in scale type:
    the INT8 tensor between them is the same.
    """

    def __init__(self, model, kept: set[str]) -> None:
        super().__init__(model, kept)
        self.fp32_qdq = self._fp32_qdq()

    def _fp32_qdq(self) -> set[str]:
        from calibration.graph import consumers

        fp32_tensors = {i.name for i in self.graph.input}
        fp32_tensors |= {o for n in self.graph.node if n.name in self.kept for o in n.output}
        cons = consumers(self.graph)
        names = set()
        for node in self.graph.node:
            if node.op_type == "QuantizeLinear" and node.input[0] in fp32_tensors:
                names.add(node.name)
            readers = cons.get(node.output[0], []) if node.op_type == "DequantizeLinear" else []
            if readers and all(r.name in self.kept for r in readers):
                names.add(node.name)
        return names

    def _wants(self, node) -> int:
        if node.op_type in QDQ_OPS:
            return FLOAT if node.name in self.fp32_qdq else FLOAT16
        return super()._wants(node)


def _with_opset(model, opset: int):
    """``model`` converted to ``opset`` of the default domain (unchanged when it already is)."""
    import onnx
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return model
    converted = version_converter.convert_version(model, opset)
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
        [o for o in converted.opset_import if o.domain in ("", "ai.onnx")]))
    if [n.op_type for n in converted.graph.node] != [n.op_type for n in model.graph.node]:
        raise ToolkitError(f"converting the Q/DQ model to opset {opset} changed its graph",
                           fix="report this model: the INT8+FP16 file needs opset 19 (FP16 scales)")
    onnx.checker.check_model(converted)
    return converted


def convert_int8_fp16(qdq_model, keep: Iterable[str] = DEFAULT_KEEP):
    """The mixed INT8+FP16 model for strongly typed TensorRT (10, 11) from a TensorRT-layout Q/DQ model.

    Returns ``(model, kept_fp32_nodes, scale_counts)``. As ModelOpt's ONNX quantizer writes it with
    ``high_precision_dtype="fp16"``: opset 19 (the first with FP16 Q/DQ scales), every float layer
    FP16, Q/DQ scales in the type of the tensor they act on (FP16), so DequantizeLinear feeds its
    Conv directly; ``keep`` (the non-local affinity) computes in FP32 with its Casts outside every
    Q/DQ pair; network inputs and outputs stay FP32 (the input is quantized from FP32 directly).
    Scales are rounded up to FP16 (:func:`_round_scales_up`).
    """
    kinds = [k for k in QDQ_OPS if any(n.op_type == k for n in qdq_model.graph.node)]
    if len(kinds) != 2:
        raise ToolkitError("the INT8+FP16 conversion needs a Q/DQ model",
                           found=f"QuantizeLinear/DequantizeLinear present: {', '.join(kinds) or 'none'}")
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(_with_opset(qdq_model, FP16_SCALE_OPSET))
    graph = model.graph
    name_nodes(graph, "fp16")
    _constants_to_initializers(graph)
    exact = {i.name: i for i in graph.initializer}
    kept = select_nodes(graph, list(keep)) if keep else []
    scales32 = {n.input[1]: onnx.numpy_helper.to_array(exact[n.input[1]]).astype(np.float32)
                for n in graph.node if n.op_type in QDQ_OPS and n.input[1] in exact}
    _MixedInt8Converter(model, set(kept)).run()
    counts = _round_scales_up(model, scales32)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model, kept, counts


def _round_scales_up(model, scales32: dict[str, np.ndarray]) -> dict[str, int]:
    """Every FP16 Q/DQ scale rounded *up* from its FP32 value (the largest weight never saturates)
    and never zero. Counts: ``scales``; ``subnormal`` values (under FP16's smallest normal 6.1e-5:
    fewer significant bits, reported); ``raised`` values (under the smallest subnormal, raised to it:
    what they scale quantizes to 0 and was ~0 anyway)."""
    from onnx import numpy_helper

    counts = {"scales": 0, "subnormal": 0, "raised": 0}
    for init in model.graph.initializer:
        base = init.name[:-len("__fp16")] if init.name.endswith("__fp16") else init.name
        if init.data_type != FLOAT16 or base not in scales32:
            continue
        exact = scales32[base].reshape(numpy_helper.to_array(init).shape)
        half = exact.astype(np.float16)
        low = half.astype(np.float32) < exact
        half[low] = np.nextafter(half[low], np.float16(np.inf))
        raised = half == 0
        half[raised] = np.float16(np.finfo(np.float16).smallest_subnormal)
        if not np.isfinite(half).all():
            raise ToolkitError(f"Q/DQ scale {base} does not fit FP16 (> 65504)",
                               fix="keep the layer that reads it in float (--keep-int8)")
        counts["scales"] += 1
        counts["subnormal"] += int(np.count_nonzero(half.astype(np.float32) < FP16_TINY))
        counts["raised"] += int(np.count_nonzero(raised))
        init.CopyFrom(numpy_helper.from_array(half, init.name))
    return counts
