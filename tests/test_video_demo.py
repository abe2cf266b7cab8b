"""runtime.video_demo / video_io / video_pipeline: sources, pipeline, recording, reconnect, SIGINT, soak.

Fast fakes follow the real contracts: ``FakeBackend`` is a backend (context manager, NCHW float32
in, logits out, ArtifactMeta with a palette); ``FlakySource`` is a live source that drops.
The CLI tests with a real model use the tiny_cityscapes PyTorch variant.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import apps.video_demo as demo
from runtime.artifact import ArtifactMeta
from apps.cli import run_cli
from runtime.tiling import Tiler, default_stride, tile_grid
from runtime.video_io import (Reconnecting, SourceError, StreamLost, VideoSink, make_capture,
                              parse_source)
from runtime.video_pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
PALETTE = ((0, 0, 255), (0, 255, 0), (255, 0, 0))
META = ArtifactMeta(variant="fake", num_classes=3, class_names=("dark", "mid", "bright"), palette=PALETTE,
                    crop=(64, 128), mean=(128.0, 128.0, 128.0), std=(64.0, 64.0, 64.0))


class FakeBackend:
    """Class = brightness band of the red channel; optional per-call delay and NaN after N calls."""

    name, precision, static_batch, output_kind = "fake", "fp32", True, "logits"

    def __init__(self, delay: float = 0.0, nan_after: int | None = None) -> None:
        self.meta, self.num_classes, self.input_shape = META, 3, (1, 3, 64, 128)
        self.delay, self.nan_after, self.calls, self.opened = delay, nan_after, 0, 0
        self.lock, self.jitter = threading.Lock(), np.random.default_rng(1)

    def __enter__(self):
        self.opened += 1
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.opened = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls += 1
            calls = self.calls
        if self.delay:
            time.sleep(self.delay * (1.0 + self.jitter.random()))
        red = batch[:, 0]
        out = np.stack([-red, np.zeros_like(red), red], axis=1) * 4.0
        if self.nan_after is not None and calls > self.nan_after:
            out[:] = np.nan
        return out.astype(np.float32)


def write_frames(path: Path, n: int, size=(64, 128), fps: float = 25.0) -> Path:
    """A video whose left half is dark and right half bright (classes 0 and 2), moving noise."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, w // 2:] = 230
        f[(i % h), :] = rng.integers(0, 255, (w, 3), dtype=np.uint8)
        writer.write(f)
    writer.release()
    return path


def count_frames(path: Path) -> tuple[int, int, int]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not reopen"
    n, size = 0, (0, 0)
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n, size = n + 1, f.shape[:2]
    cap.release()
    return n, size[0], size[1]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    """The synthetic driving video from samples/ (24 frames, 128x256)."""
    from samples.dataset import write_video
    return write_video(tmp_path_factory.mktemp("video") / "drive.mp4", n_frames=24, fps=10.0, size=(128, 256))


def cli(argv, monkeypatch, backend=None) -> int:
    if backend is not None:
        monkeypatch.setattr(demo, "open_model", lambda args: backend)
    return run_cli(demo.main, [str(a) for a in argv])


# -- sources --------------------------------------------------------------------------------------
def test_parse_source_kinds_and_live_override(tmp_path):
    video = write_frames(tmp_path / "v.mp4", 2)
    assert parse_source("0") == parse_source("0", None) and parse_source("0").kind == "camera"
    assert parse_source("/dev/video2").kind == "v4l2" and parse_source("/dev/video2").live
    assert parse_source("rtsp://cam.local/stream").kind == "url"
    gst = parse_source("nvarguscamerasrc ! nvvidconv ! appsink")
    assert gst.kind == "gstreamer" and gst.live
    assert parse_source(str(video)).kind == "file" and not parse_source(str(video)).live
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source(str(video), live=True).live and not parse_source("0", live=False).live
    with pytest.raises(SourceError, match="source not found"):
        parse_source(str(tmp_path / "missing.mp4"))


def test_make_capture_uses_the_right_opencv_api(monkeypatch):
    calls = []

    class Cap:
        def __init__(self, *a):
            calls.append(a)

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Cap)
    make_capture(parse_source("0"))
    make_capture(parse_source("/dev/video0"))
    make_capture(parse_source("v4l2src ! videoconvert ! appsink"))
    make_capture(parse_source("rtsp://h/s"), timeout_s=2.0)
    assert calls[0] == (0,)
    assert calls[1] == ("/dev/video0", cv2.CAP_V4L2) and calls[2] == ("/dev/video0", cv2.CAP_ANY)
    assert calls[3] == ("v4l2src ! videoconvert ! appsink", cv2.CAP_GSTREAMER)
    assert calls[4] == ("rtsp://h/s", cv2.CAP_FFMPEG,
                        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000])


