"""The runners export/benchmark.py times side by side: the toolkit's paths and its peers.

Every runner is built lazily (``Runner.build`` returns a callable float32 NCHW -> output) so its
setup time (session creation, OpenVINO compile, torch.compile's first call, NNCF quantisation) is
measured apart from the per-crop latency. ``owner`` says whose path it is: ``toolkit`` (ONNX Runtime
or the toolkit's OpenVINO backend on the toolkit's own artifacts) or ``peer`` (what a user would
run instead: PyTorch eager / torch.compile, OpenVINO on its own FP32 conversion and default
precision, NNCF post-training quantisation as OpenVINO's own INT8 route).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime import denormals
from runtime.loaders import SessionFromOnnx

Infer = Callable[[np.ndarray], Any]


@dataclass
class Runner:
    name: str
    precision: str            # fp32 | fp16 | bf16 | int8 (what the arithmetic runs in)
    owner: str                # toolkit | peer
    build: Callable[[], Infer]
    what: str = ""
    setup_s: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)


def ort_session(path: Path, threads: int, flush_denormals: bool = True, level: str = "all") -> Infer:
    from runtime.artifact import read_onnx_meta
    from runtime.backends.onnxruntime_backend import session_kwargs

    sess = SessionFromOnnx(path, threads=threads, optimization=level, flush_denormals=flush_denormals,
                           log_severity=3, **session_kwargs(read_onnx_meta(path)))()     # as the backend runs it
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        with denormals.flush_denormals(flush_denormals):     # the option misses the calling thread
            return sess.run(None, {name: x})[0]

    return run


def torch_runner(model: Any, threads: int, flush_denormals: bool = False, autocast: str | None = None) -> Infer:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flush_denormals)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast == "bf16"):
            return model(torch.from_numpy(x)).float().numpy()

    return run


def torch_compiled(model: Any, threads: int, example: np.ndarray, facts: dict) -> Infer:
    """torch.compile (inductor); the compile (first call) time goes into ``facts['compile_s']``."""
    import torch

    torch.set_num_threads(threads)
    compiled = torch.compile(model)
    run = torch_runner(compiled, threads)
    t0 = time.perf_counter()
    run(example)
    facts["compile_s"] = time.perf_counter() - t0
    return run


def openvino_compiled(model: Any, threads: int, hint: str | None, facts: dict) -> Infer:
    """An OpenVINO model (path or ov.Model) compiled for latency; ``hint`` None = OpenVINO's default precision."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(model if not isinstance(model, Path) else str(model), "CPU", config)
    facts["executed_precision"] = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data

    return run


def openvino_backend(path: Path, threads: int, facts: dict, precision: str = "f32") -> Infer:
    """The toolkit's own OpenVINO backend (runtime.backends) on a toolkit artifact."""
    from runtime.backends import open_backend

    backend = open_backend(str(path), backend="openvino", threads=threads, precision=precision).__enter__()
    facts["executed_precision"] = backend.describe()["executed_precision"]
    return backend


_NNCF: dict[tuple[str, str], tuple[Any, float]] = {}     # (FP32 file, calibration set) -> (model, seconds)


def nncf_int8(fp32_path: Path, calib: Any, threads: int, facts: dict, hint: str | None = None) -> Infer:
    """OpenVINO's own INT8 route: ``nncf.quantize`` of the FP32 ONNX (read by OpenVINO) on the
    toolkit's calibration tiles (the same tiles the toolkit's Q/DQ files were calibrated on), compiled
    with ``hint`` for its float layers (None: OpenVINO's default, as users run it). Quantized once."""
    import nncf
    import openvino as ov

    key = (str(fp32_path), str(getattr(calib, "key", id(calib))))
    if key not in _NNCF:
        model = ov.Core().read_model(str(fp32_path))
        tiles = [calib.tile(i)[None] for i in range(len(calib))]
        t0 = time.perf_counter()
        _NNCF[key] = (nncf.quantize(model, nncf.Dataset(tiles), subset_size=len(tiles)), time.perf_counter() - t0)
    quantized, facts["quantize_s"] = _NNCF[key]
    facts["calibration_tiles"] = len(calib)
    return openvino_compiled(quantized, threads, hint, facts)


