"""Compare where two Q/DQ ONNX files (made from the same FP32 ONNX) quantize, layer by layer.

Runs in the main environment with the ``onnx`` package only (no ModelOpt import).

Layer identity (the same in two files whose tools rename nodes differently):

* a weighted layer (Conv, ConvTranspose, MatMul, Gemm) whose weight input leads back, through
  DequantizeLinear / QuantizeLinear / Cast only, to an initializer (or a Constant node): the name that
  initializer had in the FP32 file, e.g. ``onnx::Conv_326``. Both the toolkit (TensorRT layouts) and
  ModelOpt keep the FP32 name on the weight initializer (ModelOpt converts it to FP16 in place);
  the toolkit's ORT layout stores ``<name>_quantized`` int8; :func:`fp32_name` strips those suffixes
  and ModelOpt's ``_<n>`` copies of shared initializers;
* every other node (Add, MaxPool, Concat, a MatMul of two activations, ...): ``Op#k``, its index among
  the nodes of that op type in a canonical topological order: nodes sorted by their depth (longest
  path from the graph inputs, Q/DQ/Cast nodes not counted), ties kept in file order. Unlike the file
  order this does not change when a tool reorders independent branches (the toolkit's FP16 pass
  emits ``conv1`` before ``downsample``; the FP32 file has the reverse).

Per node input, the pattern letter is ``Q`` (read straight from a DequantizeLinear), ``q`` (read from
DequantizeLinear -> Cast) or ``.`` (not quantized). Nothing else is walked through.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import NodeProto, TensorProto

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}
TRANSPARENT = ("QuantizeLinear", "DequantizeLinear", "Cast")
ALWAYS_LISTED = (*WEIGHTED_OPS, "Add")
# Suffixes the quantizers append to a weight initializer's FP32 name (stripped repeatedly, longest first).
SUFFIXES = (
    "_DequantizeLinear_Output", "_QuantizeLinear_Output", "_DequantizeLinear", "_QuantizeLinear",
    "_quantized", "_dequantized", "__fp16", "__fp32", "_fp16", "_fp32", "__to_fp16", "__to_fp32",
    "_to_fp16", "_to_fp32", "_i8", "_int8", "_scaled",
)


@dataclass
class Graph:
    """Indexes over one ONNX graph: producers, consumers, constants and a canonical node order."""

    model: onnx.ModelProto
    nodes: list[NodeProto] = field(default_factory=list)  # file order; the objects all indexes hold
    producer: dict[str, NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[NodeProto]] = field(default_factory=dict)
    constants: dict[str, TensorProto] = field(default_factory=dict)
    order: list[NodeProto] = field(default_factory=list)


def load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """``model`` itself, or the model at that path (external data not loaded: names and dtypes suffice)."""
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model), load_external_data=False)


def _constant_tensors(model: onnx.ModelProto) -> dict[str, TensorProto]:
    """Initializers and Constant-node outputs, by tensor name."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = attr.t
    return out


def _depths(nodes: list[NodeProto], producer: dict[str, NodeProto]) -> dict[int, int]:
    """Longest path from the graph inputs for each node (by ``id``); Q/DQ/Cast add no depth."""
    depth: dict[int, int] = {}

    def visit(node: NodeProto) -> int:
        stack = [(node, False)]
        while stack:
            cur, expanded = stack.pop()
            if id(cur) in depth:
                continue
            parents = [producer[i] for i in cur.input if i in producer]
            if not expanded:
                stack.append((cur, True))
                stack.extend((p, False) for p in parents if id(p) not in depth)
                continue
            base = max((depth[id(p)] for p in parents), default=0)
            depth[id(cur)] = base + (0 if cur.op_type in TRANSPARENT else 1)
        return depth[id(node)]

    for node in nodes:
        visit(node)
    return depth


def index_graph(model: onnx.ModelProto | str | Path) -> Graph:
    """Build the :class:`Graph` indexes for ``model`` (a ModelProto or a path)."""
    g = Graph(load(model))
    g.nodes = list(g.model.graph.node)
    for node in g.nodes:
        for out in node.output:
            g.producer[out] = node
        for inp in node.input:
            if inp:
                g.consumers.setdefault(inp, []).append(node)
    g.constants = _constant_tensors(g.model)
    position = {id(n): i for i, n in enumerate(g.nodes)}
    depth = _depths(g.nodes, g.producer)
    g.order = sorted(g.nodes, key=lambda n: (depth[id(n)], position[id(n)]))
    return g


def strip_suffixes(name: str) -> str:
    """The FP32 name of a weight initializer renamed by a quantizer (see :data:`SUFFIXES`)."""
    changed = True
    while changed:
        changed = False
        for suffix in sorted(SUFFIXES, key=len, reverse=True):
            if name.endswith(suffix) and len(name) > len(suffix):
                name, changed = name[: -len(suffix)], True
    return re.sub(r"_(?:Dequantize|Quantize)Linear_\d+$", "", name)


