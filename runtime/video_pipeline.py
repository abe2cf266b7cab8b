"""The threaded demo pipeline: capture -> inference -> render/record, with bounded queues.

* capture thread: reads the source. Live sources: a 1-slot queue where the newest frame wins
  (the stale frame is dropped and counted). Files / folders: blocking puts, every frame in order.
* inference thread(s): ``tiler.labels(backend, frame)``; with ``workers`` > 1 several frames are
  segmented at once (their results are put back in order before rendering).
* the calling thread renders (overlay, legend, HUD), records and shows the window; OpenCV's
  highgui must run there, and so must the signal handling.

Statistics are running sums (no per-frame lists), so memory stays flat over any run length.
A ``stop`` event ends everything at once (q / ESC, SIGINT). A source failure (a live stream lost
for good) ends the stream like its end: the frames already read are still segmented and rendered.
An inference error stops at once. Either is kept in ``error`` for the caller to raise after the
recording has been finalised.
"""
from __future__ import annotations

import copy
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_END = object()


@dataclass
class Stats:
    """Counters and time sums of one run (each field is written by one thread only)."""

    read: int = 0            # frames delivered by the source
    dropped: int = 0         # live: stale frames replaced by a newer one before inference
    processed: int = 0       # frames segmented
    written: int = 0         # frames rendered (recorded / shown)
    reconnects: int = 0
    infer_s: float = 0.0     # sum of tiler.labels() time (preprocess + backend + stitch)
    busy_s: float = 0.0      # wall time with at least one frame in inference (= infer_s with 1 worker)
    backend_s: float = 0.0   # sum of pure backend time (Tiler.last_timing["infer"])
    latency_s: float = 0.0   # sum of capture -> rendered latency
    start: float = field(default_factory=time.perf_counter)
    end: float = 0.0

    @property
    def wall_s(self) -> float:
        return (self.end or time.perf_counter()) - self.start

    @property
    def fps(self) -> float:
        return self.written / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def infer_fps(self) -> float:
        """Inference-stage throughput: frames per second of wall time the stage was busy."""
        return self.processed / self.busy_s if self.busy_s > 0 else 0.0

    @property
    def mean_infer_ms(self) -> float:
        return 1000.0 * self.infer_s / self.processed if self.processed else 0.0

    @property
    def backend_fps(self) -> float:
        return self.processed / self.backend_s if self.backend_s > 0 else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return 1000.0 * self.latency_s / self.written if self.written else 0.0

    def summary(self) -> str:
        return (f"summary: {self.written} frames ({self.read} read, {self.dropped} dropped), "
                f"{self.reconnects} reconnects, {self.fps:.1f} FPS end-to-end, "
                f"{self.infer_fps:.1f} FPS inference ({self.mean_infer_ms:.0f} ms/frame), "
                f"mean latency {self.mean_latency_ms:.0f} ms, {self.wall_s:.1f} s")

    def to_dict(self) -> dict[str, float]:
        keys = ("read", "dropped", "processed", "written", "reconnects", "infer_s", "busy_s", "backend_s",
                "latency_s")
        d: dict[str, float] = {k: getattr(self, k) for k in keys}
        d.update(wall_s=self.wall_s, fps=self.fps, infer_fps=self.infer_fps, backend_fps=self.backend_fps,
                 mean_infer_ms=self.mean_infer_ms, mean_latency_ms=self.mean_latency_ms)
        return d


