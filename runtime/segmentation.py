"""Batch segmentation's library: inputs (image files, folders, video files), output names, one frame
segmented and written, and the resume rule. ``python -m runtime.segment`` (apps/segment.py) runs it
in one process; runtime/cluster runs the same :func:`run_frame` on Ray actors.

Outputs per frame, in ``out``: ``<stem>_trainIds.png``, ``<stem>_color.png``, for Cityscapes variants
``<stem>_labelIds.png`` and, with an overlay, ``<stem>_overlay.png``; a video ``clip.mp4`` gives
``clip/<frame index>_*.png`` (six digits). A frame's files are placed as one set (runtime.fileio
``place_files``): an interrupted run leaves all of them or none. A run stamp (``.segment-run.json``:
model, its sha256, options) lets a re-run skip frames whose files are complete, and only those of
the same model and options.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from runtime.errors import ToolkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
STAMP = ".segment-run.json"


@dataclass(frozen=True)
class SegmentInput:
    """One input file: an image or a video, and its output stem relative to ``out``."""

    path: Path
    stem: Path
    video: bool = False


@dataclass
class FrameJob:
    """One frame to segment: its place in the run, display name and output stem; an image is read
    where it runs (``path``), a video frame comes decoded (``frame``, RGB)."""

    index: int
    name: str
    stem: Path
    path: str | None = None
    frame: np.ndarray | None = None
    error: str | None = None            # a video that cannot be opened: nothing to run


def collect_inputs(inputs: Sequence[str]) -> list[SegmentInput]:
    """Every image and video of ``inputs`` (files, or folders searched recursively); two inputs
    that would write the same files are an error."""
    from runtime.video_io import VIDEO_EXTS

    def kind(p: Path) -> str | None:
        suffix = p.suffix.lower()
        return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_EXTS else None

    found: list[tuple[Path, Path, bool]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and kind(f))
            if not files:
                raise ToolkitError(f"no images or videos in folder {path}",
                                   expected=" ".join(IMAGE_SUFFIXES + VIDEO_EXTS))
            found += [(f, f.relative_to(path).with_suffix(""), kind(f) == "video") for f in files]
        elif path.is_file():
            found.append((path, Path(path.stem), kind(path) == "video"))
        else:
            raise ToolkitError(f"input not found: {path}", fix="pass image or video files, or folders")
    stems: dict[tuple[Path, bool], Path] = {}
    for path, rel, video in found:
        stem = rel.with_name(rel.name.replace("_leftImg8bit", ""))
        if (stem, video) in stems:
            raise ToolkitError(f"{path} and {stems[stem, video]} would write the same output files",
                               fix="segment them in separate runs (or with separate --out folders)")
        stems[stem, video] = path
    return [SegmentInput(path, stem, video) for (stem, video), path in stems.items()]


def iter_frames(inputs: Sequence[SegmentInput]) -> Iterator[FrameJob]:
    """The frames of ``inputs`` in order: images by path, videos decoded here, frame by frame."""
    from runtime.video_io import video_frames

    index = 0
    for item in inputs:
        if not item.video:
            yield FrameJob(index, str(item.path), item.stem, path=str(item.path))
            index += 1
            continue
        try:
            for k, frame in enumerate(video_frames(item.path)):
                yield FrameJob(index, f"{item.path}#{k}", item.stem / f"{k:06d}", frame=frame)
                index += 1
        except ToolkitError as exc:
            yield FrameJob(index, str(item.path), item.stem, error=exc.message)
            index += 1


def output_paths(out: Path, stem: Path, variant: str, overlay: bool) -> list[Path]:
    """The files one frame writes (trainIds first)."""
    from runtime.values import dataset_name_of

    base = Path(out) / stem
    suffixes = ["_trainIds", "_color"] + (["_labelIds"] if dataset_name_of(variant) == "cityscapes" else [])
    return [base.with_name(base.name + s + ".png") for s in suffixes + (["_overlay"] if overlay else [])]


def write_outputs(out: Path, stem: Path, image: np.ndarray, labels: np.ndarray, meta: Any,
                  overlay_alpha: float | None) -> list[Path]:
    """Encode and place one frame's files as one set; returns their paths."""
    from runtime.data import train_to_label_ids
    from runtime.fileio import encode_png, place_files, temporary_dir
    from runtime.visualize import colorize, overlay

    paths = output_paths(out, stem, meta.variant, overlay_alpha is not None)
    images = [labels, colorize(labels, meta.palette)]
    if paths[2:3] and paths[2].name.endswith("_labelIds.png"):
        images.append(train_to_label_ids(labels))
    if overlay_alpha is not None:
        images.append(overlay(image, labels, meta.palette, overlay_alpha))
    with temporary_dir(paths[0]) as tmp:
        moves = []
        for path, img in zip(paths, images):
            (tmp / path.name).write_bytes(encode_png(img, path))
            moves.append((tmp / path.name, path))
        place_files(moves)
    return paths


