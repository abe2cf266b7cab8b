"""Frame sources (camera, V4L2, file, URL, GStreamer, image folder) and the video recorder.

Every source yields uint8 RGB frames (``read() -> frame | None``; None = end of stream or a
failed read). :class:`Reconnecting` wraps a live source and reopens it with exponential backoff.
:class:`VideoSink` records to a temporary name beside the target and renames it on ``close()``,
so a recording stopped by q / Ctrl-C is finalised (playable), and a killed run never leaves a
half-written file under the final name. OpenCV is imported inside the functions.
"""
from __future__ import annotations

import contextlib
import glob
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from runtime.errors import ToolkitError

VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ts")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
                  "srt://", "rtp://")
STREAM_KINDS = ("camera", "v4l2", "gstreamer", "url")   # reopened with backoff when they fail
FOURCC_BY_EXT = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class SourceError(ToolkitError):
    """A source that cannot be opened (or reopened)."""


class StreamLost(ToolkitError):
    """A live stream failed and every reconnect attempt failed too."""


@dataclass(frozen=True)
class SourceSpec:
    """What a source string means: ``kind`` is camera|v4l2|gstreamer|url|file|folder|image."""

    text: str
    kind: str
    live: bool

    @property
    def camera_index(self) -> int:
        return int(self.text)


def parse_source(text: str, live: bool | None = None) -> SourceSpec:
    """Classify a source string; ``live`` overrides the guess (cameras/streams live, files not)."""
    text = str(text).strip()
    if not text:
        raise SourceError("empty source", expected="a camera index, device, file, folder, URL or GStreamer pipeline")
    if text.isdigit():
        kind = "camera"
    elif "!" in text:
        kind = "gstreamer"
    elif text.lower().startswith(STREAM_SCHEMES):
        kind = "url"
    elif text.startswith("/dev/"):
        kind = "v4l2"
    elif os.path.isdir(text):
        kind = "folder"
    elif os.path.isfile(text):
        kind = "image" if text.lower().endswith(IMAGE_EXTS) else "file"
    else:
        raise SourceError(f"source not found: {text}",
                          expected="a camera index (0), /dev/videoN, a video file, an image folder, "
                                   "an rtsp:// or http:// URL, or a GStreamer pipeline (with '!')",
                          fix="check the path")
    guessed = kind in STREAM_KINDS
    return SourceSpec(text, kind, guessed if live is None else bool(live))


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own WARN/ERROR log lines while probing a source or codec: a failure
    becomes our one-line error instead. Left alone when the user sets OPENCV_LOG_LEVEL."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if os.environ.get("OPENCV_LOG_LEVEL") or logging is None or not hasattr(logging, "getLogLevel"):
        yield
        return
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(old)


def _gstreamer_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def make_capture(spec: SourceSpec, timeout_s: float = 10.0, size_hw: tuple[int, int] | None = None) -> Any:
    """Build (not yet checked) the ``cv2.VideoCapture`` for a source spec."""
    import cv2

    if spec.kind == "camera":
        cap = cv2.VideoCapture(spec.camera_index)
    elif spec.kind == "v4l2":
        cap = cv2.VideoCapture(spec.text, cv2.CAP_V4L2)
        if not cap.isOpened():   # OpenCV builds without the V4L2 backend: let FFmpeg try
            cap.release()
            cap = cv2.VideoCapture(spec.text, cv2.CAP_ANY)
    elif spec.kind == "gstreamer":
        cap = cv2.VideoCapture(spec.text, cv2.CAP_GSTREAMER)
    elif spec.kind == "url":
        ms = int(timeout_s * 1000)
        cap = cv2.VideoCapture(spec.text, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(spec.text)
    if spec.kind in ("camera", "v4l2") and cap.isOpened():
        if size_hw is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size_hw[0])
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, size_hw[1])
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)   # keep the driver queue short: newest frame wins
    return cap


