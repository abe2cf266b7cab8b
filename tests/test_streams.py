"""A real network stream: Debian's ffmpeg serves the synthetic drive as MJPEG over HTTP (what IP
cameras send) on 127.0.0.1; the demo records it, survives a server kill + restart mid-stream, and
ends by itself once the stream is gone for good. Skipped with the reason without ffmpeg or without
OpenCV's FFMPEG backend. (RTSP needs an RTSP server, which Debian's ffmpeg 5.1 does not provide for
serving; the demo opens rtsp:// URLs through the same OpenCV FFMPEG path.)"""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
FFMPEG = shutil.which("ffmpeg")
HAVE_CV_FFMPEG = "FFMPEG:                      YES" in cv2.getBuildInformation()

pytestmark = [
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp to see the server listen"),
    pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg; .ci/run does)"),
    pytest.mark.skipif(not HAVE_CV_FFMPEG, reason="this OpenCV build has no FFMPEG backend for network streams"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_mjpeg(video: Path, port: int) -> subprocess.Popen:
    """ffmpeg as an IP camera: the video looped in real time as multipart JPEG over HTTP."""
    cmd = [FFMPEG, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video), "-an",
           "-c:v", "mjpeg", "-q:v", "6", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/cam.mjpg"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(lambda: listening(port), 10):     # no probe connection: -listen 1 serves one client
        proc.kill()
        raise RuntimeError("ffmpeg did not start listening")
    return proc


def listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port (from /proc/net/tcp, without connecting to it)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(r.split()[1] == f"0100007F:{port:04X}" and r.split()[3] == "0A" for r in rows)


def wait_for(condition, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_mjpeg_stream_server_killed_and_restarted_then_gone(tmp_path):
    from samples.video import write_video

    video = write_video(tmp_path / "drive.mp4", n_frames=30, fps=10.0, size=(128, 256))
    port = free_port()
    out = tmp_path / "live.mp4"
    log = tmp_path / "demo.err"
    server = serve_mjpeg(video, port)
    cmd = [sys.executable, "-m", "runtime.video_demo", f"http://127.0.0.1:{port}/cam.mjpg", "--model",
           "tiny_cityscapes", "--mode", "resize", "--threads", "1", "--headless", "--output", str(out),
           "--output-fps", "10", "--timeout", "2", "--reconnect-attempts", "3", "--reconnect-delay", "0.5",
           "--reconnect-max-delay", "1"]
    with open(log, "w") as err:
        demo = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert wait_for(lambda: any(tmp_path.glob(".live.partial-*.mp4")) or demo.poll() is not None, 60)
            assert demo.poll() is None, log.read_text()
            time.sleep(2.0)                                         # recording from the first session
            server.send_signal(signal.SIGKILL)                      # the camera dies mid-stream ...
            server.wait()
            assert wait_for(lambda: "reconnecting" in log.read_text(), 20), log.read_text()
            server = serve_mjpeg(video, port)                       # ... and comes back
            assert wait_for(lambda: "reconnected" in log.read_text(), 20), log.read_text()
            time.sleep(2.0)
            server.send_signal(signal.SIGKILL)                      # now gone for good
            server.wait()
            stdout, _ = demo.communicate(timeout=40)                # ends by itself, bounded
        finally:
            for p in (server, demo):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    stderr = log.read_text()
    assert demo.returncode == 2 and "3 reconnect attempts failed" in stderr, stderr
    m = re.search(r"summary: (\d+) frames \((\d+) read, (\d+) dropped\), (\d+) reconnects", stdout)
    assert m, stdout
    written, read, dropped, reconnects = map(int, m.groups())
    assert reconnects >= 1 and written > 0 and written + dropped == read
    cap = cv2.VideoCapture(str(out))                               # the recording is playable
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == written and not list(tmp_path.glob(".live.partial-*"))
