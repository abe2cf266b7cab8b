"""ONNX Runtime backend: runs the FP32, FP16 and both INT8 ONNX artifacts (no torch).

Providers: the CPU provider by default; ``providers="cuda"`` or ``"tensorrt"`` (or a list of
provider names / ``(name, options)`` tuples) when ``onnxruntime-gpu`` provides them. Metadata is
read from the session (``custom_metadata_map``) and checked against the graph's I/O shapes.
"""
from __future__ import annotations

import difflib
import os
import sys
from typing import Any, Sequence

import numpy as np

from runtime.artifact import read_onnx_meta
from runtime.backends.base import Backend, as_output, check_meta_shapes
from runtime.denormals import flush_denormals
from runtime.errors import ToolkitError
from runtime.loaders import SessionFromOnnx, import_onnxruntime, onnx_file

SHORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def tensorrt_provider_options(cache_dir: str | None, precision: str = "fp32", layout: str = "") -> dict[str, Any]:
    """Default options of ONNX Runtime's TensorRT provider for one artifact.

    Engine and timing caches under ``cache_dir``; ``trt_int8_enable`` + ``trt_fp16_enable`` for the
    TensorRT 8.x Q/DQ file (the provider builds weakly typed networks, on TensorRT 8.6 and 10 alike,
    so only that file fits it; the strongly typed ``_int8_fp16`` file is refused) and
    ``trt_fp16_enable`` for FP16 files, as the builder flags of export/to_trt.py on 8.x. The provider
    has no per-layer precision option: the affinity is not pinned FP32 there (export/to_trt.py does).
    """
    if precision == "int8" and layout != "trt":
        raise ToolkitError(f"ONNX Runtime's TensorRT provider cannot run the INT8 layout {layout!r}: it builds "
                           "weakly typed networks with builder flags (TensorRT 8.6 and 10), which take the "
                           "TensorRT 8.x file (opset 17, FP32 Q/DQ scales)",
                           fix="pass the *_int8_trt.onnx artifact beside it (or --providers cpu for this file)")
    cache = cache_dir or os.path.join("artifacts", "ort_trt_cache")
    opts: dict[str, Any] = {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    if precision == "int8":
        opts["trt_int8_enable"] = True
    if precision in ("fp16", "int8"):     # INT8: the float layers FP16, as export/to_trt.py builds it
        opts["trt_fp16_enable"] = True
    return opts


# Graph passes that break FP16-scale Q/DQ files (the strongly typed TensorRT INT8 file, layout trt+fp16):
# WeightBiasQuantization (1.2x+) folds bias / (input scale x weight scale) into FP16, which overflows past
# 65504 on some convolutions (wrong outputs, no error; 98.46 % vs 99.79 % agreement on the sample model);
# QDQSelectorActionTransformer makes ONNX Runtime 1.16 (JetPack 5) fail at session creation ("Tensor type
# mismatch", FP16 scales). Unknown names are ignored, so one list serves every version.
FP16_QDQ_DISABLED = ("WeightBiasQuantization", "QDQSelectorActionTransformer")


def session_kwargs(meta: Any) -> dict[str, Any]:
    """Extra :class:`SessionFromOnnx` options for one artifact (passes disabled for FP16-scale Q/DQ)."""
    return {"disabled_optimizers": list(FP16_QDQ_DISABLED)} if meta.layout == "trt+fp16" else {}


def resolve_providers(providers: str | Sequence[Any] | None, available: Sequence[str],
                      trt_cache_dir: str | None = None, precision: str = "fp32", layout: str = "") -> list[Any]:
    """Expand short names ("cpu", "cuda", "tensorrt") into an ORT provider list, CPU last."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        wanted = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"],
                  "trt": ["tensorrt", "cuda", "cpu"]}.get(providers.lower(), [providers])
    else:
        wanted = list(providers)
    out: list[Any] = []
    for item in wanted:
        name, opts = (item if isinstance(item, tuple) else (item, None))
        full = SHORT_PROVIDERS.get(str(name).lower(), str(name))
        if full not in available:
            hint = difflib.get_close_matches(full, list(available), n=1)
            raise ToolkitError(f"ONNX Runtime provider {full} is not available here",
                               expected=", ".join(available), found=full,
                               fix=(f"did you mean {hint[0]}? " if hint else "")
                               + "GPU providers need `pip install onnxruntime-gpu` (x86_64) and CUDA")
        if full == "TensorrtExecutionProvider" and opts is None:
            opts = tensorrt_provider_options(trt_cache_dir, precision, layout)
        out.append((full, opts) if opts else full)
    return out


def cpu_precision_note(precision: str, providers: Sequence[str]) -> str | None:
    """One line for an FP16 artifact on ORT's CPU provider: it runs no faster than FP32 there."""
    if precision != "fp16" or any(p != "CPUExecutionProvider" for p in providers):
        return None
    return ("note: ONNX Runtime's CPU provider casts most FP16 layers back to FP32, so this FP16 artifact runs "
            "no faster than the FP32 one on a CPU; use the FP32 or INT8 artifact there, or bf16 through "
            "--backend openvino --ov-precision bf16 where the CPU has native bf16 (AVX512-BF16 / AMX)")


class OnnxRuntimeBackend(Backend):
    """An ONNX artifact in an ``onnxruntime.InferenceSession``.

    Options: ``providers`` (None = CPU; "cuda"; "tensorrt"; or an explicit list), ``threads``
    (intra-op threads; None = ORT default, all cores), ``trt_cache_dir`` (TensorRT EP engine cache),
    ``spin`` (let idle intra-op threads busy-wait: off by default, since spinning threads take the CPU
    from the capture / stitching threads of the demo and from other processes on a small device),
    ``flush_denormals`` (treat denormal floats as zero: on by default, much faster on x86 CPUs; set on
    ORT's pool threads by the session option and on the calling thread by
    :func:`runtime.denormals.flush_denormals`, which the option reaches only once per process).
    """

    name = "onnxruntime"

    def __init__(self, artifact: str | os.PathLike, providers: str | Sequence[Any] | None = None,
                 threads: int | None = None, trt_cache_dir: str | None = None, spin: bool = False,
                 flush_denormals: bool = True) -> None:
        super().__init__(str(artifact))
        self.providers = providers
        self.spin = spin
        self.flush_denormals = flush_denormals
        self.threads = threads
        self.trt_cache_dir = trt_cache_dir
        self._session: Any = None
        self._input_name = ""
        self._input_dtype: Any = np.float32

    def _allocate(self) -> None:
        ort = import_onnxruntime()
        path = onnx_file(self.artifact)
        self._meta = read_onnx_meta(path)      # before the session: the TensorRT provider options need it
        providers = resolve_providers(self.providers, ort.get_available_providers(), self.trt_cache_dir,
                                      self._meta.precision, self._meta.layout)
        self._session = SessionFromOnnx(path, threads=self.threads, providers=providers, optimization="all",
                                        flush_denormals=self.flush_denormals, spin=self.spin,
                                        **session_kwargs(self._meta))()
        self._check_io()
        note = cpu_precision_note(self._meta.precision, self.active_providers)
        if note:
            print(note, file=sys.stderr)

    def _check_io(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ToolkitError(f"{self.artifact} has {len(inputs)} inputs", expected="exactly 1 image input")
        inp = inputs[0]
        self._input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        check_meta_shapes(self.meta, self.artifact, inp.shape, outputs[0].shape)

    def _release(self) -> None:
        self._session = None

    @property
    def active_providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        feed = {self._input_name: batch.astype(self._input_dtype, copy=False)}
        with flush_denormals(self.flush_denormals):   # the calling thread too (the session option misses it)
            out = self._session.run(None, feed)[0]
        return as_output(out, self.output_kind)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(providers=self.active_providers, layout=self.meta.layout, threads=self.threads)
        return d
