"""Stand-ins for the TensorRT objects that only exist with a GPU (builder, network, parser, config).

Used over the *real* ``tensorrt`` module of a bindings wheel (see prepare.py): enums, flags, data
types, ``ILogger``, the calibrator base class and every class's method list are the real ones.
Only ``trt.Builder`` and ``trt.OnnxParser`` (:func:`install`) and ``trt.Runtime`` with its engine and
engine inspector (:func:`install_runtime`) are replaced (their factories return NULL without a GPU),
and the replacements agree with the real API of that version:

* a stand-in class keeps only the methods / properties its real class has in this version (on
  TensorRT 11 ``ILayer.precision`` and ``IBuilderConfig.int8_calibrator`` do not exist, so code
  that touches them fails here as it would on a device);
* arguments are checked against the real types (``BuilderFlag``, ``MemoryPoolType``,
  ``DataType``, network-creation bits that name a real ``NetworkDefinitionCreationFlag``).
"""
from __future__ import annotations

from typing import Any


class _Strict:
    """Public attributes may only be set where the real class has them (pybind objects raise too)."""

    _real: Any = object

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and not hasattr(self._real, name):
            raise AttributeError(f"{self._real.__name__} has no attribute {name!r} in this TensorRT")
        object.__setattr__(self, name, value)


def _conform(fake: type, real: type) -> type:
    """Drop the public attributes of ``fake`` that ``real`` lacks in this TensorRT version."""
    for name in [n for n in vars(fake) if not n.startswith("_")]:
        if not hasattr(real, name):
            delattr(fake, name)
    fake._real = real
    return fake


def install(trt: Any, layers: list[tuple[str, str, list[str]]] = (), parse_ok: bool = True,
            build_ok: bool = True, cache_ok: bool = True) -> dict[str, Any]:
    """Replace ``trt.Builder`` / ``trt.OnnxParser``; returns the dict the stand-ins record into.

    ``layers``: (name, LayerType name, output DataType names) of the parsed network.
    """
    calls: dict[str, Any] = {"flags": [], "pinned": [], "output_types": [], "timing_cache": []}
    real_builder, real_parser = trt.__dict__.setdefault("_gpu_free_real", (trt.Builder, trt.OnnxParser))
    valid_bits = {int(v) for v in trt.NetworkDefinitionCreationFlag.__members__.values()}

    class Tensor(_Strict):
        def __init__(self, dtype: Any) -> None:
            self.dtype = dtype

    _conform(Tensor, trt.ITensor)

    class Layer(_Strict):
        def __init__(self, name: str, kind: str, outputs: list[str]) -> None:
            self.name, self.type = name, getattr(trt.LayerType, kind)
            self._outputs = [Tensor(getattr(trt.DataType, o)) for o in outputs]

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, j: int) -> Any:
            return self._outputs[j]

        @property
        def precision(self) -> Any:
            return None

        @precision.setter
        def precision(self, value: Any) -> None:
            if not isinstance(value, trt.DataType):
                raise TypeError(f"ILayer.precision takes a DataType, got {value!r}")
            calls["pinned"].append(self.name)

        def set_output_type(self, j: int, dtype: Any) -> None:
            if not isinstance(dtype, trt.DataType):
                raise TypeError(f"set_output_type takes a DataType, got {dtype!r}")
            calls["output_types"].append((self.name, j, dtype.name, self._outputs[j].dtype.name))

    _conform(Layer, trt.ILayer)

    class Network(_Strict):
        def __init__(self, flags: int) -> None:
            self._layers = [Layer(*spec) for spec in layers]

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        def get_layer(self, i: int) -> Any:
            return self._layers[i]

    _conform(Network, trt.INetworkDefinition)

    class TimingCache(_Strict):
        def __init__(self, data: bytes) -> None:
            self._data = bytes(data)

        def serialize(self) -> bytes:
            return self._data or b"fresh-timing-cache"

    _conform(TimingCache, trt.ITimingCache)

    class Config(_Strict):
        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            if not isinstance(pool, trt.MemoryPoolType):
                raise TypeError(f"set_memory_pool_limit takes a MemoryPoolType, got {pool!r}")
            calls["workspace"] = int(size)

        def set_flag(self, flag: Any) -> None:
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError(f"set_flag takes a BuilderFlag, got {flag!r}")
            calls["flags"].append(flag.name)

        def create_timing_cache(self, data: bytes) -> Any:
            return TimingCache(data)

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            accepted = cache_ok or not cache._data
            calls["timing_cache"].append((cache._data, accepted))
            return accepted

        def get_timing_cache(self) -> Any:
            return TimingCache(calls["timing_cache"][-1][0] if calls["timing_cache"] else b"")

        @property
        def profiling_verbosity(self) -> Any:
            return getattr(trt.ProfilingVerbosity, calls.get("profiling_verbosity", "LAYER_NAMES_ONLY"))

        @profiling_verbosity.setter
        def profiling_verbosity(self, value: Any) -> None:
            if not isinstance(value, trt.ProfilingVerbosity):
                raise TypeError(f"profiling_verbosity takes a ProfilingVerbosity, got {value!r}")
            calls["profiling_verbosity"] = value.name

        @property
        def int8_calibrator(self) -> Any:
            return calls.get("calibrator")

        @int8_calibrator.setter
        def int8_calibrator(self, value: Any) -> None:
            if not isinstance(value, trt.IInt8Calibrator):
                raise TypeError(f"int8_calibrator takes an IInt8Calibrator, got {value!r}")
            calls["calibrator"] = value

    _conform(Config, trt.IBuilderConfig)

    class ParserError(_Strict):
        def __init__(self, i: int) -> None:
            self._i = i

        def code(self) -> Any:
            return trt.ErrorCode.UNSUPPORTED_NODE

        def desc(self) -> str:
            return f"problem {self._i}"

        def node(self) -> int:
            return self._i

        def node_name(self) -> str:
            return f"/node_{self._i}"

        def node_operator(self) -> str:
            return "Resize"

    _conform(ParserError, trt.ParserError)

    class OnnxParser(_Strict):
        def __init__(self, network: Any, logger: Any) -> None:
            if not isinstance(logger, trt.ILogger):
                raise TypeError("OnnxParser takes an ILogger")
            self.num_errors = 0 if parse_ok else 2

        def parse_from_file(self, path: str) -> bool:
            return parse_ok

        def get_error(self, i: int) -> Any:
            return ParserError(i)

    _conform(OnnxParser, real_parser)

    class Builder(_Strict):
        def __init__(self, logger: Any) -> None:
            if not isinstance(logger, trt.ILogger):
                raise TypeError("Builder takes an ILogger")
            self._logger = logger

        def create_network(self, flags: int) -> Any:
            bits = {b for b in range(32) if flags >> b & 1}
            if not bits <= valid_bits:
                raise ValueError(f"network-creation bits {sorted(bits - valid_bits)} name no "
                                 f"NetworkDefinitionCreationFlag of TensorRT {trt.__version__}")
            calls["network_flags"] = sorted(n for n, v in trt.NetworkDefinitionCreationFlag.__members__.items()
                                            if int(v) in bits)
            return Network(flags)

        def create_builder_config(self) -> Any:
            return Config()

        def build_serialized_network(self, network: Any, config: Any) -> Any:
            if build_ok:
                return b"ENGINE"
            self._logger.log(trt.ILogger.Severity.ERROR, "out of workspace memory")
            return None

    _conform(Builder, real_builder)
    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return calls


