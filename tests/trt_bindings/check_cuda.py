"""Run runtime/backends/cuda_mem.py (and the engine-step decision) against the cuda-python in this process.

Started by tests/test_trt_bindings.py with one cuda-python version (and, for the engine step, the
real TensorRT 10.3 bindings) on PYTHONPATH, on a machine without a driver. Prints one JSON report.
"""
from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _outcome(fn: Any) -> dict[str, Any]:
    try:
        return {"returned": repr(fn())}
    except Exception as exc:       # the report says which type escaped: only ToolkitError may
        return {"raised": type(exc).__name__, "message": str(exc)}


def main() -> int:
    from runtime.backends import cuda_mem

    rt = cuda_mem._import_cudart()
    report: dict[str, Any] = {
        "paths": {m: _importable(m) for m in ("cuda.cudart", "cuda.bindings.runtime")},
        "chosen": getattr(rt, "__name__", None),
        "provider": cuda_mem.open_cuda("cuda-python").kind,
        "device_properties": _outcome(lambda: cuda_mem.open_cuda().device_properties(0)),
        "use_device": _outcome(lambda: cuda_mem.open_cuda().use_device(1)),
    }
    if _importable("tensorrt"):
        import tensorrt

        from apps.to_trt import engine_mode
        from export.trt_builder import tensorrt_status

        report["tensorrt"] = tensorrt.__version__
        report["tensorrt_status"] = _outcome(tensorrt_status)
        report["engine_mode_auto"] = _outcome(lambda: engine_mode("auto", print))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