def run_frame(backend: Any, tiler: Any, job: FrameJob, out: Path, overlay_alpha: float | None) -> dict:
    """Read, segment and write one frame; a frame that cannot be read gives a record saying so
    (status "unreadable") instead of an exception, so the run goes on."""
    from runtime.preprocess import read_image

    record = {"index": job.index, "name": job.name, "status": "unreadable", "error": job.error}
    if job.error is not None:
        return record
    try:
        image = job.frame if job.frame is not None else read_image(job.path)
    except ToolkitError as exc:
        record["error"] = exc.message
        return record
    start = time.perf_counter()
    labels = tiler.labels(backend, image)
    seconds = time.perf_counter() - start
    written = write_outputs(out, job.stem, image, labels, backend.meta, overlay_alpha)
    meta = backend.meta
    record.update(status="done", height=image.shape[0], width=image.shape[1], seconds=seconds,
                  tiles=int(tiler.last_timing["tiles"]) if tiler.mode == "tiled" else 0,
                  outputs=[str(w) for w in written],
                  classes=[meta.class_names[c] for c in np.unique(labels) if c < meta.num_classes])
    return record


def describe(record: dict) -> str:
    """The line printed per frame."""
    if record["status"] == "unreadable":
        return f"  {record['name']}: cannot read: {record['error']}"
    if record["status"] == "skipped":
        return f"  {record['name']}: complete, skipped"
    outputs = record["outputs"]
    return (f"  {record['name']}: {record['height']}x{record['width']}"
            + (f", {record['tiles']} tiles" if record["tiles"] else "")
            + f", {record['seconds'] * 1000:.0f} ms -> {Path(outputs[0]).name} (+{len(outputs) - 1}); "
            f"classes: {', '.join(record['classes'])}")


# -- resume -----------------------------------------------------------------------------------------
def run_stamp(model: str, backend: str, options: dict, mode: str, stride: Sequence[int] | None,
              overlay_alpha: float | None) -> dict:
    """What decides a run's outputs: the model (and its file's or checkpoint's sha256), backend
    options that change numerics, tiling and overlay. Threads, devices and providers do not count."""
    from runtime.fileio import sha256_file

    def digest(path: Any) -> str | None:
        return sha256_file(path) if path and Path(str(path)).is_file() else None

    kept = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(options.items())
            if k not in ("threads", "device", "providers", "checkpoint") and v is not None}
    return {"model": model, "sha256": digest(model), "checkpoint_sha256": digest(options.get("checkpoint")),
            "backend": backend, "options": kept, "mode": mode, "stride": list(stride) if stride else None,
            "overlay": overlay_alpha}


def prepare_out(out: Path, inputs: Sequence[SegmentInput], stamp: dict, overwrite: bool) -> bool:
    """Decide whether complete frames in ``out`` may be skipped; returns True to skip them.

    Same stamp: resume. No stamp and no outputs of these inputs yet: a fresh run (the stamp is written
    now). Outputs of another or an unknown model/options: an error, unless ``overwrite`` (then every
    frame runs and :func:`finish_out` writes the stamp once all are done). Frame sets an interrupted
    writer left incomplete are removed first.
    """
    from runtime.fileio import atomic_open, ensure_writable_dir

    ensure_writable_dir(out)
    remove_partials(out, inputs)
    path = Path(out) / STAMP
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if old == stamp and not overwrite:
        return True
    if overwrite or not _has_outputs(out, inputs):
        if overwrite:
            path.unlink(missing_ok=True)
        else:
            with atomic_open(path, "w") as f:
                json.dump(stamp, f, indent=1)
        return False
    why = "another model or other options" if old else "an earlier run with no stamp"
    raise ToolkitError(f"{out} holds outputs of {why} ({STAMP}); resuming would mix them",
                       fix="pass --overwrite to segment every frame again, or choose another --out")


def remove_partials(out: Path, inputs: Sequence[SegmentInput]) -> None:
    """Remove what writers that are gone left in the output folders: frame sets placed only in part,
    and temporaries (runtime.fileio's rules: a writer's PID that no longer exists)."""
    from runtime.fileio import remove_stale_temporaries, undo_unfinished_placements

    folders = {(Path(out) / i.stem).parent for i in inputs} | {Path(out) / i.stem for i in inputs if i.video}
    for folder in sorted(f for f in folders if f.is_dir()):
        undo_unfinished_placements(folder)
        for entry in folder.iterdir():             # .NAME.PID.XXXXXXXX.tmp
            parts = entry.name.rsplit(".", 3)
            if entry.name.startswith(".") and len(parts) == 4 and parts[3] == "tmp" and parts[1].isdigit():
                remove_stale_temporaries(folder / parts[0][1:])


def finish_out(out: Path, stamp: dict) -> None:
    """Write the run stamp (after a complete --overwrite run)."""
    from runtime.fileio import atomic_open

    with atomic_open(Path(out) / STAMP, "w") as f:
        json.dump(stamp, f, indent=1)


def _has_outputs(out: Path, inputs: Sequence[SegmentInput]) -> bool:
    for item in inputs:
        base = Path(out) / item.stem
        if item.video and base.is_dir() and any(base.glob("*_trainIds.png")):
            return True
        if not item.video and base.with_name(base.name + "_trainIds.png").exists():
            return True
    return False


def skip_complete(job: FrameJob, out: Path, variant: str, overlay: bool) -> dict | None:
    """The "skipped" record of a frame whose files all exist (None: it has to run)."""
    if job.error is None and all(p.exists() for p in output_paths(out, job.stem, variant, overlay)):
        return {"index": job.index, "name": job.name, "status": "skipped"}
    return None
