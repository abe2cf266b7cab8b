"""Legacy implicit INT8 for TensorRT <= 10: an entropy calibrator over the toolkit calibration set.

TensorRT 11 removed ``IInt8EntropyCalibrator2`` and ``config.int8_calibrator`` (the Q/DQ ONNX is
the only INT8 route there); :func:`has_implicit_int8` tells whether the installed TensorRT still
has them. The calibrator feeds exactly the tiles of :class:`calibration.calibset.CalibrationSet`
(runtime tiler + preprocessing). The calibration cache is read when present and written
atomically (temporary file + rename), so an interrupted build never leaves a half cache.
``export.trt_builder.build_engine`` calls :meth:`release` when the build ends (device buffer and
stream freed); every CUDA call runs with the device made current on the calling thread.

Constructed and fed against the real bindings of TensorRT 8.6.1, 10.3 and 10.16
(tests/trt_bindings/); the calibration itself needs a GPU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ToolkitError
from runtime.fileio import atomic_open


def has_implicit_int8(trt: Any) -> bool:
    return hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "INT8")


def read_cache(path: str | os.PathLike) -> bytes | None:
    """The cache bytes when the file exists and is non-empty, else None (TensorRT calibrates)."""
    p = Path(path)
    if p.is_file() and p.stat().st_size > 0:
        return p.read_bytes()
    return None


def write_cache(path: str | os.PathLike, data: Any) -> None:
    """Write TensorRT's cache buffer atomically."""
    with atomic_open(path, "wb") as f:
        f.write(bytes(memoryview(data)))


class BatchFeeder:
    """Walks a calibration set in batches of the engine's static batch (float32, C-contiguous)."""

    def __init__(self, calib: Any, batch: int) -> None:
        if len(calib) == 0:
            raise ToolkitError("the calibration set is empty", fix="pass --calib-data with images")
        self.calib, self.batch = calib, int(batch)
        self._it = iter(calib.batches(self.batch))
        self.count = 0

    def next(self) -> np.ndarray | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        self.count += 1
        return np.ascontiguousarray(batch, dtype=np.float32)


def make_entropy_calibrator(trt: Any, calib: Any, batch: int, cache_path: str | os.PathLike,
                            cuda: Any = None) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``calib``; device memory via runtime.backends.cuda_mem."""
    if not has_implicit_int8(trt):
        raise ToolkitError("this TensorRT has no IInt8EntropyCalibrator2 (removed in TensorRT 11)",
                           fix="use the Q/DQ INT8 route (the default of export/to_trt.py --int8)")
    if cuda is None:
        from runtime.backends.cuda_mem import open_cuda
        cuda = open_cuda()
        cuda.use_device(0)
    feeder = BatchFeeder(calib, batch)
    nbytes = int(np.prod((batch, 3) + tuple(calib.crop))) * 4

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache_path = Path(cache_path)
            with cuda.activate():
                self.device = cuda.malloc(nbytes)
                self.stream = cuda.stream()

        def get_batch_size(self) -> int:
            return feeder.batch

        def get_batch(self, names: list, *args: Any) -> list | None:
            data = feeder.next()
            if data is None:
                return None
            with cuda.activate():
                cuda.htod_async(self.device, data, self.stream)
                cuda.synchronize(self.stream)
            return [cuda.device_ptr(self.device)]

        def read_calibration_cache(self, *args: Any) -> bytes | None:
            return read_cache(self.cache_path)

        def write_calibration_cache(self, cache: Any, *args: Any) -> None:
            write_cache(self.cache_path, cache)

        def release(self) -> None:
            """Free the device buffer and the stream (safe twice)."""
            if self.device is not None:
                with cuda.activate():
                    cuda.free(self.device)
                    cuda.destroy_stream(self.stream)
                self.device = None

    return EntropyCalibrator()
