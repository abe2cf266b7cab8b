"""Device memory, page-locked host buffers and streams for the TensorRT backend (no torch).

Two providers behind one small interface:
  * cuda-python: ``cuda.bindings.runtime`` (12.9+, the only path in 13.x) or ``from cuda import
    cudart`` (the only path in 11.8 - 12.6), what NVIDIA's current TensorRT samples use, small
    wheels for x86_64 and aarch64 (Jetson);
  * pycuda, accepted where a device image only ships pycuda. It uses the device's *primary*
    context (retained, never created), so it coexists with other CUDA users. CUDA-graph replay
    needs cuda-python.

Threads: the CUDA runtime's current device and the driver's current context are per thread, and
the video demo runs inference on worker threads. So a provider is bound to a device once
(:meth:`use_device`) and every piece of work runs inside :meth:`activate`, which makes that
device / primary context current on the calling thread (``cudaSetDevice`` resp. a context
push/pop). ``pycuda.autoprimaryctx`` is not used: it makes the context current only on the
thread that imports it.

A CUDA library that cannot load (cuda-python 12.x raises RuntimeError "Failed to dlopen
libcuda.so.1" when there is no driver) becomes a ToolkitError like any failed CUDA call.
Checked without a GPU against cuda-python 12.6.0 and cuda-bindings 13.5 (tests/trt_bindings/).
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Iterator

import numpy as np

from runtime.errors import ToolkitError

INSTALL_HINT = "pip install cuda-python (x86_64/aarch64 wheels), or pycuda where a device image ships it"
DRIVER_FIX = "check the GPU driver (nvidia-smi) and that no other process holds all memory"


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.9 (13.x: the only path)
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python 11.8 - 12.x
        return cudart
    except ImportError:
        return None


def open_cuda(prefer: str = "auto") -> "CudaPython | PyCuda":
    """Return a CUDA memory provider: ``prefer`` is "auto", "cuda-python" or "pycuda"."""
    if prefer not in ("auto", "cuda-python", "pycuda"):
        raise ToolkitError(f"unknown CUDA provider {prefer!r}", expected="auto, cuda-python or pycuda")
    if prefer in ("auto", "cuda-python"):
        cudart = _import_cudart()
        if cudart is not None:
            return CudaPython(cudart)
        if prefer == "cuda-python":
            raise ToolkitError("cuda-python is not installed", fix=INSTALL_HINT)
    try:
        import pycuda.driver as drv
    except ImportError:
        raise ToolkitError("the TensorRT backend needs cuda-python or pycuda for device memory",
                           fix=INSTALL_HINT) from None
    return PyCuda(drv)


def host_array(ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A writable numpy view of ``prod(shape)`` items of ``dtype`` at host address ``ptr``.

    Through a byte buffer: ``np.ctypeslib.as_ctypes_type`` has no ctypes type for float16.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buf = (ctypes.c_ubyte * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


class CudaPython:
    """cuda-python runtime API: every call returns ``(err, *results)``; errors become ToolkitError."""

    kind = "cuda-python"
    supports_graphs = True

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart
        self.device = 0

    def _call(self, what: str, fn: str, *args: Any) -> Any:
        try:
            result = getattr(self.rt, fn)(*args)
        except RuntimeError as exc:      # cuda-python 12.x: libcuda missing / unusable
            raise ToolkitError(f"CUDA call {what} failed: {exc}", fix=DRIVER_FIX) from None
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise ToolkitError(f"CUDA call {what} failed ({name})", fix=DRIVER_FIX)
        return rest[0] if len(rest) == 1 else (rest or None)

    def use_device(self, device: int) -> None:
        """Bind this provider to ``device`` (made current on each thread by :meth:`activate`)."""
        self.device = int(device)
        self._call("cudaSetDevice", "cudaSetDevice", self.device)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make the bound device current on the calling thread (the runtime API's device is per thread)."""
        self._call("cudaSetDevice", "cudaSetDevice", self.device)
        yield

    def device_properties(self, device: int = 0) -> tuple[str, tuple[int, int]]:
        self._call("cudaSetDevice", "cudaSetDevice", device)
        prop = self._call("cudaGetDeviceProperties", "cudaGetDeviceProperties", device)
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return name.rstrip("\x00").strip(), (int(prop.major), int(prop.minor))

    def stream(self) -> Any:
        return self._call("cudaStreamCreate", "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", "cudaStreamDestroy", stream)

    def malloc(self, nbytes: int) -> Any:
        return self._call("cudaMalloc", "cudaMalloc", nbytes)

    def device_ptr(self, mem: Any) -> int:
        return int(mem)

    def free(self, mem: Any) -> None:
        self._call("cudaFree", "cudaFree", mem)

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked host array (cudaMallocHost) viewed as numpy (any dtype, float16 included)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._call("cudaMallocHost", "cudaMallocHost", max(nbytes, 1))
        return host_array(int(ptr), tuple(shape), dtype)

    def free_pinned(self, arr: np.ndarray) -> None:
        self._call("cudaFreeHost", "cudaFreeHost", arr.ctypes.data)

    def htod_async(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync(H2D)", "cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def dtoh_async(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync(D2H)", "cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", "cudaStreamSynchronize", stream)

    # -- CUDA graphs ----------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._call("cudaStreamBeginCapture", "cudaStreamBeginCapture", stream, mode)

    def end_capture(self, stream: Any) -> tuple[Any, Any]:
        graph = self._call("cudaStreamEndCapture", "cudaStreamEndCapture", stream)
        fn = "cudaGraphInstantiateWithFlags" if hasattr(self.rt, "cudaGraphInstantiateWithFlags") \
            else "cudaGraphInstantiate"
        exe = self._call("cudaGraphInstantiate", fn, graph, 0)
        return graph, exe

    def launch_graph(self, exe: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", "cudaGraphLaunch", exe, stream)

    def destroy_graph(self, graph: Any, exe: Any) -> None:
        self._call("cudaGraphExecDestroy", "cudaGraphExecDestroy", exe)
        self._call("cudaGraphDestroy", "cudaGraphDestroy", graph)


class PyCuda:
    """pycuda driver API on the device's primary context, pushed on the calling thread by :meth:`activate`."""

    kind = "pycuda"
    supports_graphs = False

    def __init__(self, drv: Any) -> None:
        self.drv = drv
        self.device = 0
        self._ctx: Any = None
        drv.init()

    def use_device(self, device: int) -> None:
        """Retain ``device``'s primary context (shared with every other CUDA user of the process)."""
        if self._ctx is not None and self.device == int(device):
            return
        self.device = int(device)
        self._ctx = self.drv.Device(self.device).retain_primary_context()

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Push the primary context on the calling thread for the duration (pycuda contexts are per thread)."""
        if self._ctx is None:
            self.use_device(self.device)
        self._ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def device_properties(self, device: int = 0) -> tuple[str, tuple[int, int]]:
        dev = self.drv.Device(device)
        major, minor = dev.compute_capability()
        return dev.name().strip(), (int(major), int(minor))

    def stream(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        stream.synchronize()

    def malloc(self, nbytes: int) -> Any:
        return self.drv.mem_alloc(nbytes)

    def device_ptr(self, mem: Any) -> int:
        return int(mem)

    def free(self, mem: Any) -> None:
        mem.free()

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def free_pinned(self, arr: np.ndarray) -> None:
        base = getattr(arr, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()

    def htod_async(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src, stream)

    def dtoh_async(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst, src, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()
