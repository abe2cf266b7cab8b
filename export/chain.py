"""The export chain, written once: weights -> FP32 ONNX -> verification tiles -> FP16 / INT8 artifacts.

``export/to_trt.py``, the peer benchmark (bench/study.py, its artifacts and its agreement study) and
the ``--max-drop`` search (export/budget.py, its FP32 step) all call :func:`export_chain` with a
:class:`ChainRequest`; each step reuses an unchanged artifact (export/pipeline.py) and is timed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from calibration.graph import DEFAULT_KEEP, DEFAULT_KEEP_INT8
from export.exporter import Source, export_fp32, resolve_source
from export.pipeline import (Artifact, CalibRequest, Verifier, calibration_set, make_fp16, make_int8,
                             verification_data)


@dataclass
class ChainRequest:
    """What to export. ``fp16``: one FP16 artifact per keep list (``("attention",)`` keeps the
    affinity FP32, ``()`` is all-FP16); ``calib``: INT8 artifacts from this calibration (None: no INT8)."""

    model: str
    out: Path
    checkpoint: str | None = None
    random_init: bool = False
    crop: tuple[int, int] | None = None
    batch: int = 1
    output: str = "logits"
    data: str | None = None                     # images for the checks (else the calibration images)
    fp16: Sequence[Sequence[str]] = ()
    calib: CalibRequest | None = None
    keep_int8: Sequence[str] = DEFAULT_KEEP_INT8
    verify_count: int = 4
    enforce: bool | None = None                 # agreement minimums enforced (default: trained weights)
    why_not: str = "random init"                # said when they are not
    progress: bool = True


@dataclass
class ChainResult:
    source: Source
    artifacts: list[Artifact]                   # FP32 first, then FP16 ..., then INT8 TensorRT 8.x, ORT, 10/11
    calib: Any = None
    walls: dict[str, float] = field(default_factory=dict)

    @property
    def fp32(self) -> Artifact:
        return self.artifacts[0]

    def by_role(self) -> dict[str, Artifact]:
        return {a.role if a.role != "fp16" else _fp16_key(a): a for a in self.artifacts}


def _fp16_key(art: Artifact) -> str:
    return "fp16_all" if art.meta.layout == "all-fp16" else "fp16"


def _timed(walls: dict[str, float], key: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    result = fn()
    walls[key] = time.perf_counter() - t0
    return result


def check_inputs(req: ChainRequest) -> None:
    """Bad calibration data or an unwritable output fail before any file is written."""
    from runtime.fileio import ensure_writable_dir

    ensure_writable_dir(req.out)
    if req.calib is not None and req.calib.data:
        from calibration.calibset import list_source_images

        list_source_images(req.calib.data)


def export_chain(req: ChainRequest, log: Callable[[str], None] = print) -> ChainResult:
    """Run the chain for ``req`` (see the module doc)."""
    from export.verify import verification_tiles

    check_inputs(req)
    source = resolve_source(req.model, req.checkpoint, req.random_init)
    calib_data = req.calib.data if req.calib is not None else None
    data = verification_data(req.data, calib_data)
    walls: dict[str, float] = {}
    path, meta, reused = _timed(walls, "export_fp32", lambda: export_fp32(
        source, Path(req.out), req.crop, req.batch, req.output, data, log=log))
    result = ChainResult(source, [Artifact("fp32", path, meta, reused)], walls=walls)
    if not req.fp16 and req.calib is None:
        return result
    tiles = verification_tiles(data, meta.crop, meta.mean, meta.std, count=req.verify_count)
    enforce = not source.random_init if req.enforce is None else req.enforce
    verifier = Verifier(path, tiles, enforce=enforce, log=log, why_not=req.why_not)
    log(f"precision checks on {tiles.source}")
    for keep in req.fp16:
        key = "fp16_convert" if tuple(keep) == DEFAULT_KEEP else "fp16_all_convert" if not keep else "fp16_custom"
        result.artifacts.append(_timed(walls, key, lambda: make_fp16(result.fp32, verifier, tuple(keep), log)))
    if req.calib is not None:
        result.calib = _timed(walls, "calib_set", lambda: calibration_set(result.fp32, req.calib, req.progress))
        result.artifacts += _timed(walls, "calibrate_quantize_verify", lambda: make_int8(
            result.fp32, result.calib, req.calib, verifier, tuple(req.keep_int8), log, progress=req.progress))
    walls["verify_tiles"] = len(tiles.tiles)
    return result