def _open_error(spec: SourceSpec) -> SourceError:
    fixes = {
        "camera": "check `ls /dev/video*`, that no other program holds the camera, and the index",
        "v4l2": "check the device exists and you may read it (group `video`)",
        "url": "check the URL, credentials and network; try it in ffplay/VLC",
        "file": "check that it is a complete video file OpenCV/FFmpeg can decode",
    }
    if spec.kind == "gstreamer" and not _gstreamer_available():
        return SourceError("cannot open GStreamer pipeline: this OpenCV build has no GStreamer support",
                           fix="use an OpenCV built with GStreamer (JetPack's system OpenCV on Jetson; "
                               "pip wheels lack it)")
    fix = fixes.get(spec.kind, "check the pipeline with gst-launch-1.0 and end it in appsink")
    return SourceError(f"cannot open {spec.kind} source {spec.text}", fix=fix)


class CaptureSource:
    """A ``cv2.VideoCapture`` (camera, V4L2 device, file, URL, GStreamer) giving RGB frames."""

    def __init__(self, spec: SourceSpec, timeout_s: float = 10.0,
                 size_hw: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.live = spec.live
        self.name = spec.text
        self.timeout_s = timeout_s
        self.size_hw = size_hw
        self._cap: Any = None

    def open(self) -> None:
        self.close()
        with quiet_opencv():
            cap = make_capture(self.spec, self.timeout_s, self.size_hw)
        if not cap.isOpened():
            cap.release()
            raise _open_error(self.spec)
        self._cap = cap

    @property
    def fps(self) -> float | None:
        import cv2

        value = self._cap.get(cv2.CAP_PROP_FPS) if self._cap is not None else 0.0
        return float(value) if value and 0 < value < 1000 else None

    def read(self) -> np.ndarray | None:
        from runtime.preprocess import to_rgb

        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None or frame.size == 0:
            return None
        return to_rgb(frame, "bgr")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """Every image of a folder (or one image file), in sorted order, as RGB frames."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.live = spec.live
        self.name = spec.text
        self.fps: float | None = None
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        p = Path(self.spec.text)
        files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise SourceError(f"no images in folder {p}", expected="files ending in " + ", ".join(IMAGE_EXTS))
        self._files, self._pos = files, 0

    def read(self) -> np.ndarray | None:
        from runtime.preprocess import read_image

        if self._pos >= len(self._files):
            return None
        path = self._files[self._pos]
        self._pos += 1
        return read_image(path)

    def close(self) -> None:
        self._files, self._pos = [], 0


def open_source(spec: SourceSpec, timeout_s: float = 10.0, size_hw: tuple[int, int] | None = None):
    """Create and open the source for ``spec`` (SourceError if it cannot be opened)."""
    src = FolderSource(spec) if spec.kind in ("folder", "image") else CaptureSource(spec, timeout_s, size_hw)
    src.open()
    return src


def video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame of a video file, in decoding order, as RGB (a SourceError when it cannot be
    opened; the frames end where the file can no longer be decoded)."""
    source = CaptureSource(SourceSpec(str(path), "file", False))
    source.open()
    try:
        while True:
            frame = source.read()
            if frame is None:
                return
            yield frame
    finally:
        source.close()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Reconnecting:
    """Wrap a live source: a failed read closes it and reopens it with exponential backoff.

    Delays: ``delay``, 2x, 4x, ... capped at ``max_delay``; after ``attempts`` failed reopen
    attempts :class:`StreamLost` is raised. ``stop`` (an Event) interrupts the waiting at once.
    ``reconnects`` counts successful reopenings.
    """

    def __init__(self, source: Any, attempts: int = 5, delay: float = 0.5, max_delay: float = 10.0,
                 stop: threading.Event | None = None, logger: Callable[[str], None] = log) -> None:
        if attempts < 0 or delay < 0 or max_delay < 0:
            raise ToolkitError("reconnect settings must be >= 0",
                               found=f"attempts {attempts}, delay {delay}, max delay {max_delay}")
        self.source = source
        self.live = source.live
        self.name = source.name
        self.attempts = int(attempts)
        self.delay = float(delay)
        self.max_delay = float(max_delay)
        self.stop = stop or threading.Event()
        self.logger = logger
        self.reconnects = 0

    @property
    def fps(self) -> float | None:
        return self.source.fps

    def backoff(self, attempt: int) -> float:
        """Wait before reopen attempt ``attempt`` (0-based)."""
        return min(self.max_delay, self.delay * (2 ** attempt))

    def read(self) -> np.ndarray | None:
        frame = self.source.read()
        if frame is not None or self.stop.is_set():
            return frame
        for attempt in range(self.attempts):
            wait = self.backoff(attempt)
            self.logger(f"warning: {self.name}: stream lost, reconnecting in {wait:g} s "
                        f"(attempt {attempt + 1}/{self.attempts})")
            if self.stop.wait(wait):
                return None
            self.source.close()
            try:
                self.source.open()
            except SourceError:
                continue
            frame = self.source.read()
            if frame is not None:
                self.reconnects += 1
                self.logger(f"{self.name}: reconnected")
                return frame
        raise StreamLost(f"live source {self.name} lost: {self.attempts} reconnect attempts failed",
                         fix="check the camera / network, or raise --reconnect-attempts")

    def close(self) -> None:
        self.source.close()


def default_fourcc(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FOURCC_BY_EXT:
        raise ToolkitError(f"unsupported recording format {ext or '(none)'} for {path}",
                           expected=", ".join(sorted(FOURCC_BY_EXT)), fix="name the output e.g. out.mp4")
    return FOURCC_BY_EXT[ext]


class VideoSink:
    """Record BGR frames to ``path`` through a temporary file renamed on :meth:`close`.

    The writer opens on the first frame (its size fixes the video size; later frames of another
    size, e.g. from an image folder, are resized). ``close()`` always releases the writer (the
    container is finalised and playable) and renames; with no frames written nothing is left.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, fourcc: str | None = None) -> None:
        from runtime.fileio import ensure_writable_dir

        self.path = Path(path)
        self.fourcc = fourcc or default_fourcc(self.path)
        if len(self.fourcc) != 4:
            raise ToolkitError(f"bad --fourcc {self.fourcc!r}", expected="four characters, e.g. mp4v, MJPG")
        if not fps or fps <= 0:
            raise ToolkitError(f"bad recording frame rate {fps}", expected="> 0")
        self.fps = float(fps)
        ensure_writable_dir(self.path.parent, flag="--output")
        self._remove_stale_partials()
        self.tmp = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self.size_wh: tuple[int, int] | None = None
        self.frames = 0
        self.final: Path | None = None
        self._writer: Any = None

    def _remove_stale_partials(self) -> None:
        """Partial recordings of this path whose writer is gone (killed with SIGKILL)."""
        from runtime.fileio import pid_alive

        prefix = f".{self.path.stem}.partial-"
        for p in self.path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(self.path.suffix)}"):
            pid = p.name[len(prefix):len(p.name) - len(self.path.suffix)]
            if pid.isdigit() and not pid_alive(int(pid)):
                p.unlink(missing_ok=True)
                log(f"note: removed {p}, a partial recording left by an interrupted run")

    def _open(self, width: int, height: int) -> None:
        import cv2

        with quiet_opencv():
            writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            writer.release()
            self._discard()
            raise ToolkitError(f"cannot record to {self.path} with codec {self.fourcc}",
                               fix="try another --fourcc (mp4v for .mp4, MJPG for .avi)")
        self._writer, self.size_wh = writer, (width, height)

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        h, w = frame_bgr.shape[:2]
        if self._writer is None:
            self._open(w, h)
        elif (w, h) != self.size_wh:
            frame_bgr = cv2.resize(frame_bgr, self.size_wh, interpolation=cv2.INTER_AREA)
        self._writer.write(frame_bgr)
        self.frames += 1

    def _discard(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()

    def close(self) -> Path | None:
        """Finalise: release the writer and rename onto ``path`` (None if nothing was written)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
        if self.final is None and self.frames > 0 and self.tmp.exists():
            os.replace(self.tmp, self.path)
            self.final = self.path
        self._discard()
        return self.final
