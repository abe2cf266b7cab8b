"""What one Ray actor holds: one open backend per row, a tiler, and the per-frame calls.

A plain class (pool.py wraps it with ``ray.remote``), importing no Ray and no torch: an actor of
ONNX Runtime / OpenVINO / TensorRT / Triton rows needs the runtime and its backend only; only
actors of the PyTorch reference row import torch (through runtime.backends, by name).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.errors import ToolkitError


class FrameWorker:
    """``specs``: (artifact, backend, options) per row; ``dataset``: the gate's split (score);
    ``segment``: {"out", "alpha"} (segment); ``crash_once``: (frame, marker) for fault tests."""

    def __init__(self, specs: Sequence[tuple[str, str, dict]], tiler: Any, dataset: Any = None,
                 save: dict | None = None, segment: dict | None = None,
                 crash_once: tuple[int, str] | None = None) -> None:
        self.specs, self.tiler, self.dataset = list(specs), tiler, dataset
        self.save, self.segment_opts, self.crash_once = save, segment, crash_once
        self.backends: list[Any] = []

    def open(self) -> list[dict]:
        """Open every row's backend (and warm it up); returns what the driver reports per row."""
        from runtime.backends import open_backend

        headers = []
        for artifact, kind, options in self.specs:
            backend = open_backend(artifact, kind, **options)
            backend.__enter__()
            self.backends.append(backend)
            backend(np.zeros(backend.input_shape, np.float32))   # lazy init stays out of the latency
            headers.append({"label": backend.label, "precision": backend.precision, "info": backend.describe(),
                            "meta": backend.meta, "pid": os.getpid(), "host": socket.gethostname()})
        return headers

    def ping(self) -> int:
        return os.getpid()

    def loaded(self, module: str) -> bool:
        """Whether this actor's process imported ``module`` (the torch-free check)."""
        import sys

        return module in sys.modules

    def score(self, index: int, ref: np.ndarray | None, want_labels: bool = False) -> tuple[dict, Any]:
        """Every row on frame ``index`` of the split: (result, the first row's label map or None).
        A frame that cannot be read gives a result with ``error`` and no scores."""
        from runtime.evaluation import save_prediction, score_frame

        self._fault(index)
        ds = self.dataset
        try:
            sample = ds[index]
        except ToolkitError as exc:
            return {"index": index, "name": ds.items[index].name, "error": exc.message, "scores": []}, None
        scores, first = [], None
        for i, backend in enumerate(self.backends):
            score, pred = score_frame(backend, self.tiler, sample, ref, ds.num_classes, ds.ignore_index)
            if self.save and pred is not None:
                save_prediction(self.save["dir"], backend, sample, pred, ref, self.save["dataset_name"])
            scores.append(score)
            first = pred if i == 0 else first
        result = {"index": index, "name": sample.name, "error": None, "scores": scores, "pid": os.getpid()}
        return result, (first if want_labels else None)

    def segment(self, job: Any) -> dict:
        """Segment and write one frame (runtime.segmentation.run_frame)."""
        from runtime.segmentation import run_frame

        self._fault(job.index)
        record = run_frame(self.backends[0], self.tiler, job, Path(self.segment_opts["out"]),
                           self.segment_opts["alpha"])
        record["pid"] = os.getpid()
        return record

    def close(self) -> None:
        for backend in self.backends:
            backend.__exit__(None, None, None)
        self.backends = []

    def _fault(self, index: int) -> None:
        """Tests: die on frame ``crash_once[0]``, once per marker file, as a killed process dies."""
        if self.crash_once is None or index != self.crash_once[0]:
            return
        try:
            os.close(os.open(self.crash_once[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)
