"""A short driving video through one procedural street, for the video demo."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import ToolkitError
from runtime.fileio import ensure_writable_dir
from samples.render import render_world
from samples.world import generate_world

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


def render_drive(seed: int = 0, n_frames: int = 120, fps: float = 10.0, size: tuple[int, int] = (256, 512),
                 speed: float = 8.0):
    """Yield (RGB frame, labelIds) for a camera driving at ``speed`` m/s; traffic moves too."""
    H, W = size
    world = generate_world(np.random.default_rng([seed, 2]), length=speed * n_frames / fps, cam_speed=speed)
    for i in range(n_frames):
        yield render_world(world.at(i / fps), H, W, frame=i)


def write_video(path: str | os.PathLike, seed: int = 0, n_frames: int = 120, fps: float = 10.0,
                size: tuple[int, int] = (256, 512), speed: float = 8.0) -> Path:
    """Write the drive as .mp4 (mp4v) or .avi (MJPG), atomically; checks it reopens with all frames."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FOURCC:
        raise ToolkitError(f"unsupported video file name {path}", expected="a .mp4 or .avi file",
                           fix="name the video e.g. data/drive.mp4")
    if n_frames < 1 or fps <= 0:
        raise ToolkitError("bad video length", expected="--video-frames >= 1 and --fps > 0",
                           found=f"{n_frames} frames at {fps} fps")
    H, W = size
    ensure_writable_dir(path.parent, flag="--video")
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp{suffix}"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC[suffix]), fps, (W, H))
    try:
        if not writer.isOpened():
            raise ToolkitError(f"OpenCV cannot write {suffix} video here ({FOURCC[suffix]})",
                               fix="install an OpenCV build with video support (opencv-python-headless)")
        for rgb, _ in render_drive(seed, n_frames, fps, size, speed):
            writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        writer.release()
        _check_video(tmp, n_frames)
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
    return path


def _check_video(path: Path, n_frames: int) -> None:
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    if count != n_frames:
        raise ToolkitError(f"the written video {path} does not reopen correctly",
                           expected=f"{n_frames} frames", found=f"{count}")
