"""Small ONNX graph helpers shared by the INT8 (calibration/) and FP16 (export/precision) steps.

The one domain fact here: the non-local block's affinity is ``MatMul -> (Mul|Div|Add)* -> Softmax
-> MatMul``. Both precision steps keep that chain out of reduced precision by default (FP16
overflow / INT8 saturation of the affinity logits are the classic failure modes of attention).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

ATTENTION = "attention"      # symbolic keep entry: the non-local affinity chain
HEAD = "head"                # symbolic keep entry: the last Conv (classifier) and what follows it
SCALE_OPS = ("Mul", "Div", "Add", "Sub", "Cast")
DEFAULT_KEEP = (ATTENTION,)                 # FP16: the affinity stays FP32
DEFAULT_KEEP_INT8 = (ATTENTION, HEAD)       # INT8: the affinity and the logits head stay float


def producers(graph) -> dict[str, object]:
    """tensor name -> node producing it."""
    return {out: node for node in graph.node for out in node.output}


def consumers(graph) -> dict[str, list]:
    """tensor name -> nodes consuming it."""
    table: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                table[name].append(node)
    return table


def float_source(prod: dict, tensor: str) -> str | None:
    """The float tensor behind ``tensor`` when ``tensor`` is the output of a ``QuantizeLinear ->
    DequantizeLinear`` pair (``prod`` from :func:`producers`); None otherwise."""
    dq = prod.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = prod.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def prune_dead_nodes(graph) -> None:
    """Drop nodes whose outputs nobody reads (walking back from the graph outputs) and the
    initializers only they read."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    used_inits = [i for i in graph.initializer if i.name in needed]
    del graph.node[:]
    graph.node.extend(reversed(keep))
    del graph.initializer[:]
    graph.initializer.extend(used_inits)


def name_nodes(graph, prefix: str = "node") -> None:
    """Give every unnamed node a unique name (quantizers and precision lists address nodes by name)."""
    used = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{prefix}_{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def attention_nodes(graph) -> list[str]:
    """Names of the affinity chain nodes of every Softmax: the MatMul feeding it (through scale ops),
    the scale ops, the Softmax and the MatMul(s) consuming its output."""
    prod, cons = producers(graph), consumers(graph)
    found: list[str] = []
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        chain = [node]
        cur = prod.get(node.input[0])
        while cur is not None and cur.op_type in SCALE_OPS:
            chain.append(cur)
            cur = prod.get(cur.input[0])
        if cur is not None and cur.op_type == "MatMul":
            chain.append(cur)
        frontier = list(node.output)
        while frontier:
            for user in cons.get(frontier.pop(), []):
                if user.op_type == "Cast":
                    chain.append(user)
                    frontier.extend(user.output)
                elif user.op_type == "MatMul":
                    chain.append(user)
        found.extend(n.name for n in chain if n.name not in found)
    return found


def head_nodes(graph) -> list[str]:
    """The classifier head: walking back from each graph output, every node up to and including
    the first Conv (e.g. Conv -> Resize [-> ArgMax -> Cast]). Keeping it float keeps the logits
    at full resolution (an 8-bit logit map creates argmax ties)."""
    prod = producers(graph)
    found: list[str] = []
    frontier = [o.name for o in graph.output]
    while frontier:
        node = prod.get(frontier.pop())
        if node is None or node.name in found:
            continue
        found.append(node.name)
        if node.op_type != "Conv":
            frontier.extend(i for i in node.input[:1] if i)
    return found


def select_nodes(graph, keep: Iterable[str]) -> list[str]:
    """Resolve a keep list into node names: "attention", "head", op types or node names.

    An entry that matches nothing is an error the caller reports (a typo must not pass silently).
    """
    from runtime.errors import ToolkitError

    names = {n.name for n in graph.node}
    op_types = {n.op_type for n in graph.node}
    selected: list[str] = []
    for item in keep:
        if item == ATTENTION:
            hits = attention_nodes(graph)
        elif item == HEAD:
            hits = head_nodes(graph)
        elif item in op_types:
            hits = [n.name for n in graph.node if n.op_type == item]
        elif item in names:
            hits = [item]
        else:
            hits = []
        if not hits:
            import difflib
            close = difflib.get_close_matches(item, sorted(op_types | names | {ATTENTION, HEAD}), n=2)
            raise ToolkitError(f"--keep entry {item!r} matches no node of the graph",
                               expected="'attention', 'head', an op type (e.g. Softmax) or a node name",
                               fix=f"did you mean {' or '.join(close)}?" if close else None)
        selected.extend(h for h in hits if h not in selected)
    return selected


def op_counts(graph) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in graph.node:
        counts[node.op_type] += 1
    return dict(counts)


def parse_keep(text: str | Sequence[str] | None, default: Sequence[str] = DEFAULT_KEEP) -> tuple[str, ...]:
    """``"attention,Resize"`` -> ("attention", "Resize"); ``"none"`` or "" -> (); None -> default."""
    if text is None:
        return tuple(default)
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [i.strip() for i in items if i.strip()]
    return () if items in ([], ["none"]) else tuple(items)


def fold_attention_scale(graph) -> int:
    """``Softmax(MatMul(A, B) * s)`` -> ``Softmax(MatMul(A * s, B))`` for a scalar constant ``s``.

    Same affinity up to rounding, but the scale is applied to the (HW x C') operand instead of the
    (HW x HW) product: ~C'/HW of the work, and in the ORT-CPU INT8 layout the scaled operand is
    requantised for free instead of an extra float pass over the affinity. Returns the count.
    """
    from onnx import numpy_helper

    prod, cons = producers(graph), consumers(graph)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    folded = 0
    for soft in [n for n in graph.node if n.op_type == "Softmax"]:
        mul = prod.get(soft.input[0])
        if mul is None or mul.op_type != "Mul" or len(cons.get(mul.output[0], [])) != 1:
            continue
        scalar = [i for i in mul.input if i in consts and consts[i].size == 1]
        other = [i for i in mul.input if i not in scalar]
        mm = prod.get(other[0]) if len(scalar) == 1 and len(other) == 1 else None
        if mm is None or mm.op_type != "MatMul" or len(cons.get(mm.output[0], [])) != 1:
            continue
        scaled = f"{mm.input[0]}__scaled"
        del mul.input[:]
        mul.input.extend([mm.input[0], scalar[0]])
        mul.output[0] = scaled
        mm.input[0] = scaled
        soft.input[0] = mm.output[0]
        folded += 1
    if folded:
        topological_sort(graph)
    return folded


def topological_sort(graph) -> None:
    """Reorder nodes so every input is produced before use (after a local rewiring)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or a dangling input")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def make_portable(model) -> list[str]:
    """Declare only the opset domains the nodes use, and the lowest IR version the opset allows.

    ORT's quantization pre-processing declares eight extra domains (``ai.onnx.ml`` 5 among them)
    that ONNX Runtime 1.16/1.17 (JetPack 5) refuse to load; a newer ``onnx`` may write an IR
    version newer than those runtimes accept (1.16: IR <= 9; opset 17 needs IR 8). The graphs use
    no IR-9+ feature (float8 types, functions). Returns the dropped domains.
    """
    from onnx import helper

    used = {n.domain for n in model.graph.node} | {""}
    dropped = [o.domain for o in model.opset_import if o.domain not in used and o.domain != "ai.onnx"]
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    default = [o for o in kept if o.domain in ("", "ai.onnx")]
    if default:
        model.ir_version = min(model.ir_version, helper.find_min_ir_version_for(default))
    return dropped
