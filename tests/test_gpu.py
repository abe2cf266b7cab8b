"""GPU checks (marker ``gpu``): run by tests/gpu_check.py on a machine with a CUDA GPU.

* the PyTorch CUDA backend against the CPU reference (same weights, same tiles);
* the cuda-python memory helper (runtime/backends/cuda_mem.py): pinned FP32/FP16 buffers, async
  copies on a stream, and CUDA-graph capture + replay of a small memset/copy sequence.
Skipped with the reason where torch has no CUDA or cuda-python is missing.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to PyTorch {torch.__version__}"
    return None


def _cudart_reason() -> str | None:
    from runtime.backends.cuda_mem import _import_cudart

    if _import_cudart() is None:
        return "cuda-python is not installed"
    return _cuda_reason()


@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
def test_torch_cuda_backend_matches_cpu_reference():
    import torch

    from models.factory import create_model
    from runtime.backends import open_backend

    torch.manual_seed(0)
    model = create_model("r18os8_cityscapes").eval()
    tiles = np.random.default_rng(0).standard_normal((2, 3, 256, 512)).astype(np.float32)
    with open_backend("r18os8_cityscapes", backend="torch", model=model, crop=(256, 512)) as cpu:
        ref = cpu(tiles)
    with open_backend("r18os8_cityscapes", backend="torch", model=copy.deepcopy(model), crop=(256, 512),
                      device="cuda", batch=2) as gpu:
        out = gpu(tiles)
    assert out.shape == ref.shape and np.isfinite(out).all()
    scale = float(np.abs(ref).max())
    assert float(np.abs(out - ref).max()) <= 1e-3 * max(scale, 1.0)  # cuDNN vs CPU kernels
    assert float(np.mean(out.argmax(1) == ref.argmax(1))) >= 0.999


@pytest.mark.skipif(_cudart_reason() is not None, reason=str(_cudart_reason()))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_python_pinned_async_roundtrip(dtype):
    from runtime.backends.cuda_mem import open_cuda

    cu = open_cuda("cuda-python")
    cu.use_device(0)
    with cu.activate():
        host_in, host_out = cu.pinned((2, 19, 64, 128), dtype), cu.pinned((2, 19, 64, 128), dtype)
        dev = cu.malloc(host_in.nbytes)
        stream = cu.stream()
        host_in[...] = np.arange(host_in.size, dtype=np.float32).reshape(host_in.shape) % 2048
        cu.htod_async(dev, host_in, stream)
        cu.dtoh_async(host_out, dev, stream)
        cu.synchronize(stream)
        assert np.array_equal(host_in, host_out)
        cu.destroy_stream(stream)
        cu.free(dev)
        cu.free_pinned(host_in)
        cu.free_pinned(host_out)


@pytest.mark.skipif(_cudart_reason() is not None, reason=str(_cudart_reason()))
def test_cuda_graph_capture_and_replay():
    """memset(b) -> copy H2D(a) -> copy D2D(a->b) -> copy D2H(b), captured once, replayed on new input."""
    from runtime.backends.cuda_mem import open_cuda

    cu = open_cuda("cuda-python")
    cu.use_device(0)
    rt = cu.rt
    with cu.activate():
        host_in, host_out = cu.pinned((4096,), "float32"), cu.pinned((4096,), "float32")
        a, b = cu.malloc(host_in.nbytes), cu.malloc(host_in.nbytes)
        stream = cu.stream()
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        cu.begin_capture(stream)
        cu._call("cudaMemsetAsync", "cudaMemsetAsync", b, 0, host_in.nbytes, stream)
        cu.htod_async(a, host_in, stream)
        cu._call("cudaMemcpyAsync(D2D)", "cudaMemcpyAsync", b, a, host_in.nbytes, d2d, stream)
        cu.dtoh_async(host_out, b, stream)
        graph = cu.end_capture(stream)
        for value in (1.5, -3.0):
            host_in[...] = value
            cu.launch_graph(graph[1], stream)
            cu.synchronize(stream)
            assert np.all(host_out == value)
        cu.destroy_graph(*graph)
        cu.destroy_stream(stream)
        for mem in (a, b):
            cu.free(mem)
        cu.free_pinned(host_in)
        cu.free_pinned(host_out)
