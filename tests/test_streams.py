"""Real network streams, both served on 127.0.0.1 only: the synthetic drive as MJPEG over HTTP (Debian's
ffmpeg) and as RTSP, MJPEG over RTP (tests/rtsp_server.py on GStreamer's RTSP server, run with Debian's
/usr/bin/python3 and python3-gi, since ffmpeg 5.1 cannot serve RTSP). For each, the demo records the
stream, survives a server kill + restart on the same port mid-stream (reconnects, counts the drops, keeps
a playable recording) and ends by itself once the stream is gone for good. Each test is skipped with the
reason when its server cannot run (no ffmpeg; no python3-gi / GstRtspServer) or OpenCV has no FFMPEG
backend; no server or demo process outlives a test."""
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
SYSTEM_PYTHON = "/usr/bin/python3"          # Debian's, with python3-gi: GStreamer's RTSP server is not on PyPI
HAVE_CV_FFMPEG = "FFMPEG:                      YES" in cv2.getBuildInformation()

pytestmark = [
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp to see the server listen"),
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


def rtsp_server_problem() -> str | None:
    """Why Debian's GStreamer RTSP server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the RTSP server runs on Debian's python3-gi)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')\n"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None)\n"
             "missing = [e for e in ('appsrc', 'rtpjpegpay', 'rtpbin', 'udpsink') if not Gst.ElementFactory.find(e)]\n"
             "assert not missing, 'no GStreamer element ' + ', '.join(missing)")
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"{SYSTEM_PYTHON} took over 30 s to import gi"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (f"{SYSTEM_PYTHON} cannot run GStreamer's RTSP server ({last}); apt-get install python3-gi "
                "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good (.ci/run does)")
    return None


def serve_rtsp(frames: str, size_wh: tuple[int, int], port: int) -> subprocess.Popen:
    """tests/rtsp_server.py as an RTSP camera: the JPEG frames looped in real time as MJPEG over RTP."""
    cmd = [SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), "--frames", frames, "--size",
           f"{size_wh[0]}x{size_wh[1]}", "--port", str(port), "--fps", "10", "--max-seconds", "90"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(lambda: listening(port) or proc.poll() is not None, 15) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the RTSP server did not start listening: {' '.join(cmd)}")
    return proc


def run_demo_through_outages(tmp_path: Path, url: str, start_server) -> None:
    """The demo records ``url``; the server is killed mid-stream, restarted on the same port, then
    killed for good: the demo reconnects, counts the drops, ends by itself (exit 2 after 3 bounded
    reconnect attempts) and leaves a playable recording with every written frame. No process is left."""
    out = tmp_path / "live.mp4"
    log = tmp_path / "demo.err"
    server = start_server()
    cmd = [sys.executable, "-m", "runtime.video_demo", url, "--model",
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
            server = start_server()                                 # ... and comes back
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


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg; .ci/run does)")
def test_mjpeg_stream_server_killed_and_restarted_then_gone(tmp_path):
    from samples.video import write_video

    video = write_video(tmp_path / "drive.mp4", n_frames=30, fps=10.0, size=(128, 256))
    port = free_port()
    run_demo_through_outages(tmp_path, f"http://127.0.0.1:{port}/cam.mjpg", lambda: serve_mjpeg(video, port))


def test_rtsp_stream_server_killed_and_restarted_then_gone(tmp_path):
    problem = rtsp_server_problem()
    if problem:
        pytest.skip(problem)
    from samples.video import write_video

    video = write_video(tmp_path / "drive.mp4", n_frames=30, fps=10.0, size=(128, 256))
    cap = cv2.VideoCapture(str(video))                              # the drive as JPEG files for the server
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert cv2.imwrite(str(tmp_path / f"frame_{n:05d}.jpg"), frame)
        n += 1
    cap.release()
    assert n == 30
    frames = str(tmp_path / "frame_%05d.jpg")
    port = free_port()
    run_demo_through_outages(tmp_path, f"rtsp://127.0.0.1:{port}/cam", lambda: serve_rtsp(frames, (256, 128), port))
