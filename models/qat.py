"""Quantization-aware fine-tuning on the deployed INT8 graph itself.

:class:`QuantGraph` is a PyTorch module that executes a Q/DQ ONNX file (the TensorRT layout of
:mod:`calibration.qdq`): every QuantizeLinear -> DequantizeLinear pair on an activation becomes
PyTorch's own fake quantization (``torch.fake_quantize_per_tensor_affine``, a straight-through
gradient) with the file's scale and zero point, every weight pair becomes per-channel fake
quantization of a trainable float weight, and every other node its ``torch.nn.functional`` twin.
So the fake quantization sits exactly where the file puts its Q/DQ (residual inputs, pooling
input, the float-kept attention and head left float), by construction: nothing maps modules to
ONNX tensors, so nothing can map them wrongly.

What trains: the convolution weights and biases (BatchNorm is folded into them by the export, i.e.
frozen, as is usual for a short quantization-aware fine-tuning). What stays fixed: the activation
scales (the calibrated ranges, as NVIDIA ModelOpt keeps its calibrated ``amax``), every other
constant. Weight scales follow the weights (``max |w|`` per output channel / 127, what the
quantizer computes again when the fine-tuned weights are quantized): :meth:`QuantGraph.weights`
returns the trained float initializers by their ONNX names, for :func:`write_weights`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import ToolkitError

TRAINABLE_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2)}


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _key(name: str) -> str:
    """An ONNX initializer name as a parameter name (no dots)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _symmetric_pads(node: Any, a: dict) -> list[int]:
    """ONNX ``pads`` (begins, ends) as PyTorch's per-dimension padding; uneven padding is refused."""
    pads = list(a.get("pads", [0, 0, 0, 0]))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        raise ToolkitError(f"asymmetric {node.op_type} padding in {node.name} is not supported by QAT")
    return pads[:half]


def _fake_quant_weight(w: torch.Tensor, axis: int, qmin: int, qmax: int) -> torch.Tensor:
    """Symmetric per-channel fake quantization with the scales the quantizer would compute now."""
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.detach().abs().amax(dim=dims).float()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, axis, qmin, qmax)


def _qrange(zero_point: np.ndarray, symmetric_weight: bool) -> tuple[int, int]:
    if zero_point.dtype == np.uint8:
        return 0, 255
    if zero_point.dtype == np.int8:
        return (-127, 127) if symmetric_weight else (-128, 127)
    raise ToolkitError(f"quantization-aware training supports INT8 / UINT8 Q/DQ only, found {zero_point.dtype}")


