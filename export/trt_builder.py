"""ONNX -> TensorRT engine through the TensorRT Python API, for TensorRT 8.5/8.6, 10.x and 11.x.

Differences are handled by feature detection (``hasattr``), never by version strings:

* ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` is set only where it exists (8.x needs it,
  10 ignores it, 11 removed it); ``STRONGLY_TYPED`` is used by its enum (its value differs).
* Precision: where ``STRONGLY_TYPED`` exists the network takes its precision from the ONNX file
  (FP16/mixed ONNX, Q/DQ ONNX) - the only way on TensorRT 11 and the exact way on 10. Where it
  does not (8.5/8.6), the FP16/mixed ONNX is built with ``BuilderFlag.FP16`` and its kept-FP32
  layers (the non-local affinity) pinned by precision constraints; a Q/DQ ONNX gets
  ``BuilderFlag.INT8``.
* INT8, one Q/DQ file per TensorRT generation (issue 18, spec/tensorrt.md "The INT8 layout
  TensorRT fuses"): TensorRT 10/11 build the strongly typed ``_int8_fp16`` file (opset 19, FP16
  scales, FP16 float layers, attention FP32; no builder precision flags); TensorRT 8.x builds the
  ``_int8_trt`` file (opset 17, FP32 scales) with ``INT8`` + ``FP16`` and the attention pinned FP32.
  Each file is refused, naming the other, where its route does not exist.
* Implicit INT8 (``IInt8EntropyCalibrator2`` + calibration cache) only where it still exists (<= 10).
* ``build_serialized_network`` returning None is an error carrying the builder's own log; parser
  errors are listed in full. The timing cache file is keyed by TensorRT version and GPU, and a
  cache TensorRT rejects is reported and replaced.

Checked against the real Python bindings of TensorRT 8.6.1, 10.3.0, 10.16.1.11 and 11.4.0.106
(imported over stub C libraries, no GPU: tests/trt_bindings/); building and running need a GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from runtime.errors import ToolkitError
from runtime.fileio import atomic_open

INSTALL_HINT = ("install TensorRT on the target (JetPack ships it; x86: pip install tensorrt) "
                "with a CUDA GPU, or use --backend onnxruntime")


def import_tensorrt() -> Any:
    """``import tensorrt`` or a ToolkitError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ToolkitError("TensorRT is not installed here", fix=INSTALL_HINT) from None
    return trt


def gpu_info() -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of device 0, or a ToolkitError when there is no CUDA GPU."""
    from runtime.backends.cuda_mem import open_cuda

    return open_cuda().device_properties(0)


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): TensorRT importable *and* a CUDA GPU visible.

    Not only ToolkitError: a CUDA library that cannot load (cuda-python 12.x without a driver raises
    RuntimeError from ``cudaSetDevice``, a broken install raises ImportError/OSError) also means
    "no engine step here", never a traceback in ``--backend auto``.
    """
    try:
        trt = import_tensorrt()
        name, cc = gpu_info()
    except ToolkitError as exc:
        return False, exc.message
    except (ImportError, OSError, RuntimeError) as exc:
        return False, f"CUDA is not usable here ({type(exc).__name__}: {exc})"
    return True, f"TensorRT {trt.__version__} on {name} (sm_{cc[0]}{cc[1]})"


@dataclass
class Features:
    """What the installed TensorRT offers (detected, not derived from its version string)."""

    explicit_batch: bool
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    precision_constraints: bool
    implicit_int8: bool
    timing_cache: bool

    @classmethod
    def detect(cls, trt: Any) -> "Features":
        ndf, bf = trt.NetworkDefinitionCreationFlag, trt.BuilderFlag
        return cls(explicit_batch=hasattr(ndf, "EXPLICIT_BATCH"),
                   strongly_typed=hasattr(ndf, "STRONGLY_TYPED"),
                   fp16_flag=hasattr(bf, "FP16"), int8_flag=hasattr(bf, "INT8"),
                   precision_constraints=hasattr(bf, "OBEY_PRECISION_CONSTRAINTS"),
                   implicit_int8=hasattr(trt, "IInt8EntropyCalibrator2"),
                   timing_cache=hasattr(trt.IBuilderConfig, "create_timing_cache"))


@dataclass
class BuildPlan:
    """Which ONNX to parse and how to configure the builder for one requested precision."""

    onnx_role: str                   # "fp32" | "fp16" | "int8-trt" | "int8-fp16"
    strongly_typed: bool
    flags: list[str] = field(default_factory=list)
    pin_fp32: list[str] = field(default_factory=list)    # layer names constrained to FP32
    calibrator: Any = None


MIXED_INT8_LAYOUT = "trt+fp16"       # the strongly typed INT8 file (_int8_fp16: opset 19, FP16 scales)
WEAK_INT8_FILE = "*_int8_trt.onnx (opset 17, FP32 Q/DQ scales)"
STRONG_INT8_FILE = "*_int8_fp16.onnx (opset 19, FP16 Q/DQ scales)"


