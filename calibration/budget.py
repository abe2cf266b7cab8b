"""Candidates of the accuracy-budgeted precision search: layer units, their cost and their sensitivity.

A *unit* is what the search keeps in float as a whole: the non-local affinity chain
("attention"), the classifier head ("head") and every other Conv / MatMul / Gemm node on its own.
Each carries its multiply-accumulate count (the cost proxy: MACs left in float).

INT8 sensitivity is measured leave-one-out, on the very files the search builds: the fully quantised
model of the searched layout, then, for each unit, the same model with only that unit kept float
(``unit_float(unit)``; the search passes its own builder, so the ONNX-Runtime layout's float
attention rewiring is included). The score is how much the error of the logits against the FP32
model falls: the relative squared logit error of the fully quantised model minus that of the model
with the unit float, on a seeded subset of the calibration tiles (no labels needed, no held-out
frame used). The pixel disagreement is kept for the report. Scores are cached as JSON keyed by
everything they depend on. Without a builder, :func:`strip_qdq` makes the one-unit-float model from a
TensorRT-layout file (inputs-only Q/DQ, so every compute node owns its Q/DQ pairs).

Recipe 1 quantised one unit at a time with everything else float, in the TensorRT layout, while the
search scores ONNX-Runtime-layout candidates. Neither errors nor layouts add up: on the trained sample
model the attention alone barely moved the logits (the 5th of 31 units; 0.16 % of the calibration
tiles' pixels changed with *everything* quantised in the TensorRT layout), yet keeping it float in an
ORT-layout INT8 model took the drop from +0.52 to +0.01 mIoU points (README, Accuracy-budgeted
precision).

FP16 fails by range, not resolution: :func:`activation_peaks` runs the FP32 model once with every
float tensor as an output and records its peak magnitude; units are ranked by the peak of the
tensors they produce, and a unit whose output (or input) comes within ``FP16_MARGIN`` of FP16's
65504 is forced to stay FP32.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from calibration.graph import (ATTENTION, HEAD, attention_nodes, consumers, float_source, head_nodes,
                               producers, prune_dead_nodes)
from runtime.batches import run_static, static_batches
from runtime.fileio import atomic_open
from runtime.loaders import SessionFromOnnx

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
SENSITIVITY_RECIPE = 3    # 1: one unit quantised alone (TRT layout); 3: one unit float in the searched layout
FP16_MAX = 65504.0
FP16_MARGIN = 4.0            # a tensor peaking above 65504 / 4 on calibration tiles must stay FP32


@dataclass(frozen=True)
class Unit:
    """What the search keeps in float as one piece: ``name`` is a keep-list entry."""

    name: str
    nodes: tuple[str, ...]
    macs: float
    score: float = 0.0          # sensitivity (INT8: relative logit error; FP16: peak magnitude)
    detail: str = ""


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out: dict[str, tuple[int, ...]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def node_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> float:
    """Multiply-accumulates of one Conv / MatMul / Gemm node (0 where a shape is unknown)."""
    out = shapes.get(node.output[0])
    if not out:
        return 0.0
    if node.op_type in ("Conv", "ConvTranspose"):
        w = shapes.get(node.input[1])
        return float(np.prod(out)) * float(np.prod(w[1:])) if w else 0.0
    a = shapes.get(node.input[0])
    return float(np.prod(out)) * float(a[-1]) if a else 0.0


def layer_units(model: Any, forced: Iterable[str] = ()) -> list[Unit]:
    """The units of ``model`` in graph order: attention, head, then every other compute node.

    Nodes already in ``forced`` (names, resolved by the caller) are not offered as units.
    """
    graph = model.graph
    shapes = _shapes(model)
    macs = {n.name: node_macs(n, shapes) for n in graph.node if n.op_type in COMPUTE_OPS}
    forced = set(forced)
    units, taken = [], set(forced)
    for name, nodes in ((ATTENTION, attention_nodes(graph)), (HEAD, head_nodes(graph))):
        compute = [n for n in nodes if n in macs and n not in taken]
        if compute:
            units.append(Unit(name, tuple(compute), sum(macs[n] for n in compute)))
            taken.update(nodes)
    for node in graph.node:
        if node.name in macs and node.name not in taken:
            units.append(Unit(node.name, (node.name,), macs[node.name]))
    return units


def strip_qdq(model: Any, quantized: set[str]) -> Any:
    """A copy of a TensorRT-layout Q/DQ ``model`` where only the nodes in ``quantized`` still read
    quantised inputs; every other node reads the float tensors again."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    prod = producers(out.graph)
    for node in out.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name in quantized:
            continue
        for slot, name in enumerate(node.input):
            source = float_source(prod, name)
            if source is not None:
                node.input[slot] = source
            elif getattr(prod.get(name), "op_type", None) == "DequantizeLinear":   # pre-quantised constant weight
                return _fail_layout(node.name)
    prune_dead_nodes(out.graph)
    return out


def _fail_layout(name: str) -> Any:
    from runtime.errors import ToolkitError

    raise ToolkitError(f"cannot strip the Q/DQ pair in front of {name}: its weight is stored quantised",
                       fix="report this with the command line (the TensorRT layout keeps float weights "
                           "behind Q/DQ pairs)")


def _session(model: Any, threads: int | None = None) -> Any:
    return SessionFromOnnx(model, threads=threads, flush_denormals=True, log_severity=3)()