def fp32_name(name: str, fp32_names: set[str] | frozenset[str] | None = None) -> str:
    """The FP32-file name of weight ``name``: :func:`strip_suffixes`, then, when the FP32 file's
    initializer names are known, also a trailing ``_<n>`` (ModelOpt's
    ``utils.duplicate_shared_constants`` gives each user of a shared initializer a copy ``name_1``,
    ``name_2``, ...), stripped only when that leads to a name the FP32 file has."""
    base = strip_suffixes(name)
    if not fp32_names or base in fp32_names:
        return base
    candidate = base
    while (match := re.fullmatch(r"(.+)_\d+", candidate)) is not None:
        candidate = strip_suffixes(match.group(1))
        if candidate in fp32_names:
            return candidate
    return base


def initializer_names(model: onnx.ModelProto | str | Path) -> frozenset[str]:
    """Names of the initializers and Constant-node outputs of ``model`` (e.g. the FP32 file)."""
    return frozenset(_constant_tensors(load(model)))


def weight_source(g: Graph, tensor: str) -> str | None:
    """The constant at the root of ``tensor`` through Q/DQ/Cast only (its name), or None."""
    seen = 0
    while seen < 8:
        if tensor in g.constants and tensor not in g.producer:
            return tensor
        node = g.producer.get(tensor)
        if node is None:
            return None
        if node.op_type == "Constant":
            return tensor
        if node.op_type not in TRANSPARENT:
            return None
        tensor, seen = node.input[0], seen + 1
    return None


def layer_keys(g: Graph, fp32_names: set[str] | frozenset[str] | None = None) -> dict[int, str]:
    """Stable layer identity of every non-Q/DQ/Cast, non-Constant node (by ``id``).

    A weight used by several layers gives ``name``, ``name@1``, ``name@2``... in canonical order.
    """
    keys: dict[int, str] = {}
    counters: Counter[str] = Counter()
    for node in g.order:
        if node.op_type in TRANSPARENT or node.op_type == "Constant":
            continue
        key = None
        if node.op_type in WEIGHTED_OPS and len(node.input) > WEIGHT_INPUT[node.op_type]:
            source = weight_source(g, node.input[WEIGHT_INPUT[node.op_type]])
            key = fp32_name(source, fp32_names) if source else None
        if key is None:
            key = f"{node.op_type}#{counters[node.op_type]}"
        else:
            uses = counters[f"weight:{key}"]
            counters[f"weight:{key}"] += 1
            key = f"{key}@{uses}" if uses else key
        counters[node.op_type] += 1
        keys[id(node)] = key
    return keys


def input_mark(g: Graph, tensor: str) -> str:
    """``Q`` if ``tensor`` is a DequantizeLinear output, ``q`` if DequantizeLinear -> Cast, else ``.``."""
    node = g.producer.get(tensor)
    if node is None:
        return "."
    if node.op_type == "DequantizeLinear":
        return "Q"
    if node.op_type == "Cast":
        before = g.producer.get(node.input[0])
        if before is not None and before.op_type == "DequantizeLinear":
            return "q"
    return "."


@dataclass(frozen=True)
class LayerInputs:
    """One layer of a Q/DQ model: its op, node name and per-input pattern (``Q``/``q``/``.``)."""

    op: str
    node: str
    pattern: str

    @property
    def quantized(self) -> tuple[int, ...]:
        """Indices of the inputs read from a DequantizeLinear (directly or through a Cast)."""
        return tuple(i for i, c in enumerate(self.pattern) if c in "Qq")

    @property
    def through_cast(self) -> tuple[int, ...]:
        """Indices of the inputs read from DequantizeLinear -> Cast."""
        return tuple(i for i, c in enumerate(self.pattern) if c == "q")


def quantized_inputs(model: onnx.ModelProto | str | Path,
                     fp32_names: set[str] | frozenset[str] | None = None) -> dict[str, LayerInputs]:
    """For every layer of ``model`` (keyed by :func:`layer_keys`), which inputs read a DequantizeLinear.

    ``fp32_names`` (:func:`initializer_names` of the FP32 file) lets weight names renamed with a
    numeric suffix be traced back to the FP32 name; without it only :data:`SUFFIXES` are stripped.
    """
    g = index_graph(model)
    keys = layer_keys(g, fp32_names)
    out: dict[str, LayerInputs] = {}
    for node in g.order:
        if id(node) in keys:
            pattern = "".join(input_mark(g, i) if i else "." for i in node.input)
            out[keys[id(node)]] = LayerInputs(node.op_type, node.name, pattern)
    return out


@dataclass(frozen=True)
class Row:
    """One line of the comparison: a layer and what each file quantizes on its inputs."""

    layer: str
    op: str
    ours: str
    theirs: str
    same: bool
    node: str = ""


def _quantized_set(layer: LayerInputs | None) -> tuple[int, ...] | None:
    """The quantized input indices of ``layer``; None when the file has no such layer."""
    return None if layer is None else layer.quantized