def install_runtime(trt: Any, context_ok: bool = True, address_ok: bool = True, dtype: str = "HALF",
                    engine_ok: bool = True, layer_info: str = '{"Layers": []}',
                    verbosity: str = "DETAILED") -> dict[str, Any]:
    """Replace ``trt.Runtime`` (GPU-only) by one whose engine has a (1,3,8,16) input and a
    (1,19,8,16) output of ``dtype``; ``create_execution_context`` may return None and
    ``set_tensor_address`` False, as the real ones do on failure. ``deserialize_cuda_engine``
    returns None unless ``engine_ok``; the engine was built with ``verbosity`` (a
    ``ProfilingVerbosity`` name) and its inspector (only where the real ``ICudaEngine`` has
    ``create_engine_inspector``) returns ``layer_info`` as its JSON engine information."""
    calls: dict[str, Any] = {"addresses": [], "executed": 0, "inspected": []}
    real_runtime = trt.__dict__.setdefault("_gpu_free_runtime", trt.Runtime)
    shapes = {"input": (1, 3, 8, 16), "output": (1, 19, 8, 16)}

    class Context(_Strict):
        def get_tensor_shape(self, name: str) -> tuple:
            return shapes[name]

        def set_input_shape(self, name: str, shape: Any) -> bool:
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            if not isinstance(ptr, int):
                raise TypeError("set_tensor_address takes an int device pointer")
            calls["addresses"].append(name)
            return address_ok

        def execute_async_v3(self, stream: int) -> bool:
            calls["executed"] += 1
            return True

    _conform(Context, trt.IExecutionContext)

    class Inspector(_Strict):
        def get_engine_information(self, fmt: Any) -> str:
            if not isinstance(fmt, trt.LayerInformationFormat):
                raise TypeError(f"get_engine_information takes a LayerInformationFormat, got {fmt!r}")
            calls["inspected"].append(fmt.name)
            return layer_info if fmt == trt.LayerInformationFormat.JSON else "one line per layer"

    _conform(Inspector, trt.EngineInspector)

    class Engine(_Strict):
        @property
        def num_io_tensors(self) -> int:
            return 2

        def get_tensor_name(self, i: int) -> str:
            return ("input", "output")[i]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, dtype)

        def get_tensor_shape(self, name: str) -> tuple:
            return shapes[name]

        def create_execution_context(self) -> Any:
            return Context() if context_ok else None

        @property
        def profiling_verbosity(self) -> Any:
            return getattr(trt.ProfilingVerbosity, verbosity)

        def create_engine_inspector(self) -> Any:
            return Inspector()

    _conform(Engine, trt.ICudaEngine)

    class Runtime(_Strict):
        def __init__(self, logger: Any) -> None:
            if not isinstance(logger, trt.ILogger):
                raise TypeError("Runtime takes an ILogger")

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("deserialize_cuda_engine takes the serialized engine's bytes")
            return Engine() if engine_ok else None

    _conform(Runtime, real_runtime)
    trt.Runtime = Runtime
    return calls
