"""Live segmentation demo: camera / video / stream / image folder -> overlay window and recording.

    python -m runtime.video_demo SOURCE --model ARTIFACT [--output out.mp4] [--show | --headless]

SOURCE: a camera index (0), a V4L2 device (/dev/video0), a video file, an image folder, an
rtsp:// / http:// URL, or a GStreamer pipeline (contains "!", e.g. a Jetson CSI camera:
"nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx
! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"). ARTIFACT: a .onnx file, a .engine file,
or a variant name (PyTorch, with --checkpoint). Cameras and streams are live (newest frame wins,
stale frames dropped, reconnect with backoff); files and folders are processed frame by frame.
q / ESC (window) or Ctrl-C stop cleanly; the recording is finalised either way.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence


from apps.cli import add_model_arguments, non_negative_int, open_model, parse_hw, positive_int
from runtime.errors import ToolkitError
from runtime.video_io import STREAM_KINDS, Reconnecting, SourceSpec, VideoSink, log, open_source, parse_source
from runtime.video_pipeline import Pipeline, RateMeter, Result, Stats

WINDOW = "NonLocalNet demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.video_demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="camera index, /dev/videoN, video file, image folder, URL or GStreamer pipeline")
    m = add_model_arguments(p)
    m.add_argument("--workers", default="auto",
                   help="inference threads sharing the backend (auto: 2, or 1 for TensorRT engines)")
    v = p.add_argument_group("display and recording")
    v.add_argument("--alpha", type=float, default=0.5, help="overlay opacity 0..1 (default 0.5)")
    v.add_argument("--legend", action="store_true", help="draw a legend of the classes in view")
    v.add_argument("--no-hud", action="store_true", help="no FPS / latency readout")
    screen = v.add_mutually_exclusive_group()
    screen.add_argument("--show", action="store_true", help="open a window (q / ESC to quit)")
    screen.add_argument("--headless", action="store_true", help="never open a window (boards without display)")
    v.add_argument("--output", help="record the overlay to a video file (.mp4, .avi, .mkv)")
    v.add_argument("--fourcc", help="recording codec (default: mp4v for .mp4, MJPG for .avi)")
    v.add_argument("--output-fps", type=float, help="recording frame rate (default: the source's, else 30)")
    s = p.add_argument_group("source")
    live = s.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None,
                      help="treat the source as live: newest frame wins, reconnect on failure")
    live.add_argument("--no-live", dest="live", action="store_false",
                      help="process every frame in order (default for files and folders)")
    s.add_argument("--max-frames", type=positive_int, help="stop after N frames")
    s.add_argument("--camera-size", help="ask a camera for this capture size HxW")
    s.add_argument("--reconnect-attempts", type=non_negative_int, default=5, help="live: reopen attempts (default 5)")
    s.add_argument("--reconnect-delay", type=float, default=0.5,
                   help="live: first reconnect wait in s, doubled per attempt (default 0.5)")
    s.add_argument("--reconnect-max-delay", type=float, default=10.0, help="live: longest wait (default 10)")
    s.add_argument("--timeout", type=float, default=10.0, help="URL sources: open/read timeout in s")
    s.add_argument("--queue-size", type=positive_int, default=4, help="frames buffered between stages (files)")
    return p


def inference_workers(args: argparse.Namespace, backend: Any) -> int:
    """``--workers``: auto = 2 where the backend takes concurrent calls, else 1."""
    concurrent = bool(getattr(backend, "concurrent_calls", backend.name != "tensorrt"))
    if str(args.workers) == "auto":
        return 2 if concurrent else 1
    if not str(args.workers).isdigit() or int(args.workers) < 1:
        raise ToolkitError(f"bad --workers {args.workers!r}", expected="auto or an integer >= 1")
    if int(args.workers) > 1 and not concurrent:
        raise ToolkitError(f"--workers {args.workers}: the {backend.name} backend cannot run calls concurrently",
                           fix="use --workers 1 (or auto)")
    return int(args.workers)


def check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.alpha <= 1.0:
        raise ToolkitError(f"bad --alpha {args.alpha}", expected="0 <= alpha <= 1")
    if args.output_fps is not None and args.output_fps <= 0:
        raise ToolkitError(f"bad --output-fps {args.output_fps}", expected="> 0")
    if args.show:
        check_display()


def check_display() -> None:
    """Fail early (one line) if no window can be opened."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ToolkitError("--show needs a display, but DISPLAY is not set", fix="use --headless --output out.mp4")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ToolkitError("this OpenCV build cannot open windows (opencv-python-headless?)",
                           fix="pip install opencv-python (desktop) or use --headless --output out.mp4") from None