class RateMeter:
    """Frames per second actually delivered: frames over the last ``window_s`` seconds of wall time.

    With several inference workers results arrive in bursts (two frames within a millisecond, then
    a long gap); an average of instantaneous rates (1 / gap) is then many times the real rate. This
    counts frames over elapsed time, as the end-to-end figure of :class:`Stats` does.
    """

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = float(window_s)
        self._times: deque[float] = deque()

    def tick(self, now: float) -> float:
        """Record one delivered frame at ``now`` (seconds); returns the current rate."""
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[1] >= self.window_s:
            self._times.popleft()        # keep one frame at or before the window start
        return self.fps

    @property
    def fps(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass
class Result:
    """One segmented frame travelling from the inference thread to the renderer."""

    index: int
    rgb: np.ndarray
    labels: np.ndarray
    t_capture: float
    seq: int = 0             # processing order (capture order of the frames not dropped)


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _put_latest(q: queue.Queue, item: Any) -> int:
    """Non-blocking put that replaces queued items; returns how many were dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass


class Pipeline:
    """Run ``source`` through ``backend`` with ``tiler``; ``render(result)`` is called per frame.

    ``render`` runs in the calling thread, always in capture order, and may return False to stop
    (q / ESC). ``idle()`` is called while waiting (window event pumping) and may return False too.
    ``workers`` > 1 runs that many inference threads, each with its own copy of the tiler, on one
    backend: tiling/stitching of one frame overlaps the backend call of the next. Only for backends
    whose calls may run concurrently (ONNX Runtime sessions, PyTorch modules; not a TensorRT
    execution context). Frames in flight are bounded by ``workers + queue_size``.
    """

    def __init__(self, source: Any, backend: Any, tiler: Any, render: Callable[[Result], bool | None],
                 live: bool, max_frames: int | None = None, queue_size: int = 4,
                 stop: threading.Event | None = None, idle: Callable[[], bool | None] | None = None,
                 workers: int = 1) -> None:
        self.source, self.backend, self.tiler = source, backend, tiler
        self.render, self.idle = render, idle
        self.live = bool(live)
        self.max_frames = max_frames
        self.workers = max(1, int(workers))
        self.stop = stop or threading.Event()
        self.stats = Stats()
        self.error: BaseException | None = None
        self._frames: queue.Queue = queue.Queue(maxsize=1 if self.live else max(1, queue_size))
        self._results: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._slots = threading.Semaphore(self.workers + max(1, queue_size))
        self._take_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._seq = 0
        self._active = self.workers
        self.source_busy = False     # True if the capture thread is still stuck in a read
        self._in_infer = 0
        self._busy_since = 0.0

    # -- worker threads ------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop.set()

    def _capture(self) -> None:
        stats, index = self.stats, 0
        try:
            while not self.stop.is_set():
                if not self.live and self.max_frames is not None and index >= self.max_frames:
                    break
                frame = self.source.read()
                if frame is None:
                    break
                item = (index, frame, time.perf_counter())
                index += 1
                stats.read += 1
                if self.live:
                    stats.dropped += _put_latest(self._frames, item)
                elif not _put(self._frames, item, self.stop):
                    break
        except BaseException as exc:  # re-raised in the caller once the frames read are drained
            if self.error is None:
                self.error = exc
        finally:
            stats.reconnects = int(getattr(self.source, "reconnects", 0))
            _put(self._frames, _END, self.stop)

    def _take(self) -> Any:
        """Next frame for a worker as ``(seq, item)``; None at the end (or on stop)."""
        while not self.stop.is_set():
            if not self._slots.acquire(timeout=0.05):
                continue
            with self._take_lock:
                if self.max_frames is not None and self._seq >= self.max_frames:
                    self._slots.release()
                    return None
                item = self._get(self._frames)
                if item is _END:
                    self._frames.put_nowait(_END)   # let the other workers see it too
                if item is None or item is _END:
                    self._slots.release()
                    if item is _END:
                        return None
                    continue
                self._seq += 1
                return self._seq - 1, item
        return None

    def _infer(self) -> None:
        tiler = copy.copy(self.tiler)
        stats = self.stats
        try:
            while (job := self._take()) is not None:
                seq, (index, frame, t_cap) = job
                t0 = self._busy(+1)
                labels = tiler.labels(self.backend, frame)
                dt = self._busy(-1) - t0
                with self._stats_lock:
                    stats.infer_s += dt
                    stats.backend_s += float(getattr(tiler, "last_timing", {}).get("infer", 0.0))
                    stats.processed += 1
                if not _put(self._results, Result(index, frame, labels, t_cap, seq), self.stop):
                    break
        except BaseException as exc:  # re-raised in the caller
            self._fail(exc)
        finally:
            with self._stats_lock:
                self._active -= 1
                last = self._active == 0
            if last:
                _put(self._results, _END, self.stop)

    def _busy(self, delta: int) -> float:
        """Count frames in inference; accumulate the wall time during which any is."""
        with self._stats_lock:
            now = time.perf_counter()
            if delta > 0 and self._in_infer == 0:
                self._busy_since = now
            self._in_infer += delta
            if delta < 0 and self._in_infer == 0:
                self.stats.busy_s += now - self._busy_since
        return now

    @staticmethod
    def _get(q: queue.Queue, timeout: float = 0.05) -> Any:
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- the calling thread --------------------------------------------------------------------
    def run(self) -> Stats:
        """Run to the end of the source, ``max_frames`` or ``stop``; returns the statistics."""
        capture = threading.Thread(target=self._capture, name="capture", daemon=True)
        workers = [threading.Thread(target=self._infer, name=f"inference-{i}", daemon=True)
                   for i in range(self.workers)]
        self.stats.start = time.perf_counter()
        for t in [capture, *workers]:
            t.start()
        try:
            self._render_loop()
        finally:
            self.stop.set()
            for t in workers:
                t.join()                    # the backend must be idle before it is closed
            capture.join(timeout=5.0)       # a blocked camera read may outlive us (daemon)
            self.source_busy = capture.is_alive()
            self.stats.end = time.perf_counter()
        return self.stats

    def _render_loop(self) -> None:
        """Render results in capture order (workers may finish out of order)."""
        stats, pending, next_seq = self.stats, {}, 0
        while True:
            item = self._get(self._results)
            if item is None:
                if self.stop.is_set() or (self.idle is not None and self.idle() is False):
                    return
                continue
            if item is _END:
                return
            pending[item.seq] = item
            while next_seq in pending:
                result = pending.pop(next_seq)
                next_seq += 1
                keep_going = self.render(result)
                self._slots.release()
                stats.written += 1
                stats.latency_s += time.perf_counter() - result.t_capture
                if keep_going is False:
                    return