def compare(ours: onnx.ModelProto | str | Path | dict[str, LayerInputs],
            theirs: onnx.ModelProto | str | Path | dict[str, LayerInputs],
            only_quantized: bool = True,
            fp32_names: set[str] | frozenset[str] | None = None) -> list[Row]:
    """Rows (layer, op, ours' pattern, theirs' pattern, same) over the layers of both files.

    ``same`` compares the sets of quantized inputs (a Cast between the DequantizeLinear and the
    layer does not count as a difference). With ``only_quantized`` rows where neither file
    quantizes anything are left out, except weighted layers and Adds (always listed).
    ``fp32_names``: see :func:`quantized_inputs`.
    """
    a = ours if isinstance(ours, dict) else quantized_inputs(ours, fp32_names)
    b = theirs if isinstance(theirs, dict) else quantized_inputs(theirs, fp32_names)
    rows: list[Row] = []
    for key in list(a) + [k for k in b if k not in a]:
        la, lb = a.get(key), b.get(key)
        qa, qb = _quantized_set(la), _quantized_set(lb)
        ref = la or lb
        if only_quantized and not qa and not qb and ref.op not in ALWAYS_LISTED:
            continue
        rows.append(Row(layer=key, op=ref.op, ours=la.pattern if la else "(absent)",
                        theirs=lb.pattern if lb else "(absent)", same=qa == qb, node=ref.node))
    return rows


def format_table(rows: list[Row], ours_name: str = "ours", theirs_name: str = "modelopt") -> str:
    """A plain-text table of :func:`compare` rows, differences marked ``DIFF``, plus a legend."""
    head = ("layer", "op", ours_name, theirs_name, "same", "node")
    cells = [head] + [(r.layer, r.op, r.ours, r.theirs, "yes" if r.same else "DIFF", r.node) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1] for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 4)
    diff = sum(not r.same for r in rows)
    lines.append(f"{len(rows)} layers listed, {diff} differ. "
                 "Pattern: one letter per node input: Q = DequantizeLinear, q = DequantizeLinear -> Cast, . = float.")
    return "\n".join(lines)


def _scale_dtype(g: Graph, node: NodeProto) -> str:
    """The element type name of a Q/DQ node's scale input."""
    scale = node.input[1] if len(node.input) > 1 else ""
    tensor = g.constants.get(scale)
    if tensor is None:
        return "dynamic"
    return TensorProto.DataType.Name(tensor.data_type)


def _zero_point_dtype(g: Graph, node: NodeProto) -> str:
    """The element type name of a Q/DQ node's zero point (``none`` when it has none)."""
    if len(node.input) < 3 or not node.input[2]:
        return "none"
    tensor = g.constants.get(node.input[2])
    return TensorProto.DataType.Name(tensor.data_type) if tensor is not None else "dynamic"


def _is_residual_add(g: Graph, node: NodeProto) -> bool:
    """An Add of two activations (neither input a constant, even through Q/DQ/Cast)."""
    if node.op_type != "Add" or len(node.input) != 2:
        return False
    return all(weight_source(g, i) is None for i in node.input)


def counts(model: onnx.ModelProto | str | Path) -> dict[str, object]:
    """Q/DQ, Cast and residual-Add counts, opset and scale dtypes of a Q/DQ ONNX model."""
    g = index_graph(model)
    nodes = g.nodes
    qs = [n for n in nodes if n.op_type == "QuantizeLinear"]
    dqs = [n for n in nodes if n.op_type == "DequantizeLinear"]
    casts = [n for n in nodes if n.op_type == "Cast"]
    pairs = sum(1 for n in dqs if n.input[0] in g.producer and g.producer[n.input[0]].op_type == "QuantizeLinear")
    const_dq = sum(1 for n in dqs if n.input[0] in g.constants and n.input[0] not in g.producer)
    const_q = sum(1 for n in qs if weight_source(g, n.input[0]) is not None)
    after_dq = sum(1 for n in casts if n.input[0] in g.producer and g.producer[n.input[0]].op_type == "DequantizeLinear")
    before_q = sum(1 for n in casts if any(c.op_type == "QuantizeLinear" for c in g.consumers.get(n.output[0], [])))
    residual = [n for n in nodes if _is_residual_add(g, n)]
    marks = {n.name: "".join(input_mark(g, i) for i in n.input) for n in residual}
    opset = next((o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "QuantizeLinear": len(qs),
        "DequantizeLinear": len(dqs),
        "Q->DQ pairs": pairs,
        "Q of a constant (weight Q->DQ)": const_q,
        "DQ of a constant (int8 weight -> DQ)": const_dq,
        "Cast": len(casts),
        "Cast right after a DQ": after_dq,
        "Cast right before a Q": before_q,
        "residual Add": len(residual),
        "residual Add with a quantized input": sum(1 for m in marks.values() if set(m) & set("Qq")),
        "residual Add with both inputs quantized": sum(1 for m in marks.values() if "." not in m),
        "scale dtypes": dict(Counter(_scale_dtype(g, n) for n in qs + dqs)),
        "zero-point dtypes": dict(Counter(_zero_point_dtype(g, n) for n in qs + dqs)),
    }


def format_counts(named: dict[str, dict[str, object]]) -> str:
    """Side-by-side table of :func:`counts` for several files (``{label: counts}``)."""
    labels = list(named)
    keys = list(next(iter(named.values())))
    cells = [["", *labels]] + [[key, *(str(named[label][key]) for label in labels)] for key in keys]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
