"""Backends: one contract for PyTorch, ONNX Runtime, OpenVINO and TensorRT.

``open_backend(artifact, backend="auto", **options)`` picks the backend from the artifact: a
``.onnx`` path -> ONNX Runtime, ``.engine``/``.plan`` -> TensorRT, a variant name -> the PyTorch
reference, a ``triton://HOST:PORT/MODEL`` string -> a model served by Triton. OpenVINO (an optional
extra) runs the same ``.onnx`` files when asked for by name (``backend="openvino"``); auto never picks it,
so installing it changes nothing for existing commands. Nothing heavy (torch, onnxruntime, openvino,
tensorrt) is imported until a backend is opened.
"""
from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path
from typing import Any

from runtime.backends.base import Backend
from runtime.errors import ToolkitError

BACKEND_NAMES = ("torch", "onnxruntime", "openvino", "tensorrt", "triton")
ALIASES = {"pytorch": "torch", "ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "ov": "openvino"}
TRITON_SCHEME = "triton://"
SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}
ALSO_RUNS = {"openvino": "onnxruntime"}     # backend -> the auto backend of the files it also runs
# Where each backend class lives, imported when it is opened. The PyTorch reference lives with the
# PyTorch model (models/backend.py): the torch-free runtime reaches it by name and never imports models/.
BACKEND_CLASSES = {
    "torch": "models.backend:TorchBackend",
    "onnxruntime": "runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "runtime.backends.openvino_backend:OpenVinoBackend",
    "tensorrt": "runtime.backends.tensorrt_backend:TensorRTBackend",
    "triton": "runtime.backends.triton_backend:TritonBackend",
}

__all__ = ["Backend", "open_backend", "backend_for", "BACKEND_NAMES"]


def _did_you_mean(word: str, choices: Any) -> str | None:
    hint = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.5)
    return f"did you mean {' or '.join(hint)}?" if hint else None


def backend_for(artifact: str | os.PathLike, backend: str = "auto") -> str:
    """The backend name for ``artifact`` ("torch" | "onnxruntime" | "openvino" | "tensorrt" | "triton")."""
    choice = ALIASES.get(str(backend).lower(), str(backend).lower())
    if choice not in BACKEND_NAMES + ("auto",):
        raise ToolkitError(f"unknown backend {backend!r}", expected="auto, " + ", ".join(BACKEND_NAMES),
                           fix=_did_you_mean(choice, BACKEND_NAMES + tuple(ALIASES)))
    served = str(artifact).startswith(TRITON_SCHEME)
    if served or choice == "triton":
        if not (served and choice in ("auto", "triton")):
            raise ToolkitError(f"the Triton backend serves triton://HOST:PORT/MODEL models, not {artifact}"
                               if choice == "triton" else f"{artifact} is served by Triton, not {choice}",
                               fix="pass --backend triton --url http://HOST:PORT --triton-model NAME, "
                                   "or a triton://HOST:PORT/MODEL artifact with --backend auto")
        return "triton"
    suffix = Path(str(artifact)).suffix.lower()
    by_suffix = SUFFIXES.get(suffix)
    if choice == "auto":
        if by_suffix:
            return by_suffix
        if suffix or os.sep in str(artifact) or "/" in str(artifact):
            raise ToolkitError(f"cannot tell the backend for {artifact}",
                               expected="a .onnx / .engine / .plan file or a model variant name",
                               fix=_did_you_mean(suffix, SUFFIXES) or "pass --backend")
        return "torch"
    if choice == "torch" and by_suffix:
        raise ToolkitError(f"the PyTorch backend takes a variant name, not {artifact}",
                           fix=f"use --backend {by_suffix} for this file")
    if choice in ALSO_RUNS and not by_suffix:
        raise ToolkitError(f"the {choice} backend takes an .onnx file, not {artifact}",
                           fix="export the ONNX artifact first (export/to_onnx.py)")
    if choice != "torch" and by_suffix and by_suffix != choice and ALSO_RUNS.get(choice) != by_suffix:
        raise ToolkitError(f"{artifact} is not a {choice} artifact", expected=choice, found=by_suffix,
                           fix=f"use --backend {by_suffix} or auto")
    return choice


def open_backend(artifact: str | os.PathLike, backend: str = "auto", **options: Any) -> Backend:
    """Build (not yet open) the backend for ``artifact``; use it as ``with open_backend(...) as b:``.

    Options per backend: torch: checkpoint, crop, device, autocast, batch, threads, model;
    onnxruntime: providers, threads, trt_cache_dir, spin, flush_denormals; openvino: threads,
    precision (f32 | bf16 | f16 | auto), flush_denormals, device; tensorrt: device, cuda, cuda_graph, strict;
    triton: url, model, timeout.
    """
    kind = backend_for(artifact, backend)
    if kind == "torch":
        from runtime.zoo import get_variant
        get_variant(str(artifact))   # unknown name -> did-you-mean now, not on open
    module, _, name = BACKEND_CLASSES[kind].partition(":")
    cls: Any = getattr(importlib.import_module(module), name)
    try:
        return cls(artifact, **options)
    except TypeError as exc:
        raise ToolkitError(f"bad option for the {kind} backend", found=str(exc),
                           fix="see runtime.backends.open_backend for the options each backend takes") from None