def build_runners(arts: dict[str, Path], model: Any, calib: Any, threads: int, example: np.ndarray,
                  skip: set[str]) -> list[Runner]:
    """Every path, in the order they run in each round; ``skip`` drops names (or groups: bf16, compile)."""
    t = threads
    runners: list[Runner] = []

    def add(name: str, precision: str, owner: str, make: Callable[[dict], Infer], what: str) -> None:
        if name in skip or precision in skip or owner in skip:
            return
        r = Runner(name, precision, owner, lambda: None, what)     # build bound below (needs r.facts)
        r.build = lambda r=r, make=make: make(r.facts)
        runners.append(r)

    add("pytorch_eager_fp32", "fp32", "peer", lambda f: torch_runner(model, t), "PyTorch eager")
    if "compile" not in skip:
        add("torch_compile_fp32", "fp32", "peer", lambda f: torch_compiled(model, t, example, f),
            "torch.compile (inductor)")
    add("openvino_fp32", "fp32", "peer", lambda f: openvino_compiled(arts["fp32"], t, "f32", f),
        "OpenVINO on the toolkit's FP32 ONNX, f32 hint")
    add("openvino_default", "default", "peer", lambda f: openvino_compiled(arts["fp32"], t, None, f),
        "OpenVINO on the FP32 ONNX, its default CPU precision")
    add("openvino_bf16", "bf16", "peer", lambda f: openvino_compiled(arts["fp32"], t, "bf16", f),
        "OpenVINO, bf16 hint forced")
    add("pytorch_eager_bf16", "bf16", "peer", lambda f: torch_runner(model, t, autocast="bf16"),
        "PyTorch eager, bf16 autocast")
    add("nncf_int8", "int8", "peer", lambda f: nncf_int8(arts["fp32"], calib, t, f),
        "OpenVINO + NNCF PTQ on the toolkit's calibration tiles")
    add("ort_fp32", "fp32", "toolkit", lambda f: ort_session(arts["fp32"], t), "ONNX Runtime, FP32 artifact")
    add("toolkit_openvino_fp32", "fp32", "toolkit", lambda f: openvino_backend(arts["fp32"], t, f),
        "toolkit OpenVINO backend, FP32 artifact")
    add("ort_fp16", "fp16", "toolkit", lambda f: ort_session(arts["fp16"], t), "ONNX Runtime, FP16 (attention FP32)")
    add("ort_fp16_all", "fp16", "toolkit", lambda f: ort_session(arts["fp16_all"], t), "ONNX Runtime, all-FP16")
    add("ort_int8_ort_layout", "int8", "toolkit", lambda f: ort_session(arts["int8_ort"], t),
        "ONNX Runtime, INT8 Q/DQ (ORT layout)")
    add("ort_int8_trt_layout", "int8", "toolkit", lambda f: ort_session(arts["int8_trt"], t),
        "ONNX Runtime, INT8 Q/DQ (TensorRT layout)")
    if "int8_fp16" in arts:
        add("ort_int8_fp16_trt_layout", "int8", "toolkit", lambda f: ort_session(arts["int8_fp16"], t),
            "ONNX Runtime, INT8 Q/DQ + FP16 (TensorRT 10/11 layout)")
    add("toolkit_openvino_int8_ort_layout", "int8", "toolkit",
        lambda f: openvino_backend(arts["int8_ort"], t, f), "toolkit OpenVINO backend, INT8 Q/DQ (ORT layout)")
    add("toolkit_openvino_int8_trt_layout", "int8", "toolkit",
        lambda f: openvino_backend(arts["int8_trt"], t, f), "toolkit OpenVINO backend, INT8 Q/DQ (TRT layout)")
    add("nncf_int8_f32", "int8", "peer", lambda f: nncf_int8(arts["fp32"], calib, t, f, "f32"),
        "OpenVINO + NNCF PTQ, float layers f32 (the toolkit's f32 rows' precision)")
    if "bf16" not in skip and "bf16" in native_openvino_hints():   # bf16 only where the CPU has it natively
        for name, (art, precision, what) in TOOLKIT_BF16.items():
            add(name, precision, "toolkit", lambda f, art=art: openvino_backend(arts[art], t, f, "bf16"), what)
    return runners


# The toolkit's OpenVINO rows with bf16 float layers: name -> (artifact role, precision, what).
TOOLKIT_BF16 = {
    "toolkit_openvino_bf16": ("fp32", "bf16", "toolkit OpenVINO backend, FP32 artifact, bf16 float layers"),
    "toolkit_openvino_int8_ort_layout_bf16": ("int8_ort", "int8",
                                              "toolkit OpenVINO backend, INT8 Q/DQ (ORT layout), bf16 float layers"),
    "toolkit_openvino_int8_trt_layout_bf16": ("int8_trt", "int8",
                                              "toolkit OpenVINO backend, INT8 Q/DQ (TRT layout), bf16 float layers"),
}


def not_timed(skip: set[str], hints: list[str] | None = None) -> dict[str, dict[str, str]]:
    """The toolkit bf16 rows this CPU does not run natively: listed in the table, never timed
    (an emulated bf16 row would only measure the emulation)."""
    hints = native_openvino_hints() if hints is None else hints
    if "bf16" in skip or "toolkit" in skip or "bf16" in hints:
        return {}
    return {name: {"precision": prec, "owner": "toolkit", "what": what, "reason": "not native here"}
            for name, (_, prec, what) in TOOLKIT_BF16.items() if name not in skip and prec not in skip}


def native_openvino_hints() -> list[str]:
    """The OpenVINO precision hints this CPU runs natively (f32, plus bf16 / f16 where it has them)."""
    from runtime.backends.openvino_backend import cpu_native_hints

    return cpu_native_hints()


def ort_option_runners(arts: dict[str, Path], threads: int) -> list[Runner]:
    """ONNX Runtime session options that matter on a CPU (separate rounds)."""
    t = threads
    specs = [("ort_fp32_no_ftz", "fp32", lambda f: ort_session(arts["fp32"], t, flush_denormals=False)),
             ("ort_fp32_basic_opt", "fp32", lambda f: ort_session(arts["fp32"], t, level="basic")),
             ("ort_fp32_1thread", "fp32", lambda f: ort_session(arts["fp32"], 1)),
             ("ort_int8_ort_no_ftz", "int8", lambda f: ort_session(arts["int8_ort"], t, flush_denormals=False)),
             ("ort_int8_ort_1thread", "int8", lambda f: ort_session(arts["int8_ort"], 1))]
    out = []
    for name, prec, make in specs:
        r = Runner(name, prec, "toolkit", lambda: None, "ONNX Runtime option")
        r.build = lambda r=r, make=make: make(r.facts)
        out.append(r)
    return out