def close_window() -> None:
    import cv2

    try:
        cv2.destroyWindow(WINDOW)
        cv2.waitKey(1)
    except cv2.error:
        pass   # already closed by the user


class Renderer:
    """Overlay + legend + HUD for each result; records it and shows it (in the main thread)."""

    def __init__(self, meta: Any, args: argparse.Namespace, sink: VideoSink | None, stats: Stats,
                 clock: Any = time.perf_counter) -> None:
        self.palette = meta.palette
        self.names = meta.class_names
        self.alpha = args.alpha
        self.legend = args.legend and bool(self.names)
        self.hud = not args.no_hud
        self.show = bool(args.show)
        self.sink = sink
        self.stats = stats
        self.clock = clock
        self.rate = RateMeter()          # frames delivered per second: the rate the viewer gets
        self.fps = 0.0
        self.latency_ema = 0.0

    def _update_rates(self, t_capture: float) -> None:
        now = self.clock()
        self.fps = self.rate.tick(now)
        lat = 1000.0 * (now - t_capture)
        self.latency_ema = lat if self.latency_ema == 0 else 0.9 * self.latency_ema + 0.1 * lat

    def __call__(self, result: Result) -> bool:
        import cv2

        from runtime.visualize import draw_hud, draw_legend, overlay

        image = overlay(result.rgb, result.labels, self.palette, self.alpha)
        if self.legend:
            draw_legend(image, self.names, self.palette, present_only=True, labels=result.labels)
        self._update_rates(result.t_capture)
        if self.hud:
            draw_hud(image, self.fps, self.latency_ema, self.stats.dropped)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if self.sink is not None:
            self.sink.write(bgr)
        if self.show:
            cv2.imshow(WINDOW, bgr)
            return self.poll()
        return True

    def poll(self) -> bool:
        """Pump window events; False when q / ESC was pressed or the window was closed."""
        import cv2

        if not self.show:
            return True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            return False
        return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT / SIGTERM set ``stop`` (a second Ctrl-C interrupts hard); yields the signals seen."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT and seen:
            raise KeyboardInterrupt
        seen.append(signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def make_source(spec: SourceSpec, args: argparse.Namespace, stop: threading.Event) -> Any:
    size = parse_hw(args.camera_size, "--camera-size") if args.camera_size else None
    source = open_source(spec, timeout_s=args.timeout, size_hw=size)
    if spec.kind in STREAM_KINDS:   # a file's end is its end, even with --live
        source = Reconnecting(source, attempts=args.reconnect_attempts, delay=args.reconnect_delay,
                              max_delay=args.reconnect_max_delay, stop=stop)
    return source


def run(args: argparse.Namespace, source: Any, backend: Any, stop: threading.Event) -> Stats:
    """Run the pipeline with an opened ``source`` and an (unopened) ``backend``; finalises the recording."""
    from runtime.tiling import Tiler

    tiler = Tiler(stride=parse_hw(args.stride, "--stride") if args.stride else None, batch=None, mode=args.mode)
    sink = None
    if args.output:
        sink = VideoSink(args.output, fps=args.output_fps or getattr(source, "fps", None) or 30.0,
                         fourcc=args.fourcc)
    workers = inference_workers(args, backend)
    pipe: Pipeline | None = None
    try:
        with backend:
            renderer = Renderer(backend.meta, args, sink, Stats())
            pipe = Pipeline(source, backend, tiler, renderer, live=source.live, max_frames=args.max_frames,
                            queue_size=args.queue_size, stop=stop, idle=renderer.poll if args.show else None,
                            workers=workers)
            renderer.stats = pipe.stats
            stats = pipe.run()
    finally:
        written = sink.close() if sink is not None else None
        if pipe is not None and pipe.source_busy:
            log(f"warning: {source.name}: a read is still blocked; leaving it to the OS")
        else:
            source.close()
        if args.show:
            close_window()
    print(stats.summary() + (f", wrote {written}" if written else ""), flush=True)
    if pipe.error is not None:
        raise pipe.error
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    spec = parse_source(args.source, args.live)
    backend = open_model(args)            # cheap: allocation happens when the pipeline starts
    stop = threading.Event()
    with stop_on_signals(stop) as seen:
        source = make_source(spec, args, stop)
        run(args, source, backend, stop)
    if seen:
        log(f"stopped by signal {seen[0]}")
        return 128 + seen[0]
    return 0
