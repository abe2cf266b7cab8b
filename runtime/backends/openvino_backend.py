"""OpenVINO backend: runs the toolkit's FP32, FP16 and INT8 Q/DQ ONNX artifacts on the CPU (no torch).

An optional extra (``pip install -e .[openvino]``). The ONNX file is read by OpenVINO directly (its
``metadata_props`` arrive in the model's ``rt_info``, so the toolkit metadata is read from the same
file, like the ONNX Runtime backend does) and compiled for latency: one stream, ``threads``
inference threads. Q/DQ INT8 files run on OpenVINO's own INT8 kernels.

``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` for the float parts of the graph:
``"f32"`` (default: the artifact's own numerics, like ONNX Runtime), ``"bf16"``, ``"f16"``, or
``"auto"`` (OpenVINO's default for this CPU: bf16 where it has native bf16 (AVX512-BF16 / AMX),
else f32). OpenVINO accepts a bf16 hint on a CPU without native bf16 and emulates it: measured
4.6x slower than f32 there (r50os8 256x512 crop, median 20.4 s vs 4.5 s, export/benchmark.py on an
AVX-512 + VNNI Xeon without AVX512-BF16/AMX); the backend says so in one line on stderr.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from runtime.artifact import META_KEY, meta_from_props
from runtime.backends.base import Backend, as_output, check_meta_shapes
from runtime.errors import ToolkitError, require
from runtime.loaders import onnx_file

HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16", "auto": "auto"}
CAPABILITY = {"bf16": "BF16", "f16": "FP16"}   # OPTIMIZATION_CAPABILITIES entry that makes a hint native


def import_openvino() -> Any:
    return require("openvino", "OpenVINO is not installed",
                   fix="pip install -e .[openvino]  (or: pip install openvino)")


def native_hints(capabilities: list[str] | tuple[str, ...]) -> list[str]:
    """The precision hints that run natively (fast) on a CPU with these OpenVINO capabilities."""
    return ["f32"] + [hint for hint, cap in CAPABILITY.items() if cap in capabilities]


def cpu_native_hints(device: str = "CPU") -> list[str]:
    """The hints this machine's CPU runs natively: OpenVINO's capability list, bf16 only where the CPU
    also reports AVX512-BF16 / AMX-BF16 (``runtime.sysinfo.native_bf16``); ``["f32"]`` without OpenVINO."""
    from runtime.sysinfo import native_bf16

    try:
        import openvino as ov
    except ImportError:
        return ["f32"]
    hints = native_hints(list(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")))
    return [h for h in hints if h != "bf16" or native_bf16()]


def hint_note(hint: str, capabilities: list[str] | tuple[str, ...]) -> str | None:
    """One line for an explicit hint this CPU would only emulate (slow); None when it is native."""
    if hint in ("f32", "auto") or hint in native_hints(capabilities):
        return None
    return (f"note: OpenVINO precision {hint} is not native on this CPU (OpenVINO reports "
            f"{', '.join(capabilities) or 'no capabilities'}); it runs emulated and slower than f32 "
            f"(bf16: measured 4.6x slower on AVX-512 without AVX512-BF16/AMX); use f32 or auto")


class OpenVinoBackend(Backend):
    """A toolkit ONNX artifact compiled by OpenVINO for the CPU.

    Options: ``threads`` (INFERENCE_NUM_THREADS; None = OpenVINO's default, all cores),
    ``precision`` (f32 | bf16 | f16 | auto, see the module doc), ``flush_denormals`` (treat denormal
    floats as zero: on by default, as in the ONNX Runtime backend), ``device`` (OpenVINO device
    name, default "CPU").
    """

    name = "openvino"

    def __init__(self, artifact: str | os.PathLike, threads: int | None = None, precision: str | None = "f32",
                 flush_denormals: bool = True, device: str = "CPU") -> None:
        super().__init__(str(artifact))
        key = "f32" if precision is None else str(precision).lower()
        if key not in HINTS:
            raise ToolkitError(f"unknown OpenVINO precision {precision!r}", expected="f32, bf16, f16 or auto")
        self.hint = HINTS[key]
        self.threads = threads
        self.flush_denormals = flush_denormals
        self.device = str(device)
        self._compiled: Any = None
        self._request: Any = None
        self._executed = "f32"

    def _allocate(self) -> None:
        ov = import_openvino()
        path = onnx_file(self.artifact)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError/GeneralFailure subclasses on bad files
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ToolkitError(f"OpenVINO cannot load {path}", found=first,
                               fix="re-export the artifact; the file may be truncated or corrupt") from None
        self._meta = meta_from_props(_framework_props(model), str(path))
        self._check_io(model)
        caps = list(core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        note = hint_note(self.hint, caps)
        if note:
            print(note, file=sys.stderr)
        self._compiled = core.compile_model(model, self.device, self._config())
        self._request = self._compiled.create_infer_request()
        self._executed = _short_type(self._compiled.get_property("INFERENCE_PRECISION_HINT"))

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                  "CPU_DENORMALS_OPTIMIZATION": bool(self.flush_denormals)}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.hint != "auto":
            config["INFERENCE_PRECISION_HINT"] = self.hint
        return config

    def _check_io(self, model: Any) -> None:
        if len(model.inputs) != 1:
            raise ToolkitError(f"{self.artifact} has {len(model.inputs)} inputs", expected="exactly 1 image input")
        check_meta_shapes(self.meta, self.artifact, _static_dims(model.inputs[0]), _static_dims(model.outputs[0]))

    def _release(self) -> None:
        self._request = None
        self._compiled = None

    @property
    def label(self) -> str:
        """``openvino:STEM``, or ``openvino-bf16:STEM`` (the hint) where the float layers are not f32."""
        base = super().label
        return base if self.hint == "f32" else base.replace("openvino:", f"openvino-{self.hint}:", 1)

    @property
    def precision(self) -> str:
        """The artifact's precision, or bf16 / fp16 when the hint runs an FP32 artifact's float parts so."""
        base = self.meta.precision
        if base == "fp32" and self._executed in ("bf16", "f16"):
            return {"bf16": "bf16", "f16": "fp16"}[self._executed]
        return base

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        out = self._request.get_output_tensor(0).data
        return as_output(np.array(out, copy=True), self.output_kind)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, threads=self.threads, precision_hint=self.hint,
                 executed_precision=self._executed, layout=self.meta.layout)
        return d


def _framework_props(model: Any) -> dict[str, str]:
    """The ONNX ``metadata_props`` that OpenVINO keeps in ``rt_info['framework']``."""
    if not model.has_rt_info(["framework", META_KEY]):
        return {}
    return {META_KEY: model.get_rt_info(["framework", META_KEY]).astype(str)}


def _static_dims(port: Any) -> list[Any]:
    """A port's shape as ints, with -1 for dynamic dimensions."""
    return [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]


def _short_type(value: Any) -> str:
    """OpenVINO element type -> "f32" / "bf16" / "f16"."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(text, text)
