"""TensorRT backend: a serialized engine plus its ``.engine.json`` sidecar (no torch).

Name-based I/O (``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` /
``set_tensor_address`` / ``execute_async_v3``; TensorRT 8.5 .. 11), device memory and a stream from
cuda-python (or pycuda), page-locked host buffers, asynchronous copies, optional CUDA-graph replay
of the enqueue. On open, the sidecar is checked against this machine: TensorRT version, GPU name and
compute capability, and the engine's own I/O shapes against the crop / class count in the metadata.

Threads: opening, inference and release each make the engine's device (cuda-python) or primary
context (pycuda) current on the calling thread first, so a backend opened on the main thread runs
on the video demo's inference threads. TensorRT calls that report failure by their result
(``create_execution_context`` None, ``set_input_shape`` / ``set_tensor_address`` False) are errors.

Method names are checked against the real bindings of TensorRT 8.6.1, 10.3, 10.16 and 11.4
(tests/trt_bindings/); running an engine needs a GPU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import read_sidecar
from runtime.backends.base import Backend, as_output, check_meta_shapes
from runtime.backends.cuda_mem import open_cuda
from runtime.errors import ToolkitError, require

TRT_MISSING = ("TensorRT is not installed: pip install tensorrt (x86_64) or use JetPack's "
               "python3-libnvinfer on a Jetson; on a CPU-only machine run the .onnx with --backend onnxruntime")


def import_tensorrt() -> Any:
    """``import tensorrt`` or a one-line ToolkitError."""
    return require("tensorrt", TRT_MISSING)


def _first(build: dict, *keys: str) -> Any:
    for k in keys:
        if build.get(k) not in (None, ""):
            return build[k]
    return None


def _cc_tuple(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.replace("sm_", "").replace(",", ".").split(".")
        if len(parts) == 1 and len(parts[0]) >= 2:      # "87" -> (8, 7)
            parts = [parts[0][:-1], parts[0][-1]]
        return int(parts[0]), int(parts[1])
    return int(value[0]), int(value[1])


def check_build(build: dict, trt_version: str, gpu_name: str, cc: tuple[int, int], engine: str) -> None:
    """An engine runs only with the TensorRT version and the GPU it was built for."""
    fix = f"rebuild the engine on this device: python export/to_trt.py ... (engine: {engine})"
    built_trt = _first(build, "tensorrt_version", "trt_version", "tensorrt")
    if built_trt and str(built_trt) != str(trt_version):
        raise ToolkitError("engine was built with another TensorRT version",
                           expected=str(built_trt), found=str(trt_version), fix=fix)
    built_cc = _cc_tuple(_first(build, "compute_capability", "gpu_compute_capability", "sm"))
    if built_cc and built_cc != tuple(cc):
        raise ToolkitError("engine was built for another GPU architecture",
                           expected=f"compute capability {built_cc[0]}.{built_cc[1]}",
                           found=f"{cc[0]}.{cc[1]} ({gpu_name})", fix=fix)
    built_gpu = _first(build, "gpu_name", "gpu", "device")
    if built_gpu and str(built_gpu).strip() != gpu_name:
        raise ToolkitError("engine was built on another GPU model", expected=str(built_gpu),
                           found=gpu_name, fix=fix + " (or pass strict=False to accept the risk)")


class TensorRTBackend(Backend):
    """A TensorRT engine. Options: ``device`` (GPU index), ``cuda`` ("auto" | "cuda-python" |
    "pycuda"), ``cuda_graph`` (replay the enqueue as a CUDA graph), ``strict`` (False: a GPU-name
    mismatch with the same compute capability is accepted)."""

    name = "tensorrt"

    def __init__(self, artifact: str | os.PathLike, device: int = 0, cuda: str = "auto",
                 cuda_graph: bool = False, strict: bool = True) -> None:
        super().__init__(str(artifact))
        self.device = int(device)
        self.cuda_kind = cuda
        self.cuda_graph = bool(cuda_graph)
        self.strict = bool(strict)
        self.build: dict[str, Any] = {}
        self._cu: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._bufs: dict[str, tuple[np.ndarray, Any]] = {}   # name -> (pinned host, device mem)
        self._in = ""
        self._out = ""
        self._graph: Any = None

    # -- open -----------------------------------------------------------------------------------
    def _allocate(self) -> None:
        path = Path(self.artifact)
        if not path.is_file():
            raise ToolkitError(f"engine file not found: {path}", fix="build it with export/to_trt.py")
        meta, self.build = read_sidecar(path)
        trt = import_tensorrt()
        self._cu = open_cuda(self.cuda_kind)
        gpu, cc = self._cu.device_properties(self.device)
        self._cu.use_device(self.device)
        with self._cu.activate():
            self._open_engine(trt, path, meta, gpu, cc)

    def _open_engine(self, trt: Any, path: Path, meta: Any, gpu: str, cc: tuple[int, int]) -> None:
        build = self.build if self.strict else {k: v for k, v in self.build.items()
                                                if k not in ("gpu_name", "gpu", "device")}
        check_build(build, trt.__version__, gpu, cc, str(path))
        self._meta = meta
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ToolkitError(f"TensorRT cannot deserialize {path}",
                               fix="the file is corrupt or from another TensorRT build; rebuild it on this device")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ToolkitError(f"TensorRT could not create an execution context for {path}",
                               fix="the GPU is probably out of memory: close other GPU programs or use a smaller crop/batch")
        self._bind_io(trt)
        self._stream = self._cu.stream()
        for name, (_host, mem) in self._bufs.items():
            if not self._context.set_tensor_address(name, self._cu.device_ptr(mem)):
                raise ToolkitError(f"TensorRT refused the device address of tensor {name!r} ({path})",
                                   fix="rebuild the engine on this device with export/to_trt.py")
        if self.cuda_graph:
            self._capture_graph()

    def _bind_io(self, trt: Any) -> None:
        """Find the one input and output by name, fix their shapes and allocate their buffers."""
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        ins = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise ToolkitError(f"{self.artifact}: unexpected engine I/O", expected="1 input, >= 1 output",
                               found=f"inputs {ins}, outputs {outs}")
        self._in = ins[0]
        self._out = self.meta.output_name if self.meta.output_name in outs else outs[0]
        declared = tuple(self._engine.get_tensor_shape(self._in))
        check_meta_shapes(self.meta, self.artifact, declared, None)
        if any(d < 0 for d in declared):   # dynamic dims: fix them to the metadata's static shape
            if not self._context.set_input_shape(self._in, self.meta.input_shape):
                raise ToolkitError(f"{self.artifact}: the engine's optimization profile does not accept the input shape",
                                   expected=str(tuple(self.meta.input_shape)), found=str(declared),
                                   fix="rebuild the engine from the artifact with export/to_trt.py --onnx")
        out_shape = tuple(self._context.get_tensor_shape(self._out))
        check_meta_shapes(self.meta, self.artifact, None, out_shape)
        for name in (self._in, *outs):
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            self._bufs[name] = (self._cu.pinned(shape, dtype), self._cu.malloc(int(np.prod(shape)) * dtype.itemsize))

    def _capture_graph(self) -> None:
        if not self._cu.supports_graphs:
            raise ToolkitError("CUDA-graph replay needs cuda-python", found=self._cu.kind,
                               fix="pip install cuda-python, or open without cuda_graph=True")
        handle = self._cu.stream_handle(self._stream)
        self._enqueue(handle)                 # one plain run first: TensorRT finishes lazy setup
        self._cu.synchronize(self._stream)
        self._cu.begin_capture(self._stream)
        self._enqueue(handle)
        self._graph = self._cu.end_capture(self._stream)

    # -- run --------------------------------------------------------------------------------------
    def _enqueue(self, handle: int) -> None:
        if not self._context.execute_async_v3(handle):
            raise ToolkitError(f"TensorRT execution failed for {self.artifact}",
                               fix="see the TensorRT log above; rebuild the engine on this device")

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._cu.activate():          # this thread may not be the one that opened the engine
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        host_in, dev_in = self._bufs[self._in]
        host_out, dev_out = self._bufs[self._out]
        np.copyto(host_in, batch.reshape(host_in.shape), casting="same_kind")
        self._cu.htod_async(dev_in, host_in, self._stream)
        if self._graph is not None:
            self._cu.launch_graph(self._graph[1], self._stream)
        else:
            self._enqueue(self._cu.stream_handle(self._stream))
        self._cu.dtoh_async(host_out, dev_out, self._stream)
        self._cu.synchronize(self._stream)
        return as_output(host_out.copy(), self.output_kind)

    # -- close ------------------------------------------------------------------------------------
    def _release(self) -> None:
        held = self._bufs or self._stream is not None or self._graph is not None or self._context is not None
        if self._cu is not None and held:
            with self._cu.activate():      # TensorRT frees device memory when the context goes
                self._free(self._cu)
        self._context = None
        self._engine = None
        self._runtime = None

    def _free(self, cu: Any) -> None:
        if self._stream is not None:
            cu.synchronize(self._stream)
        if self._graph is not None:
            cu.destroy_graph(*self._graph)
        self._graph = None
        for host, mem in self._bufs.values():
            cu.free(mem)
            cu.free_pinned(host)
        self._bufs = {}
        if self._stream is not None:
            cu.destroy_stream(self._stream)
        self._stream = None
        self._context = None
        self._engine = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(build=self.build, cuda=getattr(self._cu, "kind", None), cuda_graph=self.cuda_graph)
        return d
