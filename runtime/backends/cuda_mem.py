"""Device memory, page-locked host buffers and streams for the TensorRT backend (no torch).

Two providers behind one small interface:
  * cuda-python (``cuda.bindings.runtime``; ``from cuda import cudart`` on cuda-python < 12.6),
    what NVIDIA's current TensorRT samples use, small wheels for x86_64 and aarch64 (Jetson);
  * pycuda (``pycuda.autoprimaryctx``: the primary context, so it coexists with other CUDA users),
    accepted where a device image only ships pycuda. CUDA-graph replay needs cuda-python.

NOTE: written against the documented APIs; this repository's CI machine has no GPU, so these paths
are exercised only where CUDA exists.
"""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from runtime.errors import ToolkitError

INSTALL_HINT = "pip install cuda-python (x86_64/aarch64 wheels), or pycuda where a device image ships it"


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
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
        import pycuda.autoprimaryctx  # noqa: F401  (makes the primary context current)
        import pycuda.driver as drv
    except ImportError:
        raise ToolkitError("the TensorRT backend needs cuda-python or pycuda for device memory",
                           fix=INSTALL_HINT) from None
    return PyCuda(drv)


class CudaPython:
    """cuda-python runtime API: every call returns ``(err, *results)``; errors become ToolkitError."""

    kind = "cuda-python"
    supports_graphs = True

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def _call(self, result: Any, what: str) -> Any:
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise ToolkitError(f"CUDA call {what} failed", found=name,
                               fix="check the GPU driver (nvidia-smi) and that no other process holds all memory")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_properties(self, device: int = 0) -> tuple[str, tuple[int, int]]:
        self._call(self.rt.cudaSetDevice(device), "cudaSetDevice")
        prop = self._call(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return name.rstrip("\x00").strip(), (int(prop.major), int(prop.minor))

    def stream(self) -> Any:
        return self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def malloc(self, nbytes: int) -> Any:
        return self._call(self.rt.cudaMalloc(nbytes), "cudaMalloc")

    def device_ptr(self, mem: Any) -> int:
        return int(mem)

    def free(self, mem: Any) -> None:
        self._call(self.rt.cudaFree(mem), "cudaFree")

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked host array (cudaMallocHost) viewed as numpy."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        ptr = self._call(self.rt.cudaMallocHost(count * dtype.itemsize), "cudaMallocHost")
        ctype = np.ctypeslib.as_ctypes_type(dtype)
        arr = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), (count,))
        return arr.reshape(shape)

    def free_pinned(self, arr: np.ndarray) -> None:
        self._call(self.rt.cudaFreeHost(arr.ctypes.data), "cudaFreeHost")

    def htod_async(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync(H2D)")

    def dtoh_async(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync(D2H)")

    def synchronize(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    # -- CUDA graphs ----------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._call(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: Any) -> tuple[Any, Any]:
        graph = self._call(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        if hasattr(self.rt, "cudaGraphInstantiateWithFlags"):
            exe = self._call(self.rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")
        else:
            exe = self._call(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        return graph, exe

    def launch_graph(self, exe: Any, stream: Any) -> None:
        self._call(self.rt.cudaGraphLaunch(exe, stream), "cudaGraphLaunch")

    def destroy_graph(self, graph: Any, exe: Any) -> None:
        self._call(self.rt.cudaGraphExecDestroy(exe), "cudaGraphExecDestroy")
        self._call(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")


class PyCuda:
    """pycuda driver API on the primary context (``pycuda.autoprimaryctx``)."""

    kind = "pycuda"
    supports_graphs = False

    def __init__(self, drv: Any) -> None:
        self.drv = drv

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