def test_unopenable_sources_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video" * 10)
    cases = [(tmp_path / "missing.mp4", "source not found"), (bad, "cannot open file source"),
             (tmp_path, "no images in folder")]
    for source, message in cases:
        assert run_cli(demo.main, [str(source), "--model", "x.onnx"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    # the module form, as users run it
    proc = subprocess.run([sys.executable, "-m", "runtime.video_demo", str(tmp_path / "none.mp4"),
                           "--model", "x.onnx"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: source not found")


def test_conflicting_flags_and_missing_display_are_errors(tmp_path, monkeypatch, capsys):
    video = write_frames(tmp_path / "v.mp4", 2)
    assert run_cli(demo.main, [str(video), "--model", "a.onnx", "--checkpoint", "c.pth"]) == 2
    assert "--checkpoint only apply to a PyTorch variant" in capsys.readouterr().err
    assert run_cli(demo.main, [str(video), "--model", "a.onnx", "--alpha", "2"]) == 2
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert run_cli(demo.main, [str(video), "--model", "a.onnx", "--show"]) == 2
        assert "--show needs a display" in capsys.readouterr().err


# -- file sources: every frame, in order, recorded ----------------------------------------------
def test_every_frame_of_the_synthetic_video_is_recorded(drive, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rec" / "out.mp4"
    backend = FakeBackend()
    code = cli([drive, "--model", "fake", "--output", out, "--headless", "--legend"], monkeypatch, backend)
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("summary: 24 frames (24 read, 0 dropped), 0 reconnects") and str(out) in line
    assert count_frames(out) == (24, 128, 256)
    assert backend.calls == 24 * len(tile_grid(128, 256, (64, 128), default_stride((64, 128))))  # 9 tiles
    assert not list(out.parent.glob(".*partial*"))


def test_overlay_uses_the_artifact_palette(tmp_path, monkeypatch):
    video = write_frames(tmp_path / "in.mp4", 5)
    out = tmp_path / "out.avi"
    code = cli([video, "--model", "fake", "--output", out, "--alpha", "1", "--no-hud", "--mode", "resize"],
               monkeypatch, FakeBackend())
    assert code == 0
    cap = cv2.VideoCapture(str(out))
    ok, frame = cap.read()
    cap.release()
    rgb = frame[..., ::-1].astype(int)
    assert ok and rgb.shape == (64, 128, 3)
    assert np.abs(rgb[40, 10] - PALETTE[0]).max() < 40      # dark half -> class 0
    assert np.abs(rgb[40, 110] - PALETTE[2]).max() < 40     # bright half -> class 2


def test_folder_source_in_order(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((64, 128, 3), 40 * i, np.uint8))
    seen = []
    src = demo.open_source(parse_source(str(folder)))
    pipe = Pipeline(src, FakeBackend().__enter__(), Tiler(batch=None),
                    lambda r: seen.append((r.index, int(r.rgb[0, 0, 0]))), live=False)
    stats = pipe.run()
    assert seen == [(i, 40 * i) for i in range(4)] and stats.dropped == 0


@pytest.mark.parametrize("live", [False, True])
def test_parallel_workers_render_in_capture_order(live):
    src = FlakySource(total=60, frames_per_session=60, fail_opens=0, delay=0.002 if live else 0.0)
    src.live = live
    seen = []
    pipe = Pipeline(src, FakeBackend(delay=0.004).__enter__(), Tiler(batch=None),
                    lambda r: seen.append(r.index), live=live, workers=3, queue_size=2)
    stats = pipe.run()
    assert seen == sorted(seen) and len(seen) == stats.written == stats.processed
    assert stats.processed + stats.dropped == stats.read == 60
    assert 0 < stats.busy_s < stats.infer_s            # 3 frames in flight at once: busy < summed time
    if not live:
        assert seen == list(range(60))


def test_max_frames_and_backend_error_still_finalise_recording(tmp_path, monkeypatch, capsys):
    video = write_frames(tmp_path / "in.mp4", 30)
    out = tmp_path / "a.mp4"
    assert cli([video, "--model", "f", "--output", out, "--max-frames", "7"], monkeypatch, FakeBackend()) == 0
    assert count_frames(out)[0] == 7
    out2 = tmp_path / "b.mp4"
    code = cli([video, "--model", "f", "--output", out2, "--queue-size", "1", "--workers", "1"], monkeypatch,
               FakeBackend(nan_after=5))
    assert code == 2 and "non-finite" in capsys.readouterr().err
    assert count_frames(out2)[0] == 5 and not list(tmp_path.glob(".*partial*"))


# -- live sources: newest frame wins, reconnect with backoff ------------------------------------
class FlakySource:
    """Live source: ``frames_per_session`` frames, then a drop; the next ``fail_opens`` opens fail."""

    def __init__(self, total: int, frames_per_session: int, fail_opens: int, delay: float = 0.0) -> None:
        self.live, self.name, self.fps = True, "fake://cam", None
        self.total, self.per, self.fail_opens, self.delay = total, frames_per_session, fail_opens, delay
        self.sent, self.session, self.opens = 0, 0, 0
        self.is_open = True

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise SourceError("cannot open fake://cam")
        self.is_open, self.session = True, 0

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if not self.is_open or self.sent >= self.total or self.session >= self.per:
            return None
        self.sent += 1
        self.session += 1
        return np.full((64, 128, 3), self.sent % 256, np.uint8)

    def close(self) -> None:
        self.is_open = False


def test_stream_drop_is_recovered_with_exponential_backoff():
    messages = []
    src = Reconnecting(FlakySource(total=30, frames_per_session=10, fail_opens=2), attempts=4,
                       delay=0.001, max_delay=0.003, logger=messages.append)
    assert [src.backoff(i) for i in range(4)] == [0.001, 0.002, 0.003, 0.003]
    pipe = Pipeline(src, FakeBackend().__enter__(), Tiler(batch=None), lambda r: None, live=True,
                    max_frames=None)
    t0 = time.perf_counter()
    with pytest.raises(StreamLost):     # after 30 frames the fake stream never comes back
        stats = pipe.run()
        raise pipe.error
    stats = pipe.stats
    assert time.perf_counter() - t0 < 5
    assert stats.reconnects == 2 and stats.read == 30
    assert stats.processed + stats.dropped == stats.read
    waits = [float(m.split("in ")[1].split(" s")[0]) for m in messages if "reconnecting" in m]
    assert waits[:3] == [0.001, 0.002, 0.003]          # 2 failed opens, then success on the 3rd
    assert sum("reconnected" in m for m in messages) == 2


def test_live_source_newest_frame_wins_and_drops_are_counted():
    src = FlakySource(total=300, frames_per_session=300, fail_opens=0, delay=0.0005)
    order = []
    pipe = Pipeline(src, FakeBackend(delay=0.01).__enter__(), Tiler(batch=None),
                    lambda r: order.append(r.index), live=True)
    stats = pipe.run()
    assert stats.read == 300 and stats.dropped > 100
    assert stats.processed + stats.dropped == stats.read and stats.written == stats.processed
    assert order == sorted(order) and order[-1] == 299            # the newest frame made it


def test_lost_live_stream_ends_with_error_and_finalised_recording(tmp_path, monkeypatch, capsys):
    out = tmp_path / "live.mp4"
    monkeypatch.setattr(demo, "open_source", lambda spec, **kw: FlakySource(20, 20, fail_opens=99))
    code = cli(["rtsp://cam/stream", "--model", "f", "--output", out, "--reconnect-attempts", "2",
                "--reconnect-delay", "0.001"], monkeypatch, FakeBackend())
    captured = capsys.readouterr()
    assert code == 2 and "2 reconnect attempts failed" in captured.err
    assert "summary:" in captured.out and count_frames(out)[0] >= 1


# -- SIGINT leaves a playable recording (real CLI, real tiny model) ------------------------------
def test_sigint_leaves_a_playable_recording(tmp_path):
    video = write_frames(tmp_path / "long.mp4", 1500, size=(128, 256))
    out = tmp_path / "sig.mp4"
    proc = subprocess.Popen([sys.executable, "runtime/video_demo.py", str(video), "--model", "tiny_cityscapes",
                             "--output", str(out), "--headless", "--threads", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".sig.partial-*.mp4")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    written = int(re.search(r"summary: (\d+) frames", stdout).group(1))
    assert 0 < written < 1500
    assert count_frames(out) == (written, 128, 256)
    assert not list(tmp_path.glob(".sig.partial-*"))


# -- memory stays flat -------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS read from /proc (Linux only)")
def test_soak_2000_frames_memory_flat(tmp_path, monkeypatch, capsys):
    video = write_frames(tmp_path / "soak.mp4", 2000, size=(64, 128))
    rss: dict[int, float] = {}

    class Probe(demo.Renderer):
        def __call__(self, result):
            keep = super().__call__(result)
            if result.index + 1 in (200, 2000):
                rss[result.index + 1] = _rss_mb()
            return keep

    monkeypatch.setattr(demo, "Renderer", Probe)
    code = cli([video, "--model", "f", "--output", tmp_path / "soak_out.mp4", "--legend"],
               monkeypatch, FakeBackend())
    assert code == 0 and "summary: 2000 frames" in capsys.readouterr().out
    assert rss[2000] - rss[200] < 20, rss


def test_workers_auto_and_tensorrt_limit():
    args = demo.build_parser().parse_args(["0", "--model", "m.engine"])

    class Trt(FakeBackend):
        name = "tensorrt"

    assert demo.inference_workers(args, FakeBackend()) == 2 and demo.inference_workers(args, Trt()) == 1
    args.workers = "3"
    assert demo.inference_workers(args, FakeBackend()) == 3
    with pytest.raises(demo.ToolkitError, match="cannot run calls concurrently"):
        demo.inference_workers(args, Trt())
    args.workers = "0"
    with pytest.raises(demo.ToolkitError, match="bad --workers"):
        demo.inference_workers(args, FakeBackend())


def test_show_window_q_key_stops_and_finalises(tmp_path, monkeypatch, capsys):
    """The --show path with OpenCV's GUI calls faked (this OpenCV build has no highgui)."""
    video = write_frames(tmp_path / "in.mp4", 40)
    shown, keys = [], iter([-1, -1, -1, ord("q")] + [-1] * 100)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda name, img: shown.append(img.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: next(keys))
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)
    out = tmp_path / "shown.mp4"
    assert cli([video, "--model", "f", "--show", "--output", out], monkeypatch, FakeBackend()) == 0
    assert len(shown) == 4 and shown[0] == (64, 128, 3)
    assert count_frames(out)[0] == 4 and "summary: 4 frames" in capsys.readouterr().out


def test_live_flag_on_a_file_drops_stale_frames_and_ends_at_eof(tmp_path, monkeypatch, capsys):
    video = write_frames(tmp_path / "in.mp4", 30)
    assert cli([video, "--model", "f", "--live", "--workers", "1"], monkeypatch, FakeBackend(delay=0.02)) == 0
    m = re.search(r"summary: (\d+) frames \((\d+) read, (\d+) dropped\), 0 reconnects", capsys.readouterr().out)
    written, read, dropped = map(int, m.groups())
    assert read == 30 and dropped > 0 and written + dropped == read


def test_unwritable_output_names_the_output_flag(tmp_path, monkeypatch, capsys):
    video = write_frames(tmp_path / "in.mp4", 2)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = cli([video, "--model", "f", "--output", blocker / "sub" / "o.mp4"], monkeypatch, FakeBackend())
    err = capsys.readouterr().err
    assert code == 2 and "cannot create output directory" in err
    assert "choose a writable --output location" in err and "--out " not in err


def test_partial_recordings_of_killed_runs_are_removed(tmp_path, monkeypatch):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    dead = tmp_path / f".rec.partial-{done.pid}.mp4"
    live = tmp_path / f".rec.partial-{os.getppid()}.mp4"
    other = tmp_path / f".other.partial-{done.pid}.mp4"
    for p in (dead, live, other):
        p.write_bytes(b"half a video")
    video = write_frames(tmp_path / "in.mp4", 3)
    assert cli([video, "--model", "f", "--output", tmp_path / "rec.mp4"], monkeypatch, FakeBackend()) == 0
    assert not dead.exists() and live.exists() and other.exists() and count_frames(tmp_path / "rec.mp4")[0] == 3


def test_hud_shows_the_delivered_rate_when_results_arrive_in_bursts(monkeypatch):
    """Two workers hand over frames in pairs: 1 ms apart, then 1.1 s of nothing (1.82 FPS delivered).
    An average of instantaneous rates read 12-23 FPS here; the HUD must read what the viewer gets."""
    from runtime.video_pipeline import Result, Stats

    drawn = []
    monkeypatch.setattr("runtime.visualize.draw_hud", lambda img, fps, lat, dropped: drawn.append(fps))
    now = [0.0]
    args = demo.build_parser().parse_args(["x.mp4", "--model", "m.onnx"])
    renderer = demo.Renderer(META, args, None, Stats(), clock=lambda: now[0])
    rgb, labels = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int32)
    for pair in range(12):
        for k in range(2):
            now[0] = 1.1 * pair + 0.001 * k
            renderer(Result(index=2 * pair + k, rgb=rgb, labels=labels, t_capture=now[0] - 0.5))
    delivered = 2 / 1.1
    assert all(abs(fps - delivered) / delivered < 0.3 for fps in drawn[4:]), drawn
