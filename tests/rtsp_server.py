"""A tiny RTSP camera for tests/test_streams.py: JPEG frames looped in real time as MJPEG over RTP.

Runs with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base
and -good; .ci/run installs them), not the project's Python: GStreamer's RTSP server has no PyPI package.

    /usr/bin/python3 tests/rtsp_server.py --frames 'DIR/frame_%05d.jpg' --size 256x128 --port 8554 --fps 10

serves rtsp://127.0.0.1:8554/cam, bound to 127.0.0.1 only: RTP goes interleaved in the RTSP TCP
connection and no UDP port is opened (a UDP-only client is refused with 461; OpenCV's FFMPEG backend,
as the demo opens it, ends up on TCP). The frames are JPEG files numbered from 0, read once and pushed in a loop, so the server
needs no decoder. It runs until SIGTERM / SIGINT, or until --max-seconds have passed (a safety bound
so that a test that dies cannot leave it running for ever), and prints "listening" once it serves.
"""
from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def load_frames(pattern: str) -> list[bytes]:
    """The JPEG files pattern % 0, pattern % 1, ... up to the first missing one."""
    frames = []
    while True:
        try:
            with open(pattern % len(frames), "rb") as f:
                frames.append(f.read())
        except FileNotFoundError:
            return frames


class LoopedJpegFactory(GstRtspServer.RTSPMediaFactory):
    """One appsrc per media, fed the frames in a loop with timestamps n / fps; the server's sinks
    sync on them, so the stream runs in real time (as GStreamer's test-appsrc example does)."""

    def __init__(self, frames: list[bytes], width: int, height: int, fps: int) -> None:
        super().__init__()
        self.frames, self.fps = frames, fps
        caps = f"image/jpeg,width={width},height={height},framerate={fps}/1"
        self.set_launch(f'( appsrc name=src format=time caps="{caps}" ! rtpjpegpay name=pay0 pt=26 )')
        self.set_shared(True)                                  # one pipeline for all clients, like a camera
        self.set_protocols(GstRtsp.RTSPLowerTrans.TCP)         # RTP interleaved in the 127.0.0.1 connection
        self.connect("media-configure", self._configure)

    def _configure(self, _factory, media) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        src.connect("need-data", self._need_data, {"n": 0})

    def _need_data(self, src, _length, state: dict) -> None:
        n = state["n"]
        buf = Gst.Buffer.new_wrapped(self.frames[n % len(self.frames)])
        buf.pts = n * Gst.SECOND // self.fps
        buf.duration = Gst.SECOND // self.fps
        state["n"] = n + 1
        src.emit("push-buffer", buf)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), both >= 1."""
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 256x128, found {text!r}")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, help="printf-style JPEG file pattern, e.g. dir/frame_%%05d.jpg")
    ap.add_argument("--size", type=parse_size, required=True, help="frame size WIDTHxHEIGHT of the JPEGs")
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    ap.add_argument("--path", default="/cam", help="mount path (default /cam)")
    ap.add_argument("--fps", type=int, default=10, help="frame rate (default 10)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="exit after this long (default 120)")
    args = ap.parse_args(argv)
    if args.fps < 1 or not 0 < args.port < 65536 or args.max_seconds <= 0:
        print("error: --fps must be >= 1, --port in 1..65535, --max-seconds > 0", file=sys.stderr)
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    frames = load_frames(args.frames)
    if not frames:
        print(f"error: no JPEG frames at {args.frames % 0}", file=sys.stderr)
        return 2
    factory = LoopedJpegFactory(frames, *args.size, args.fps)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    GLib.timeout_add(int(args.max_seconds * 1000), loop.quit)
    print(f"listening on rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
