"""ONNX -> TensorRT engine through the TensorRT Python API, for TensorRT 8.5/8.6, 10.x and 11.x.

Differences are handled by feature detection (``hasattr``), never by version strings:

* ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` is set only where it exists (8.x needs it,
  10 ignores it, 11 removed it); ``STRONGLY_TYPED`` is used by its enum (its value differs).
* Precision: where ``STRONGLY_TYPED`` exists the network takes its precision from the ONNX file
  (FP16/mixed ONNX, Q/DQ ONNX) - the only way on TensorRT 11 and the exact way on 10. Where it
  does not (8.5/8.6), the FP16/mixed ONNX is built with ``BuilderFlag.FP16`` and its kept-FP32
  layers (the non-local affinity) pinned by precision constraints; a Q/DQ ONNX gets
  ``BuilderFlag.INT8``.
* ``--fp16 --int8`` ("best", as ``trtexec --best``): the Q/DQ ONNX with the non-quantized layers
  free to run in FP16; that needs the builder flags, so it is refused on TensorRT 11.
* Implicit INT8 (``IInt8EntropyCalibrator2`` + calibration cache) only where it still exists (<= 10).
* ``build_serialized_network`` returning None is an error carrying the builder's own log; parser
  errors are listed in full.

NOTE: this machine has no GPU and no TensorRT; the code follows the documented API (names
checked against NVIDIA's documentation for 8.5 - 11) and its tests run only where both exist.
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
    """(usable, reason): TensorRT importable *and* a CUDA GPU visible."""
    try:
        trt = import_tensorrt()
        name, cc = gpu_info()
    except ToolkitError as exc:
        return False, exc.message
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

    onnx_role: str                   # "fp32" | "fp16" | "int8-trt"
    strongly_typed: bool
    flags: list[str] = field(default_factory=list)
    pin_fp32: list[str] = field(default_factory=list)    # layer names constrained to FP32
    calibrator: Any = None


def plan_build(feat: Features, precision: str, best: bool = False, implicit: bool = False,
               keep_fp32: Sequence[str] = ()) -> BuildPlan:
    """Decide the route for ``precision`` ("fp32" | "fp16" | "int8") on this TensorRT."""
    if precision == "fp32":
        return BuildPlan("fp32", feat.strongly_typed)
    if precision == "int8" and implicit:
        if not (feat.implicit_int8 and feat.int8_flag):
            raise ToolkitError("this TensorRT has no implicit INT8 calibration (removed in TensorRT 11)",
                               fix="drop --int8-implicit: the Q/DQ ONNX route builds INT8 on every version")
        flags = ["INT8"] + (["FP16"] if best and feat.fp16_flag else [])
        return BuildPlan("fp32", False, flags, list(keep_fp32) if best else [])
    if best:
        if not (feat.fp16_flag and feat.int8_flag):
            raise ToolkitError("--fp16 --int8 (INT8 with FP16 for the other layers) needs the builder "
                               "precision flags, which this TensorRT (11+) no longer has",
                               fix="use --int8 (Q/DQ, other layers FP32) or --fp16")
        return BuildPlan("int8-trt", False, ["INT8", "FP16"], list(keep_fp32))
    if precision == "fp16":
        if feat.strongly_typed:
            return BuildPlan("fp16", True)
        if not feat.fp16_flag:
            raise ToolkitError("this TensorRT offers neither STRONGLY_TYPED nor BuilderFlag.FP16")
        return BuildPlan("fp16", False, ["FP16"], list(keep_fp32))
    if precision == "int8":
        if feat.strongly_typed:
            return BuildPlan("int8-trt", True)
        return BuildPlan("int8-trt", False, ["INT8"] if feat.int8_flag else [])
    raise ToolkitError(f"unknown precision {precision!r}", expected="fp32, fp16 or int8")


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps every message (warnings and errors go into error reports)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append(f"[{getattr(severity, 'name', severity)}] {msg}")

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
    parts = [f"code {err.code()}"]
    for attr in ("node_name", "node_operator"):
        if hasattr(err, attr):
            parts.append(f"{attr.split('_')[1]} {getattr(err, attr)()}")
    if not hasattr(err, "node_name"):
        parts.append(f"node #{err.node()}")
    return ", ".join(parts) + f": {err.desc()}"


def pin_layers_fp32(trt: Any, network: Any, names: Sequence[str]) -> int:
    """Constrain the layers created from ONNX nodes ``names`` to FP32 (TensorRT <= 10 routes)."""
    wanted = tuple(names)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.name == n or layer.name.startswith(n + "_") for n in wanted):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def configure(trt: Any, builder: Any, network: Any, plan: BuildPlan, workspace_gib: float,
              timing_cache: Path | None) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.pin_fp32 and pin_layers_fp32(trt, network, plan.pin_fp32):
        if hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if plan.calibrator is not None:
        config.int8_calibrator = plan.calibrator
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(data), False)
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
    """Parse ``onnx_path`` and build a serialized engine per ``plan`` (timing cache updated atomically)."""
    trt = import_tensorrt()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path, plan.strongly_typed)
    config = configure(trt, builder, network, plan, workspace_gib, timing_cache)
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