class QuantGraph(nn.Module):
    """A Q/DQ ONNX graph as a trainable PyTorch module (see the module docstring).

    ``forward(x)`` returns the logits (in training mode ``{"out": logits}``, what the trainer
    reads); a trailing ArgMax (a labels-output file) is left out. Reshape targets whose leading
    dimension is the file's static batch follow the batch of ``x``, so training batches may differ
    from the exported one; the spatial size must be the file's crop.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        self.input_name = graph.input[0].name
        self.batch = graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        producer = {o: n for n in graph.node for o in n.output}
        self.params = nn.ParameterDict()
        self.names: dict[str, str] = {}          # parameter key -> ONNX initializer name
        self.readers: dict[str, list[tuple[str, int]]] = {}     # initializer -> the (node, input slot)s reading it
        self.steps: list[tuple[Callable[..., torch.Tensor], list[str], str]] = []
        self.weight_qdq: dict[str, tuple[int, int, int]] = {}      # DQ output -> (axis, qmin, qmax) of a weight
        trainable = self._trainable(graph, producer)
        for name in trainable:
            self.names[_key(name)] = name
            self.params[_key(name)] = nn.Parameter(torch.from_numpy(self.consts[name].astype(np.float32).copy()))
        outputs = [o.name for o in graph.output]
        last = producer.get(outputs[0])
        self.output = last.input[0] if last is not None and last.op_type == "ArgMax" else outputs[0]
        skip = {last.name} if last is not None and last.op_type == "ArgMax" else set()
        for node in graph.node:
            if node.name in skip or node.op_type == "Constant":
                continue
            self._add(node, producer)
        self.fake_quant_sites = sum(1 for fn, _i, _o in self.steps if getattr(fn, "site", None) == "activation")

    @classmethod
    def from_file(cls, path: str | Path) -> "QuantGraph":
        import onnx

        return cls(onnx.load(str(path)))

    def _trainable(self, graph: Any, producer: dict) -> list[str]:
        """Float initializers read (directly or through a weight Q/DQ) by a weight or bias slot."""
        names: list[str] = []
        for node in graph.node:
            for slot in TRAINABLE_SLOTS.get(node.op_type, ()):
                if slot >= len(node.input) or not node.input[slot]:
                    continue
                src = node.input[slot]
                dq = producer.get(src)
                if dq is not None and dq.op_type == "DequantizeLinear":
                    q = producer.get(dq.input[0])
                    src = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
                if src in self.consts and self.consts[src].dtype == np.float32:
                    self.readers.setdefault(src, []).append((node.name, slot))
                    if src not in names:
                        names.append(src)
        return names

    # --- graph construction: one step per node ---
    def _add(self, node: Any, producer: dict) -> None:
        op, a = node.op_type, _attrs(node)
        if op == "QuantizeLinear":
            return                                   # folded into its DequantizeLinear
        if op == "DequantizeLinear":
            self._add_qdq(node, producer, a)
            return
        build = getattr(self, f"_op_{op}", None)
        if build is None:
            raise ToolkitError(f"quantization-aware training cannot run ONNX op {op} (node {node.name})",
                               fix="QAT supports the ops of the NonLocalNet exports; report the model")
        self.steps.append((build(node, a), list(node.input), node.output[0]))

    def _add_qdq(self, dq: Any, producer: dict, a: dict) -> None:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise ToolkitError(f"DequantizeLinear {dq.name} does not read a QuantizeLinear",
                               fix="QAT needs a Q/DQ file (QuantizeLinear -> DequantizeLinear pairs)")
        scale, zero = self.consts[q.input[1]], self.consts[q.input[2]]
        src = q.input[0]
        if _key(src) in self.params:                  # a trainable weight: per-channel, scales follow it
            axis = int(a.get("axis", 1)) if scale.size > 1 else 0
            qmin, qmax = _qrange(zero, symmetric_weight=True)
            if np.any(zero != 0):
                raise ToolkitError(f"weight {src} has a non-zero zero point; QAT expects symmetric weights")

            def weight(w: torch.Tensor, axis: int = axis, qmin: int = qmin, qmax: int = qmax) -> torch.Tensor:
                return _fake_quant_weight(w, axis, qmin, qmax)
            weight.site = "weight"
            self.steps.append((weight, [src], dq.output[0]))
            return
        if scale.size != 1:
            raise ToolkitError(f"per-channel activation quantization ({dq.name}) is not supported by QAT")
        qmin, qmax = _qrange(zero, symmetric_weight=False)
        s, z = float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])

        def activation(x: torch.Tensor, s: float = s, z: int = z) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(x, s, z, qmin, qmax)
        activation.site = "activation"
        self.steps.append((activation, [src], dq.output[0]))

    @staticmethod
    def _op_Conv(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        pads = _symmetric_pads(node, a)
        stride, dil, groups = a.get("strides", [1, 1]), a.get("dilations", [1, 1]), int(a.get("group", 1))

        def conv(x, w, b=None):
            return F.conv2d(x, w, b, stride, pads, dil, groups)
        return conv

    @staticmethod
    def _op_Relu(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        return F.relu

    @staticmethod
    def _op_Add(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        return torch.add

    @staticmethod
    def _op_Mul(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        return torch.mul

    @staticmethod
    def _op_MatMul(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        return torch.matmul

    @staticmethod
    def _op_Softmax(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        axis = int(a.get("axis", -1))
        return lambda x: torch.softmax(x, dim=axis)

    @staticmethod
    def _op_Transpose(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        perm = list(a["perm"])
        return lambda x: x.permute(*perm)

    @staticmethod
    def _op_Concat(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        axis = int(a["axis"])
        return lambda *xs: torch.cat(xs, dim=axis)

    def _op_Reshape(self, node: Any, a: dict) -> Callable[..., torch.Tensor]:
        if int(a.get("allowzero", 0)):
            raise ToolkitError(f"Reshape {node.name} with allowzero=1 is not supported by QAT")
        batch = self.batch

        def reshape(x, shape):
            dims = [int(v) for v in np.asarray(shape).reshape(-1)]
            dims = [x.shape[i] if v == 0 else v for i, v in enumerate(dims)]
            if dims and dims[0] == batch and x.shape[0] != batch:
                dims[0] = x.shape[0]                   # the static batch follows the training batch
            return x.reshape(dims)
        return reshape

    @staticmethod
    def _op_Flatten(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        axis = int(a.get("axis", 1))
        return lambda x: x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)

    @staticmethod
    def _op_MaxPool(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        pads = _symmetric_pads(node, a)
        kernel, stride = a["kernel_shape"], a.get("strides", [1, 1])
        dil, ceil = a.get("dilations", [1, 1]), bool(a.get("ceil_mode", 0))
        return lambda x: F.max_pool2d(x, kernel, stride, pads, dil, ceil)

    @staticmethod
    def _op_Resize(node: Any, a: dict) -> Callable[..., torch.Tensor]:
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        ctm = a.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        if mode != "linear" or ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise ToolkitError(f"Resize {node.name} ({mode}, {ctm}) is not supported by QAT",
                               expected="linear with half_pixel / pytorch_half_pixel / align_corners")
        corners = ctm == "align_corners"

        def resize(x, roi=None, scales=None, sizes=None):
            if sizes is not None and np.asarray(sizes).size:
                size = [int(v) for v in np.asarray(sizes).reshape(-1)[2:]]
                return F.interpolate(x, size=size, mode="bilinear", align_corners=corners)
            factors = [float(v) for v in np.asarray(scales).reshape(-1)[2:]]
            size = [int(np.floor(d * f)) for d, f in zip(x.shape[2:], factors)]
            return F.interpolate(x, size=size, mode="bilinear", align_corners=corners)
        return resize

    # --- running ---
    def _value(self, name: str, env: dict) -> Any:
        if name in env:
            return env[name]
        key = _key(name)
        if key in self.params and self.names.get(key) == name:
            return self.params[key]
        if name in self.consts:
            return self.consts[name]
        raise KeyError(name)

    def _tensor(self, value: Any, like: torch.Tensor) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy()).to(like.dtype)
        return value

    def forward(self, x: torch.Tensor) -> Any:
        env: dict[str, Any] = {self.input_name: x}
        for fn, inputs, output in self.steps:
            args = [self._value(i, env) if i else None for i in inputs]
            if fn in (torch.add, torch.mul, torch.matmul):
                args = [self._tensor(v, x) for v in args]
            env[output] = fn(*args)
        out = env[self.output]
        return {"out": out} if self.training else out

    def weights(self) -> dict[tuple[str, int], np.ndarray]:
        """The trained float weights and biases, by the (node name, input slot) that reads them (the
        quantizer renames shared initializers, node names stay)."""
        out = {}
        for key, p in self.params.items():
            value = p.detach().cpu().contiguous().numpy().astype(np.float32)
            for reader in self.readers[self.names[key]]:
                out[reader] = value
        return out


def write_weights(src: str | Path, weights: dict[tuple[str, int], np.ndarray], dst: str | Path) -> int:
    """A copy of the FP32 ONNX ``src`` whose nodes read the fine-tuned ``weights`` ((node, slot) ->
    array) instead of their initializers, written atomically. An initializer read by one such slot
    only is replaced in place; one shared with other readers (the simplifier merges equal constants)
    is left to them and the slot gets its own. Returns the number of slots; a node or slot ``src``
    lacks, or a shape that differs, is an error."""
    import onnx
    from onnx import numpy_helper

    from runtime.fileio import atomic_path

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for (node_name, slot), value in weights.items():
        node = nodes.get(node_name)
        if node is None or slot >= len(node.input) or node.input[slot] not in inits:
            raise ToolkitError(f"{src} has no initializer at {node_name} input {slot} to take the fine-tuned weights",
                               fix="fine-tune a Q/DQ file made from this FP32 model")
        name = node.input[slot]
        old = numpy_helper.to_array(inits[name])
        if old.shape != value.shape:
            raise ToolkitError(f"fine-tuned weight of {node_name} has shape {value.shape}, the model {old.shape}")
        if readers[name] == 1:
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(old.dtype), name))
        else:
            own = f"{name}_{node_name.strip('/').replace('/', '_')}_{slot}"
            graph.initializer.append(numpy_helper.from_array(value.astype(old.dtype), own))
            node.input[slot] = own
            readers[name] -= 1
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return len(weights)