def run_model(model: Any, tiles: np.ndarray, batch: int = 1) -> np.ndarray:
    """Logits of an in-memory ONNX model on ``tiles`` (static batch ``batch``, last batch padded)."""
    from runtime.denormals import flush_denormals

    sess = _session(model)
    name = sess.get_inputs()[0].name
    with flush_denormals():                      # as the runtime runs it (denormals would only cost time)
        return run_static(lambda chunk: sess.run(None, {name: chunk})[0], tiles, batch, dtype=np.float32)


def output_error(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(relative squared logit error, pixel disagreement) of ``test`` against ``reference``."""
    ref = reference.astype(np.float64)
    err = float(np.sum((np.nan_to_num(test.astype(np.float64), nan=1e6, posinf=1e6, neginf=-1e6) - ref) ** 2))
    rel = err / max(float(np.sum(ref ** 2)), 1e-30)
    return rel, float(np.mean(reference.argmax(1) != test.argmax(1)))


def int8_sensitivity(full_qdq: Callable[[], Any], fp32_model: Any, units: Sequence[Unit], tiles: np.ndarray,
                     batch: int, cache: Path, key: dict, progress: bool = False,
                     unit_float: Callable[[Unit], Any] | None = None) -> tuple[list[Unit], bool]:
    """(``units`` ranked most sensitive first, reused from the cache?). ``full_qdq()`` makes the fully
    quantised model and ``unit_float(unit)`` the same with ``unit`` float (both only called when the
    cache misses; without ``unit_float``, ``full_qdq()`` must be TensorRT-layout and :func:`strip_qdq`
    makes them). The score of a unit is the fall of the logit error when that unit alone is float
    (see the module doc)."""
    cached = read_cache(cache, key)
    reused = cached is not None
    if cached is None:
        full = full_qdq()
        reference = run_model(fp32_model, tiles, batch)
        all_rel, all_dis = output_error(reference, run_model(full, tiles, batch))
        if unit_float is None:
            quantised = {n.name for n in full.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")}

            def unit_float(unit: Unit) -> Any:
                return strip_qdq(full, quantised - set(unit.nodes))
        cached = {}
        for unit in _iterate(units, progress, "INT8 sensitivity"):
            rel, dis = output_error(reference, run_model(unit_float(unit), tiles, batch))
            cached[unit.name] = {"score": all_rel - rel,
                                 "detail": f"float: logit error {all_rel:.2e} -> {rel:.2e}, pixels differing "
                                           f"{100 * all_dis:.2f}% -> {100 * dis:.2f}%"}
        write_cache(cache, key, cached)
    return rank(units, cached), reused


def rank(units: Sequence[Unit], scores: dict[str, dict]) -> list[Unit]:
    """Units with their scores, most sensitive first (ties: more MACs first, then graph order)."""
    from dataclasses import replace

    scored = [replace(u, score=float(scores[u.name]["score"]), detail=str(scores[u.name]["detail"]))
              for u in units if u.name in scores]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i].score, -scored[i].macs, i))
    return [scored[i] for i in order]


def _iterate(units: Sequence[Unit], progress: Any, desc: str) -> Iterable[Unit]:
    from tqdm import tqdm

    return tqdm(units, desc=desc, unit="layer", leave=False, disable=None if progress else True)


def read_cache(path: Path, key: dict) -> dict | None:
    """The ``scores`` of a keyed JSON cache file, or None when it is missing, unreadable or of another key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data.get("scores") if data.get("key") == key else None


def write_cache(path: Path, key: dict, scores: dict) -> None:
    """Write ``{"key": key, "scores": scores}`` atomically (read back by :func:`read_cache`)."""
    with atomic_open(path, "w") as f:
        json.dump({"key": key, "scores": scores}, f, indent=1, sort_keys=True)


def activation_peaks(model: Any, tiles: np.ndarray, batch: int = 1) -> dict[str, float]:
    """Peak |value| of every float tensor of ``model`` over ``tiles`` (one FP32 run, all outputs)."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    floats = {vi.name for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    existing = {o.name for o in probe.graph.output}
    for name in sorted(floats - existing):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = _session(probe)
    names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name
    peaks = dict.fromkeys(names, 0.0)
    for _start, chunk, _real in static_batches(tiles, batch, dtype=np.float32):
        for name, value in zip(names, sess.run(None, {inp: chunk})):
            if value.dtype.kind == "f" and value.size:
                peaks[name] = max(peaks[name], float(np.max(np.abs(value))))
    return peaks


def fp16_ranking(model: Any, units: Sequence[Unit], peaks: dict[str, float],
                 margin: float = FP16_MARGIN) -> tuple[list[str], list[Unit]]:
    """(node names that must stay FP32, units ranked by the peak of what they produce).

    A tensor above ``65504 / margin`` forces its producer *and* its readers to FP32 (an FP32
    producer feeding an FP16 reader would overflow in the Cast between them).
    """
    graph = model.graph
    limit = FP16_MAX / margin
    cons = consumers(graph)
    forced: list[str] = []
    for node in graph.node:
        for out in node.output:
            if peaks.get(out, 0.0) > limit:
                for name in [node.name] + [c.name for c in cons.get(out, [])]:
                    if name not in forced:
                        forced.append(name)
    by_node = {n.name: n for n in graph.node}
    scores = {}
    for unit in units:
        peak = max((peaks.get(o, 0.0) for n in unit.nodes for o in by_node[n].output), default=0.0)
        scores[unit.name] = {"score": peak, "detail": f"peak |output| {peak:.4g} (FP16 max 65504)"}
    return forced, rank(units, scores)


def save_units(units: Sequence[Unit]) -> list[dict]:
    """JSON-ready records (for reports)."""
    return [asdict(u) for u in units]
