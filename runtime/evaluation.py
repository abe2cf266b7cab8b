"""The accuracy gate's engine: every candidate backend against the PyTorch FP32 reference, with the
same tiling, on a labelled split (``python -m runtime.evaluate`` is its command, apps/evaluate.py).

Per backend (one at a time): mIoU against the ground truth (one confusion matrix over the split,
ignore label excluded, classes absent from both skipped), drop against the reference in mIoU points
(x100), pixel agreement with the reference, per-class IoU, latency; a row fails when its drop
exceeds the limit of its precision or it produces NaN/Inf.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.data import train_to_label_ids
from runtime.errors import ToolkitError
from runtime.fileio import write_png
from runtime.tables import format_table
from runtime.values import dataset_name_of

DEFAULT_MAX_DROP = {"fp32": 0.01, "fp16": 0.1, "bf16": 0.1, "int8": 0.5}


@dataclass
class FrameScore:
    """One backend's scores on one frame: what the gate adds up, in one process or from Ray actors.

    Everything is an integer count except the timings, so adding frames in any grouping gives the
    same totals: the split's mIoU comes from the summed matrix, agreement from the summed counts.
    """

    matrix: np.ndarray | None = None   # (K, K) int64 confusion matrix, rows ground truth
    agree: int = 0                     # pixels predicted as the reference predicts
    pixels: int = 0                    # pixels compared with the reference (0: no reference)
    total_s: float = 0.0
    infer_s: float = 0.0
    tiles: int = 0
    error: str | None = None           # NaN/Inf output: the row stops at this frame


def score_frame(backend: Any, tiler: Any, sample: Any, ref: np.ndarray | None, num_classes: int,
                ignore_index: int) -> tuple[FrameScore, np.ndarray | None]:
    """Run ``backend`` on one sample and score it: the gate's one per-frame function (the
    in-process loop and the Ray actors both call it). Returns the score and the label map (None
    on a NaN/Inf output, whose score carries the error)."""
    from runtime.metrics import confusion_matrix
    from runtime.tiling import NumericalError

    try:
        pred = tiler.labels(backend, sample.image)
    except NumericalError as exc:
        return FrameScore(error=f"numerical fault on {sample.name}: {exc}"), None
    timing = tiler.last_timing
    score = FrameScore(confusion_matrix(pred, sample.label, num_classes, ignore_index),
                       total_s=timing["total"], infer_s=timing["infer"], tiles=int(timing["tiles"]))
    if ref is not None:
        score.agree, score.pixels = int(np.count_nonzero(pred == ref)), int(pred.size)
    return score, pred


class RowScores:
    """One backend's row: the per-frame scores added up in frame order (the gate's one merge)."""

    def __init__(self, label: str, precision: str, info: dict, num_classes: int, ignore_index: int) -> None:
        from runtime.metrics import ConfusionMeter

        self.info, self.label, self.precision = info, label, precision
        self.meter = ConfusionMeter(num_classes, ignore_index)
        self.agree = 0
        self.pixels = 0
        self.frame_s: list[float] = []
        self.infer_s = 0.0
        self.tiles = 0
        self.error: str | None = None

    @classmethod
    def of(cls, backend: Any, num_classes: int, ignore_index: int) -> RowScores:
        """The row of an open backend."""
        return cls(backend.label, backend.precision, backend.describe(), num_classes, ignore_index)

    def add(self, score: FrameScore) -> bool:
        """Add the next frame; False once the row has stopped (a NaN/Inf frame ends it, as in one
        process: frames after the first fault are not counted)."""
        if self.error is not None:
            return False
        if score.error is not None:
            self.error = score.error
            print(f"error: {self.label}: {self.error}", file=sys.stderr)
            return False
        self.meter.add(score.matrix)
        self.agree += score.agree
        self.pixels += score.pixels
        self.frame_s.append(score.total_s)
        self.infer_s += score.infer_s
        self.tiles += score.tiles
        return True

    def result(self, class_names: Sequence[str]) -> dict[str, Any]:
        s = self.meter.summary(class_names)
        frames = np.asarray(self.frame_s) if self.frame_s else np.asarray([np.nan])
        return {"label": self.label, "precision": self.precision, **self.info,
                "miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"], "per_class_iou": s["per_class_iou"],
                "images": s["images"],
                "agreement": self.agree / self.pixels if self.pixels else None,
                "ms_per_frame": float(np.mean(frames) * 1e3), "ms_per_frame_p50": float(np.median(frames) * 1e3),
                "ms_per_tile": self.infer_s / self.tiles * 1e3 if self.tiles else None,
                "error": self.error}


def _run_backend(backend: Any, dataset: Any, tiler: Any, refs: list | None, opts: dict) -> dict:
    """One backend over the whole split; returns its result row."""
    from tqdm import tqdm

    run = RowScores.of(backend, dataset.num_classes, dataset.ignore_index)
    backend(np.zeros(backend.input_shape, np.float32))   # warm-up call: lazy init stays out of the latency
    for i in tqdm(range(len(dataset)), desc=backend.label, unit="img", disable=None, leave=False):
        sample = dataset[i]
        ref = refs[i] if refs is not None else None
        score, pred = score_frame(backend, tiler, sample, ref, dataset.num_classes, dataset.ignore_index)
        if not run.add(score):
            break
        if refs is None and opts.get("cache_refs") is not None:
            opts["cache_refs"].append(pred)
        if opts.get("save_dir"):
            save_prediction(opts["save_dir"], backend, sample, pred, ref, opts["dataset_name"])
    return run.result(dataset.class_names)


def run_backend(backend: Any, dataset: Any, tiler: Any, refs: list | None = None,
                cache_refs: list | None = None) -> dict:
    """One open backend over ``dataset`` (the gate's own scoring; used by the precision search):
    ``refs`` are the reference label maps to agree with, ``cache_refs`` collects this run's maps."""
    return _run_backend(backend, dataset, tiler, refs, {"cache_refs": cache_refs})


def check_artifact(meta: Any, ref_meta: Any, label: str) -> list[str]:
    """Hard errors for an artifact that cannot be compared; warnings for suspicious ones."""
    if meta.num_classes != ref_meta.num_classes:
        raise ToolkitError(f"{label} predicts {meta.num_classes} classes, the reference {ref_meta.num_classes}",
                           fix="compare artifacts of the same model variant")
    notes = []
    if meta.variant != ref_meta.variant:
        notes.append(f"{label}: variant {meta.variant} differs from the reference {ref_meta.variant}")
    if meta.checkpoint_sha256 and ref_meta.checkpoint_sha256 and meta.checkpoint_sha256 != ref_meta.checkpoint_sha256:
        notes.append(f"{label}: exported from another checkpoint (sha256 {meta.checkpoint_sha256[:12]} "
                     f"vs reference {ref_meta.checkpoint_sha256[:12]})")
    if meta.random_init:
        notes.append(f"{label}: exported from a randomly initialised model (dry run)")
    return notes


def _artifact_meta(artifact: str, kind: str) -> Any:
    """An artifact's metadata without running it (a served model: asked from the server)."""
    from runtime.artifact import read_onnx_meta, read_sidecar

    if kind in ("onnxruntime", "openvino"):
        return read_onnx_meta(artifact)
    if kind == "triton":
        from runtime.backends import open_backend

        with open_backend(artifact, kind) as served:
            return served.meta
    return read_sidecar(artifact)[0]


def reference_crop(artifacts: Sequence[str], backend: str, crop: Sequence[int] | None,
                   extra_rows: Sequence[tuple[str, str, dict]] = ()) -> tuple[int, int] | None:
    """The crop the PyTorch reference runs at: the artifacts' own.

    An artifact's crop is fixed when it is built, and it decides the tiling and what the non-local
    attention sees in one tile. A reference at another crop would be another model configuration, so
    its drop would mix tiling with precision: the reference follows the artifacts' crop, and a
    ``--crop`` or a set of artifacts that disagree is refused with that reason.
    """
    from runtime.backends import backend_for

    crops: dict[tuple[int, int], list[str]] = {}
    for a, wanted in [(a, backend) for a in artifacts] + [(a, b) for a, b, _ in extra_rows]:
        kind = backend_for(a, wanted)
        if kind == "torch":
            continue
        meta = _artifact_meta(a, kind)
        crops.setdefault((int(meta.crop[0]), int(meta.crop[1])), []).append(Path(a).name)
    if len(crops) > 1:
        groups = "; ".join(f"{h}x{w}: {', '.join(names)}" for (h, w), names in crops.items())
        raise ToolkitError(f"the artifacts were built at different crops ({groups}); one reference cannot tile "
                           "like all of them", fix="evaluate the artifacts of each crop in a separate run")
    if not crops:
        return None if crop is None else (int(crop[0]), int(crop[1]))
    (h, w), = crops
    if crop is not None and (int(crop[0]), int(crop[1])) != (h, w):
        raise ToolkitError(f"--crop {crop[0]}x{crop[1]} differs from the artifacts' crop {h}x{w}: the reference "
                           "would tile the frames differently, so the drop would measure the crop, not the precision",
                           fix=f"drop --crop (the reference follows the artifacts) or pass --crop {h}x{w}")
    return h, w


def _gate(row: dict, ref_miou: float | None, limits: dict[str, float]) -> None:
    """Fill drop / limit / passed for one row."""
    limit = limits.get(row["precision"], limits["fp32"])
    row["max_drop"] = limit
    if row["error"] or row["miou"] is None or ref_miou is None:
        row["drop"] = None
        row["passed"] = False if row["error"] else None
        return
    row["drop"] = (ref_miou - row["miou"]) * 100.0
    row["passed"] = bool(row["drop"] <= limit + 1e-9)


@dataclass
class GatePlan:
    """What one gate run checks, decided and validated before anything runs; the in-process run and
    the Ray run (runtime/cluster) both execute a plan and hand their rows to :func:`gate_report`."""

    data: str
    split: str
    dataset: Any
    reference: str
    checkpoint: str | None
    reference_spec: tuple[str, str, dict]          # (variant, "torch", options)
    specs: list[tuple[str, str, dict]]             # (artifact, backend, options), one per candidate row
    mode: str
    stride: Sequence[int] | None
    limits: dict[str, float]
    save_dir: str | None
    dataset_name: str
    backends: list = field(default_factory=list)   # the reference's and the rows' backends, built, not open

    def tiler(self) -> Any:
        from runtime.tiling import Tiler

        return Tiler(crop=None, stride=self.stride, mode=self.mode)


@dataclass
class GateRun:
    """What executing a plan gives: the reference row, its metadata, the candidate rows (in plan
    order), notes, and frames that could not be read (name, why; not scored)."""

    ref_row: dict
    ref_meta: Any
    rows: list[dict]
    notes: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def plan_gate(data: str, reference: str, artifacts: Sequence[str], checkpoint: str | None = None,
              crop: Sequence[int] | None = None, stride: Sequence[int] | None = None, mode: str = "tiled",
              split: str = "val", limit: int | None = None, max_drop: dict[str, float] | None = None,
              backend: str = "auto", backend_options: dict | None = None, save_dir: str | None = None,
              device: str = "cpu", label_ids: str = "labelIds",
              extra_rows: Sequence[tuple[str, str, dict]] = ()) -> GatePlan:
    """Check the arguments of :func:`evaluate` and decide the rows, crop and dataset."""
    from runtime.backends import open_backend
    from runtime.data import open_dataset

    specs = [(str(a), backend, dict(backend_options or {})) for a in artifacts]
    specs += [(str(a), b, dict(opts)) for a, b, opts in extra_rows]
    candidates = [open_backend(a, backend=b, **opts) for a, b, opts in specs]   # a bad option fails now
    crop = reference_crop(artifacts, backend, crop, extra_rows)
    dataset = open_dataset(data, split=split, limit=limit, label_ids=label_ids)
    if len(dataset) == 0:
        raise ToolkitError(f"no images found in {data} (split {split})", fix="check --data and --split")
    if dataset[0].label is None:
        raise ToolkitError(f"{data} has no ground-truth labels", expected="a Cityscapes/VOC/ADE20k layout",
                           fix="evaluate needs labels; generate a set with `python -m samples.generate`")
    _check_dataset(dataset, reference, data)
    ref_spec = (reference, "torch", {"checkpoint": checkpoint, "crop": crop, "device": device})
    ref_backend = open_backend(reference, backend="torch", **ref_spec[2])
    return GatePlan(str(data), split, dataset, reference, checkpoint, ref_spec, specs, mode, stride,
                    max_drop or dict(DEFAULT_MAX_DROP), save_dir, dataset_name_of(reference),
                    [ref_backend, *candidates])


def run_in_process(plan: GatePlan) -> GateRun:
    """The reference, then each candidate, one backend at a time, in this process."""
    tiler = plan.tiler()
    ref_backend, candidates = plan.backends[0], plan.backends[1:]
    refs: list = []
    opts = {"save_dir": plan.save_dir, "dataset_name": plan.dataset_name, "cache_refs": refs}
    with ref_backend:
        ref_row = _run_backend(ref_backend, plan.dataset, tiler, None, opts)
        ref_meta = ref_backend.meta
    rows, notes = [], []
    opts["cache_refs"] = None
    for cand in candidates:
        with cand:
            notes += check_artifact(cand.meta, ref_meta, cand.label)
            rows.append(_run_backend(cand, plan.dataset, tiler, refs, opts))
    return GateRun(ref_row, ref_meta, rows, notes)


def gate_report(plan: GatePlan, run: GateRun, seconds: float) -> dict[str, Any]:
    """The report dict of an executed plan: drops and pass/fail per row, notes, totals."""
    ref_row = run.ref_row
    ref_row.update(agreement=1.0, reference=True)
    notes = (["the reference is randomly initialised (no --checkpoint): mIoU values are meaningless"]
             if run.ref_meta.random_init else []) + list(run.notes)
    notes += [f"frame {name} could not be read and was not scored: {why}" for name, why in run.unreadable]
    for row in run.rows:
        _gate(row, ref_row["miou"], plan.limits)
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    stride = plan.stride
    report = {"data": plan.data, "split": plan.split, "images": len(plan.dataset) - len(run.unreadable),
              "skipped": getattr(plan.dataset, "skipped", 0), "kind": plan.dataset.kind,
              "reference": plan.reference, "checkpoint": plan.checkpoint, "mode": plan.mode,
              "crop": list(run.ref_meta.crop), "stride": list(stride) if stride else "default",
              "max_drop": plan.limits, "rows": [ref_row, *run.rows], "notes": notes,
              "class_names": list(plan.dataset.class_names), "seconds": seconds,
              "passed": all(r.get("passed") is not False for r in run.rows)}
    report.update(run.extra)
    return report


def evaluate(data: str, reference: str, artifacts: Sequence[str], checkpoint: str | None = None,
             crop: Sequence[int] | None = None, stride: Sequence[int] | None = None, mode: str = "tiled",
             split: str = "val", limit: int | None = None, max_drop: dict[str, float] | None = None,
             backend: str = "auto", backend_options: dict | None = None, save_dir: str | None = None,
             device: str = "cpu", label_ids: str = "labelIds",
             extra_rows: Sequence[tuple[str, str, dict]] = (),
             executor: Callable[[GatePlan], GateRun] | None = None) -> dict[str, Any]:
    """Run the reference and each artifact over ``data``; returns the report dict. ``extra_rows`` are
    more (artifact, backend, options) rows after ``artifacts`` (e.g. the same file in OpenVINO bf16).
    ``executor`` runs the plan (default: :func:`run_in_process`; runtime.cluster: on a Ray cluster)."""
    plan = plan_gate(data, reference, artifacts, checkpoint=checkpoint, crop=crop, stride=stride, mode=mode,
                     split=split, limit=limit, max_drop=max_drop, backend=backend,
                     backend_options=backend_options, save_dir=save_dir, device=device, label_ids=label_ids,
                     extra_rows=extra_rows)
    t0 = time.perf_counter()
    run = (executor or run_in_process)(plan)
    return gate_report(plan, run, time.perf_counter() - t0)


def _check_dataset(dataset: Any, reference: str, data: str) -> None:
    from runtime.zoo import get_variant

    variant = get_variant(reference)
    if dataset.num_classes != variant.num_classes:
        raise ToolkitError(f"{data} is a {dataset.kind} set with {dataset.num_classes} classes, "
                           f"but {reference} predicts {variant.num_classes}",
                           fix="evaluate a model trained on this dataset, or pass the matching --data")


# -- reports ---------------------------------------------------------------------------------------
def save_prediction(save_dir: str, backend: Any, sample: Any, pred: np.ndarray, ref: np.ndarray | None,
                    dataset_name: str) -> None:
    """Colourised prediction, disagreement map (vs the reference) and Cityscapes *_labelIds.png."""
    from runtime.visualize import colorize

    base = Path(str(sample.name)).name.replace("_leftImg8bit", "")
    folder = Path(save_dir) / backend.label.replace(":", "_").replace("/", "_")
    write_png(folder / f"{base}_color.png", colorize(pred, backend.meta.palette))
    if dataset_name == "cityscapes":
        write_png(folder / "labelIds" / f"{base}_labelIds.png", train_to_label_ids(pred))
    if ref is not None:
        gray = sample.image.mean(axis=2, keepdims=True).astype(np.uint8) // 2
        diff = np.repeat(gray, 3, axis=2)
        diff[pred != ref] = (255, 0, 0)
        write_png(folder / "disagreement" / f"{base}_diff.png", diff)


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def table_rows(report: dict) -> list[list[str]]:
    """Header + one row per backend: the summary every output (terminal, Markdown) shares."""
    out = [["backend", "precision", "mIoU %", "drop (pts)", "limit", "agreement %", "ms/frame", "ms/tile", "status"]]
    for r in report["rows"]:
        status = "reference" if r.get("reference") else (
            "NaN/Inf" if r.get("error") else {True: "pass", False: "FAIL", None: "-"}[r.get("passed")])
        out.append([r["label"], r["precision"], _fmt(r["miou"], ".2f", 100), _fmt(r.get("drop"), "+.3f"),
                    _fmt(r.get("max_drop"), ".2f"), _fmt(r["agreement"], ".3f", 100),
                    _fmt(r["ms_per_frame_p50"], ".1f"), _fmt(r["ms_per_tile"], ".1f"), status])
    return out


def print_table(report: dict) -> None:
    rows = table_rows(report)
    print(format_table(rows[1:], rows[0], align="lr"))


def markdown(report: dict) -> str:
    rows = table_rows(report)
    lines = [f"# Accuracy check: {report['reference']} on {report['data']} ({report['images']} images, "
             f"mode {report['mode']})", "", format_table(rows[1:], rows[0], markdown=True)]
    per_class = [[name] + [_fmt(r["per_class_iou"].get(name), ".2f", 100) for r in report["rows"]]
                 for name in report["class_names"]]
    lines += ["", "Drop = reference mIoU - artifact mIoU, in mIoU points. Agreement = pixels where the "
              "artifact predicts the same class as the PyTorch reference.", "", "## Per-class IoU (%)", "",
              format_table(per_class, ["class"] + [r["label"] for r in report["rows"]], markdown=True)]
    lines += [""] + [f"- note: {n}" for n in report["notes"]]
    lines += [f"- error: {r['label']}: {r['error']}" for r in report["rows"] if r.get("error")]
    return "\n".join(lines) + "\n"


def write_reports(report: dict, out: str | Path) -> tuple[Path, Path]:
    """``evaluate.json`` and ``evaluate.md`` in ``out`` (atomic writes)."""
    import json

    from runtime.fileio import atomic_open

    jpath, mpath = Path(out) / "evaluate.json", Path(out) / "evaluate.md"
    with atomic_open(jpath, "w") as f:
        json.dump(report, f, indent=2, default=str)
    with atomic_open(mpath, "w") as f:
        f.write(markdown(report))
    return jpath, mpath
