"""The backend contract shared by PyTorch, ONNX Runtime and TensorRT.

A backend is a context manager with a cheap constructor: ``__enter__`` allocates (model, session,
engine + buffers), ``__exit__`` / ``close()`` release (safe to call twice). One call: a float32
NCHW batch of normalised tiles in, numpy out: float32 logits (N, K, h, w) or int32 labels (N, h, w)
per ``output_kind``. Attributes: ``name``, ``precision``, ``input_shape``, ``num_classes``,
``meta`` (ArtifactMeta), ``output_kind``, ``static_batch`` and ``label`` (for reports).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from runtime.artifact import ArtifactMeta
from runtime.errors import ToolkitError


class Backend(ABC):
    """Base class: lifecycle, input checks and the attributes every backend exposes."""

    name = "backend"
    static_batch = True        # False: any number of tiles per call (PyTorch); input_shape[0] = default

    def __init__(self, artifact: str) -> None:
        self.artifact = str(artifact)
        self._meta: ArtifactMeta | None = None
        self._open = False

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "Backend":
        if not self._open:
            try:
                self._allocate()
            except BaseException:
                self._release()
                raise
            self._open = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release everything; safe to call twice (and on a backend that never opened)."""
        if self._open:
            self._open = False
            self._release()

    @abstractmethod
    def _allocate(self) -> None:
        """Open the model / session / engine and its buffers."""

    @abstractmethod
    def _release(self) -> None:
        """Free everything _allocate took; may run after a partial _allocate."""

    # -- attributes -------------------------------------------------------------------------------
    @property
    def meta(self) -> ArtifactMeta:
        if self._meta is None:
            raise ToolkitError(f"{self.name} backend for {self.artifact} is not open",
                               fix="use it as a context manager: `with open_backend(...) as b:`")
        return self._meta

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.meta.input_shape

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    @property
    def output_kind(self) -> str:
        return self.meta.output

    @property
    def precision(self) -> str:
        return self.meta.precision

    @property
    def label(self) -> str:
        """Short report label, e.g. ``onnxruntime:r18os8_cityscapes_512x1024_int8``."""
        stem = self.artifact.replace("\\", "/").rsplit("/", 1)[-1]
        for suffix in (".onnx", ".engine", ".plan", ".trt"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        return f"{self.name}:{stem}"

    def describe(self) -> dict[str, Any]:
        """JSON-friendly facts for reports."""
        return {"backend": self.name, "artifact": self.artifact, "precision": self.precision,
                "output": self.output_kind, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "variant": self.meta.variant}

    # -- the call ---------------------------------------------------------------------------------
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if not self._open:
            raise ToolkitError(f"{self.name} backend for {self.artifact} is not open",
                               fix="use it as a context manager: `with open_backend(...) as b:`")
        batch = self.check_batch(batch)
        return self._infer(batch)

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one checked batch; return logits or labels as numpy."""

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Validate a float32 NCHW batch against the input shape; returns it C-contiguous."""
        batch = np.asarray(batch)
        n, c, h, w = self.input_shape
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (c, h, w):
            raise ToolkitError(f"{self.label} got an input of the wrong shape or type",
                               expected=f"float32 (N, {c}, {h}, {w})",
                               found=f"{batch.dtype} {tuple(batch.shape)}",
                               fix="feed tiles through runtime.tiling.Tiler")
        if (self.static_batch and batch.shape[0] != n) or batch.shape[0] < 1:
            raise ToolkitError(f"{self.label} takes batches of exactly {n}" if self.static_batch
                               else f"{self.label} got an empty batch", found=str(batch.shape[0]))
        return np.ascontiguousarray(batch)


def check_meta_shapes(meta: ArtifactMeta, source: str, input_shape: tuple | list | None,
                      output_shape: tuple | list | None) -> None:
    """Compare an artifact's declared I/O shapes (ints only; symbolic dims skipped) with its metadata."""
    if input_shape is not None:
        found = tuple(input_shape)
        want = meta.input_shape
        if len(found) != 4 or any(isinstance(f, int) and f > 0 and f != w for f, w in zip(found, want)):
            raise ToolkitError(f"{source}: input shape does not match its metadata",
                               expected=str(want), found=str(found),
                               fix="re-export the artifact; the file and its metadata disagree")
    if output_shape is not None and meta.output == "logits":
        found = tuple(output_shape)
        if len(found) != 4 or (isinstance(found[1], int) and found[1] > 0 and found[1] != meta.num_classes):
            raise ToolkitError(f"{source}: output class count does not match its metadata",
                               expected=f"{meta.num_classes} classes", found=str(found),
                               fix="re-export the artifact; the file and its metadata disagree")


def as_output(out: np.ndarray, kind: str) -> np.ndarray:
    """Normalise an output array's dtype: logits -> float32, labels -> int32 (N, h, w)."""
    out = np.asarray(out)
    if kind == "logits":
        return out.astype(np.float32, copy=False)
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    return out.astype(np.int32, copy=False)
