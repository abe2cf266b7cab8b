"""A dynamic-batch copy of a static-batch ONNX artifact, so Triton's dynamic batcher can serve it.

The toolkit exports a static batch (TensorRT and the INT8 calibration want static shapes); the
exporter folds that batch into a few shape constants: Reshape targets ``[B, C, -1]`` and the final
Resize ``sizes [B, K, H, W]``. This module rewrites exactly those: graph I/O dim 0 becomes the
symbolic ``batch``, a Reshape target's leading B becomes 0 ("copy the input's dim", allowzero=0),
and a Resize by ``sizes`` becomes a Resize by the equivalent ``scales`` (batch and channel scale 1).
Any other constant holding the batch is refused, and the result is checked numerically: a batch of
2B tiles through the copy must match two runs of the original.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ToolkitError
from runtime.loaders import SessionFromOnnx

SHAPE_OPS = ("Expand", "Tile", "ConstantOfShape")


def _constants(graph: Any) -> dict[str, Any]:
    """name -> TensorProto for initializers and Constant nodes' values."""
    found = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = attr.t
    return found


def _set_tensor(tensor: Any, values: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(tensor).dtype), tensor.name))


def _static_shapes(model: Any) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    return shapes


def make_batch_dynamic(model: Any, batch: int) -> Any:
    """Return a copy of the ONNX ``model`` whose batch dimension is symbolic (see the module doc)."""
    import onnx
    from onnx import numpy_helper

    shapes = _static_shapes(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = _constants(graph)
    done: set[str] = set()
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts and node.input[1] not in done:
            target = numpy_helper.to_array(consts[node.input[1]])
            allowzero = any(a.name == "allowzero" and a.i == 1 for a in node.attribute)
            if target.size and target[0] == batch and not allowzero:
                target = target.copy()
                target[0] = 0
                _set_tensor(consts[node.input[1]], target)
                done.add(node.input[1])
        elif node.op_type == "Resize" and len(node.input) == 4 and node.input[3] in consts:
            _resize_by_scales(graph, node, numpy_helper.to_array(consts[node.input[3]]), shapes, batch)
        elif node.op_type in SHAPE_OPS:
            raise ToolkitError(f"cannot make {node.op_type} node {node.name!r} batch-dynamic",
                               fix="serve the artifact with its static batch: --max-batch 0")
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del graph.value_info[:]
    used = {name for n in graph.node for name in n.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:            # e.g. the Resize sizes replaced by scales
        graph.initializer.remove(init)
    return out


def _resize_by_scales(graph: Any, node: Any, sizes: np.ndarray, shapes: dict, batch: int) -> None:
    from onnx import numpy_helper

    src = shapes.get(node.input[0])
    if sizes[0] != batch or not src or min(src) <= 0:
        raise ToolkitError(f"Resize node {node.name!r} has sizes {sizes.tolist()} on an input of unknown shape",
                           fix="serve the artifact with its static batch: --max-batch 0")
    scales = np.asarray(sizes, np.float64) / np.asarray(src, np.float64)
    if any(int(np.floor(np.float32(s) * n)) != int(m) for s, n, m in zip(scales, src, sizes)):
        raise ToolkitError(f"Resize node {node.name!r}: sizes {sizes.tolist()} are not an exact scale of {src}",
                           fix="serve the artifact with its static batch: --max-batch 0")
    name = node.name + "_scales_dynamic_batch"
    graph.initializer.append(numpy_helper.from_array(scales.astype(np.float32), name))
    x, roi = node.input[0], node.input[1]
    del node.input[:]
    node.input.extend([x, roi, name])


def check_batch_dynamic(original: Path, dynamic: Path, batch: int, seed: int = 0) -> float:
    """Run 2*batch random tiles through ``dynamic`` and compare with the original run per batch.

    Returns the largest absolute difference; raises ToolkitError when the outputs differ."""
    a, b = (SessionFromOnnx(path, threads=1)() for path in (original, dynamic))
    inp = a.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    shape = [int(d) for d in inp.shape]
    tiles = np.random.default_rng(seed).normal(0, 1, [2 * batch] + shape[1:]).astype(dtype)
    ref = np.concatenate([a.run(None, {inp.name: tiles[i:i + batch]})[0] for i in (0, batch)])
    got = b.run(None, {inp.name: tiles})[0]
    diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if got.shape == ref.shape else np.inf
    scale = float(np.max(np.abs(ref.astype(np.float64)))) or 1.0
    exact = ref.dtype.kind in "iub"
    if not (diff == 0.0 if exact else diff <= 1e-4 * scale + 1e-5):
        raise ToolkitError(f"the dynamic-batch copy of {original.name} does not match the original",
                           expected=f"shape {ref.shape}, max |diff| <= {1e-4 * scale:.2g}",
                           found=f"shape {got.shape}, max |diff| {diff:.3g}",
                           fix="serve the artifact with its static batch: --max-batch 0")
    return diff