def plan_build(feat: Features, precision: str, best: bool = False, implicit: bool = False,
               keep_fp32: Sequence[str] = (), layout: str = "") -> BuildPlan:
    """Decide the route for ``precision`` ("fp32" | "fp16" | "int8") on this TensorRT.

    INT8 has one file per TensorRT generation (``layout`` from the artifact's metadata):
    ``"trt+fp16"`` is the strongly typed file for TensorRT 10/11; ``"trt"`` the FP32 Q/DQ file for
    TensorRT 8.x, built with the INT8 and FP16 builder flags and ``keep_fp32`` (the attention)
    pinned FP32, so every route gives INT8 convolutions, FP16 float layers and an FP32 affinity.
    A file that this TensorRT cannot build that way is refused, naming the right one. ``best``
    only matters for implicit INT8 (FP16 for the layers the calibrator leaves in float).
    """
    if precision == "int8" and implicit:
        if not (feat.implicit_int8 and feat.int8_flag):
            raise ToolkitError("this TensorRT has no implicit INT8 calibration (removed in TensorRT 11)",
                               fix="drop --int8-implicit: the Q/DQ ONNX route builds INT8 on every version")
        flags = ["INT8"] + (["FP16"] if best and feat.fp16_flag else [])
        return BuildPlan("fp32", False, flags, list(keep_fp32) if best else [])
    if precision == "int8":
        return _plan_strong_int8(feat) if layout == MIXED_INT8_LAYOUT else _plan_weak_int8(feat, keep_fp32)
    if precision == "fp32":
        return BuildPlan("fp32", feat.strongly_typed)
    if precision == "fp16":
        if feat.strongly_typed:
            return BuildPlan("fp16", True)
        if not feat.fp16_flag:
            raise ToolkitError("this TensorRT offers neither STRONGLY_TYPED nor BuilderFlag.FP16")
        return BuildPlan("fp16", False, ["FP16"], list(keep_fp32))
    raise ToolkitError(f"unknown precision {precision!r}", expected="fp32, fp16 or int8")


def _plan_strong_int8(feat: Features) -> BuildPlan:
    if not feat.strongly_typed:
        raise ToolkitError(f"the INT8 file {STRONG_INT8_FILE} is for TensorRT 10/11 (strongly typed); this "
                           "TensorRT (8.x) parses opset <= 17 and FP32 Q/DQ scales only",
                           fix=f"build from the TensorRT 8.x file beside it, {WEAK_INT8_FILE}")
    return BuildPlan("int8-fp16", True)


def _plan_weak_int8(feat: Features, keep_fp32: Sequence[str]) -> BuildPlan:
    if not (feat.int8_flag and feat.fp16_flag):
        raise ToolkitError(f"the INT8 file {WEAK_INT8_FILE} is for TensorRT 8.x: its float layers run FP16 "
                           "through the INT8/FP16 builder flags, which this TensorRT (11+) no longer has",
                           fix=f"build from the strongly typed file beside it, {STRONG_INT8_FILE}")
    return BuildPlan("int8-trt", False, ["INT8", "FP16"], list(keep_fp32))


def enum_name(value: Any) -> str:
    """``UNSUPPORTED_NODE`` for a TensorRT enum value: ``.name`` is a property in some bindings and a
    method in others (``ErrorCode`` of the 8.6 and 10.3 wheels)."""
    name = getattr(value, "name", None)
    if callable(name):
        name = name()
    return str(name) if name else str(value)


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps every message (warnings and errors go into error reports)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append(f"[{enum_name(severity)}] {msg}")

    return Logger()


def parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> tuple[Any, Any]:
    """Network from ONNX; every parser error listed (node, operator, description) on failure."""
    flags = 0
    ndf = trt.NetworkDefinitionCreationFlag
    if hasattr(ndf, "EXPLICIT_BATCH"):
        flags |= 1 << int(ndf.EXPLICIT_BATCH)
    if strongly_typed:
        flags |= 1 << int(ndf.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ToolkitError(f"TensorRT cannot parse {onnx_path.name}: {len(errors)} error(s): "
                           + (" | ".join(errors) or "no detail"), fix="see the errors; opset 17 is the safe choice")
    return network, parser


def _parser_error(err: Any) -> str:
    parts = [f"code {enum_name(err.code())}"]
    for attr in ("node_name", "node_operator"):
        if hasattr(err, attr):
            parts.append(f"{attr.split('_')[1]} {getattr(err, attr)()}")
    if not hasattr(err, "node_name"):
        parts.append(f"node #{err.node()}")
    return ", ".join(parts) + f": {err.desc()}"


def _float32_outputs(trt: Any, layer: Any) -> list[int]:
    """Indices of the layer outputs that are FP32 tensors (INT32/INT64/BOOL and FP16 casts excluded)."""
    return [j for j in range(layer.num_outputs) if layer.get_output(j).dtype == trt.float32]


def pin_layers_fp32(trt: Any, network: Any, names: Sequence[str]) -> int:
    """Constrain the layers created from ONNX nodes ``names`` to FP32 (TensorRT <= 10 routes).

    Exact layer names only (a prefix would also catch ``<node>_1`` and the FP16 Cast layers the
    precision step names ``<tensor>__to_fp16_cast``), and only FP32 outputs: ArgMax indices and the
    INT32 label Cast keep their integer type; a layer without a float output is left alone.
    """
    if not (hasattr(trt.ILayer, "precision") and hasattr(trt.ILayer, "set_output_type")):
        raise ToolkitError("this TensorRT has no layer precision constraints (removed in TensorRT 11)",
                           fix="use an FP16/mixed or Q/DQ ONNX artifact: its precision is in the file")
    wanted = set(names)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = _float32_outputs(trt, layer) if layer.name in wanted else []
        if not outputs:
            continue
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def timing_cache_file(path: Path, trt_version: str, gpu: tuple[str, tuple[int, int]]) -> Path:
    """``timing.cache`` -> ``timing.trt10.3.0.sm87.Orin.cache``: one cache per TensorRT version and GPU
    (TensorRT rejects a cache from another version or GPU, so they must not share a file)."""
    name, cc = gpu
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-") or "gpu"
    return path.with_name(f"{path.stem}.trt{trt_version}.sm{cc[0]}{cc[1]}.{slug}{path.suffix or '.cache'}")


def _set_timing_cache(config: Any, timing_cache: Path, progress: Any) -> None:
    data = timing_cache.read_bytes() if timing_cache.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), False):
        if data:
            progress(f"timing cache {timing_cache.name}: {len(data)} bytes reused")
        return
    progress(f"timing cache {timing_cache} rejected by TensorRT (another TensorRT version, GPU or a "
             "corrupt file): building without it; it will be replaced")
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise ToolkitError("TensorRT refused an empty timing cache", fix="drop --timing-cache")


def configure(trt: Any, builder: Any, network: Any, plan: BuildPlan, workspace_gib: float,
              timing_cache: Path | None, progress: Any = print) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if hasattr(trt.IBuilderConfig, "profiling_verbosity"):     # per-layer precisions for export/layer_report.py
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.pin_fp32 and pin_layers_fp32(trt, network, plan.pin_fp32):
        if hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if plan.calibrator is not None:
        if not hasattr(trt.IBuilderConfig, "int8_calibrator"):
            raise ToolkitError("this TensorRT has no implicit INT8 calibration (removed in TensorRT 11)",
                               fix="drop --int8-implicit: the Q/DQ ONNX route builds INT8 on every version")
        config.int8_calibrator = plan.calibrator
    if timing_cache is not None:
        _set_timing_cache(config, timing_cache, progress)
    return config


@dataclass
class BuildResult:
    engine: bytes
    seconds: float
    log: list[str]
    strongly_typed: bool
    flags: list[str]


def build_engine(onnx_path: Path, plan: BuildPlan, workspace_gib: float = 4.0,
                 timing_cache: Path | None = None, progress: Any = print) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized engine per ``plan`` (timing cache updated atomically).

    ``timing_cache`` is used as given: key it with :func:`timing_cache_file`. The plan's calibrator
    (implicit INT8) is released when the build ends, successful or not.
    """
    try:
        return _build(onnx_path, plan, workspace_gib, timing_cache, progress)
    finally:
        release = getattr(plan.calibrator, "release", None)
        if release is not None:
            release()


def _build(onnx_path: Path, plan: BuildPlan, workspace_gib: float, timing_cache: Path | None,
           progress: Any) -> BuildResult:
    trt = import_tensorrt()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path, plan.strongly_typed)
    config = configure(trt, builder, network, plan, workspace_gib, timing_cache, progress)
    progress(f"building the TensorRT {trt.__version__} engine from {onnx_path.name} "
             f"({'strongly typed' if plan.strongly_typed else 'flags ' + (','.join(plan.flags) or 'none')}); "
             "this takes minutes")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        tail = [m for m in logger.messages if m.startswith(("[ERROR]", "[INTERNAL_ERROR]", "[WARNING]"))]
        raise ToolkitError(f"TensorRT could not build an engine from {onnx_path.name}: "
                           + " | ".join(tail[-8:] or logger.messages[-8:] or ["no builder log"]),
                           fix="try a larger --workspace, or another precision")
    if timing_cache is not None:
        with atomic_open(timing_cache, "wb") as f:
            f.write(bytes(memoryview(config.get_timing_cache().serialize())))
    return BuildResult(bytes(memoryview(serialized)), seconds, logger.messages, plan.strongly_typed, plan.flags)


def build_facts(trt_version: str, result: BuildResult, onnx_path: Path, onnx_sha256: str) -> dict[str, Any]:
    """The ``build`` part of an engine sidecar."""
    name, cc = gpu_info()
    return {"tensorrt_version": trt_version, "gpu_name": name, "compute_capability": f"{cc[0]}.{cc[1]}",
            "onnx": onnx_path.name, "onnx_sha256": onnx_sha256, "strongly_typed": result.strongly_typed,
            "builder_flags": result.flags, "build_seconds": round(result.seconds, 1)}
