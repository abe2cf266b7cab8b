"""Static batches: the one place that cuts tiles into a backend's batch and zero-fills the last one.

An artifact with a static batch B (every ONNX / TensorRT file the toolkit writes) takes exactly B
tiles per call. :func:`static_batches` yields consecutive chunks of ``batch`` tiles, the last one
filled up with zero tiles (0 is the mean colour after normalisation), with the count of real tiles
in each, so ``outputs[:real]`` drops what the zero tiles produced::

    outs = [backend(chunk)[:real] for _start, chunk, real in static_batches(tiles, backend.input_shape[0])]
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np


def pad_batch(chunk: np.ndarray, batch: int) -> np.ndarray:
    """``chunk`` with zero items appended up to ``batch`` along axis 0 (as it is when already full)."""
    missing = batch - len(chunk)
    if missing <= 0:
        return chunk
    return np.concatenate([chunk, np.zeros((missing,) + chunk.shape[1:], chunk.dtype)])


def static_batches(items: np.ndarray, batch: int, pad: bool = True,
                   dtype: Any = None) -> Iterator[tuple[int, np.ndarray, int]]:
    """``(start, chunk, real)`` for consecutive chunks of ``batch`` items of ``items``; the last chunk
    is zero-filled up to ``batch`` where ``pad`` (False: left short, for a dynamic-batch backend).
    Each chunk is C-contiguous, and of ``dtype`` when one is given."""
    batch = int(batch)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        real = len(chunk)
        if pad:
            chunk = pad_batch(chunk, batch)
        yield start, np.ascontiguousarray(chunk, dtype=dtype), real


def run_static(fn: Callable[[np.ndarray], Any], items: np.ndarray, batch: int, dtype: Any = None,
               progress: Callable[[Iterator], Iterator] | None = None) -> np.ndarray:
    """``fn`` over ``items`` in static batches of ``batch`` (see :func:`static_batches`), the outputs
    of the real items concatenated along axis 0. ``progress`` may wrap the batch iterator (tqdm)."""
    batches = static_batches(items, batch, dtype=dtype)
    if progress is not None:
        batches = progress(batches)
    return np.concatenate([np.asarray(fn(chunk))[:real] for _start, chunk, real in batches])
