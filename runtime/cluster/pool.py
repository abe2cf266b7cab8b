"""Actor pools and the driver's work queue: frames keyed by index, re-run when an actor dies.

Each frame is one job; the driver hands it to the least loaded actor of each pool it needs (at most
``max_inflight`` jobs per actor) and keeps its result under the frame's index. When a job fails
because an actor, its process or its node died, the dead actors are replaced and the job goes
back into the queue; the failed attempt returned nothing, so nothing is counted twice. An error
raised by our own code in an actor (a RayTaskError) is not retried: it is raised here, a
ToolkitError as itself. On any exit (Ctrl-C included) the pool's actors are killed.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from runtime.cluster import ClusterOptions
from runtime.errors import ToolkitError


@dataclass(eq=False)
class Slot:
    """One actor and the jobs it holds."""

    actor: Any
    load: int = 0
    dead: bool = False


class Pool:
    """``size`` actors of runtime.cluster.worker.FrameWorker built with ``kwargs``; a context manager
    (actors started on enter, killed on exit)."""

    def __init__(self, ray: Any, name: str, kwargs: dict, size: int, num_cpus: float, num_gpus: float,
                 options: ClusterOptions) -> None:
        from runtime.cluster.worker import FrameWorker

        self.ray, self.name, self.kwargs, self.size = ray, name, kwargs, size
        self.remote_options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0}
        self.cls = ray.remote(FrameWorker)
        self.options = options
        self.slots: list[Slot] = []
        self.headers: list[dict] = []
        self.processes: list[tuple[str, int]] = []     # (host, pid) of every actor started
        self.replaced = 0

    def __enter__(self) -> Pool:
        started = [self._spawn() for _ in range(self.size)]
        self.slots = [Slot(actor) for actor, _ in started]
        try:
            self.headers = self._wait_open(started)[0]
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def view(self, n: int) -> Pool:
        """The same pool restricted to its first ``n`` actors (the scaling benchmark)."""
        other = object.__new__(Pool)
        other.__dict__.update(self.__dict__)
        other.slots = self.slots[:n]
        return other

    def _spawn(self) -> tuple[Any, Any]:
        actor = self.cls.options(**self.remote_options).remote(**self.kwargs)
        return actor, actor.open.remote()

    def _wait_open(self, started: list[tuple[Any, Any]]) -> list[list[dict]]:
        refs = [ref for _, ref in started]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=self.options.start_timeout_s)
        if len(ready) < len(refs):
            raise ToolkitError(f"{len(refs) - len(ready)} of {len(refs)} {self.name} actors did not start within "
                               f"{self.options.start_timeout_s:g} s: the cluster lacks free resources for them",
                               fix="ask for fewer actors (--ray-actors), or check `ray status`")
        headers = [unwrap(self.ray, lambda r=r: self.ray.get(r)) for r in refs]
        self.processes += [(h[0]["host"], h[0]["pid"]) for h in headers if h]
        return headers

    def least_loaded(self) -> Slot | None:
        alive = [s for s in self.slots if not s.dead and s.load < self.options.max_inflight]
        return min(alive, key=lambda s: s.load) if alive else None

    def replace(self, slot: Slot) -> bool:
        """Replace ``slot``'s actor if it died (the slot is kept, with the new actor); False if alive."""
        if slot.dead:
            return True
        try:
            self.ray.get(slot.actor.ping.remote(), timeout=60)
            return False
        except self.ray.exceptions.RayError:
            pass
        slot.dead = True
        actor, ref = self._spawn()
        self.slots[self.slots.index(slot)] = Slot(actor)
        self._wait_open([(actor, ref)])
        self.replaced += 1
        return True

    def kill(self) -> None:
        """Kill every actor (their running frames stop now) and wait until they are gone: Ray's
        word, and on this host their processes too, so what they leave is seen as a dead writer's."""
        import socket

        from runtime.fileio import pid_alive

        for s in self.slots:
            self.ray.kill(s.actor, no_restart=True)
        for s in self.slots:
            try:
                self.ray.get(s.actor.ping.remote(), timeout=10)
            except Exception:    # noqa: BLE001 - dead is what is wanted; any failure to answer says so
                pass
        self.slots = []
        here = socket.gethostname()
        deadline = time.monotonic() + 10.0
        while any(host == here and pid_alive(pid) for host, pid in self.processes) and time.monotonic() < deadline:
            time.sleep(0.05)


def unwrap(ray: Any, call: Callable[[], Any]) -> Any:
    """``call()``, with a ToolkitError raised in an actor re-raised here as itself."""
    try:
        return call()
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ToolkitError):
            raise cause from None
        raise


@dataclass
class _Entry:
    job: Any
    slots: list[Slot]
    refs: list[Any]
    attempt: int


@dataclass
class RunStats:
    """Per-run facts for reports and tests: attempts per frame, frames re-run, actors replaced."""

    attempts: dict = field(default_factory=lambda: collections.Counter())
    retried: list = field(default_factory=list)
    seconds: float = 0.0


def run_jobs(ray: Any, pools: dict[str, Pool], jobs: Iterable[Any], key: Callable[[Any], int],
             submit: Callable[[Any, dict[str, Any]], list], on_done: Callable[[Any, list], None],
             options: ClusterOptions) -> RunStats:
    """Run every job: ``submit(job, {pool name: actor})`` returns its object refs (the last one
    ready means all are), ``on_done(job, values)`` takes its results. Jobs come from ``jobs``
    lazily (video frames are decoded only as actors free up)."""
    stats, start = RunStats(), time.perf_counter()
    source, retry = iter(jobs), collections.deque()
    pending: dict[Any, _Entry] = {}
    exhausted = False
    while True:
        while retry or not exhausted:
            chosen = {name: pool.least_loaded() for name, pool in pools.items()}
            if any(s is None for s in chosen.values()):
                break
            if retry:
                job, attempt = retry.popleft()
            else:
                job = next(source, None)
                if job is None:
                    exhausted = True
                    break
                attempt = 1
            refs = submit(job, {name: s.actor for name, s in chosen.items()})
            pending[refs[-1]] = _Entry(job, list(chosen.values()), refs, attempt)
            stats.attempts[key(job)] += 1
            for s in chosen.values():
                s.load += 1
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1)
        entry = pending.pop(done[0])
        for s in entry.slots:
            s.load -= 1
        try:
            values = unwrap(ray, lambda: ray.get(entry.refs))
        except ray.exceptions.RayTaskError:
            raise
        except ray.exceptions.RayError as exc:      # an actor, its worker process or its node died
            if entry.attempt > options.max_retries:
                raise ToolkitError(f"frame {key(entry.job)} failed {entry.attempt} times: actors keep dying",
                                   found=str(exc).splitlines()[0], fix="check the nodes' logs (`ray logs`)") from None
            for name, pool in pools.items():
                for s in entry.slots:
                    if s in pool.slots:
                        pool.replace(s)
            retry.append((entry.job, entry.attempt + 1))
            stats.retried.append(key(entry.job))
            continue
        on_done(entry.job, values)
    stats.seconds = time.perf_counter() - start
    return stats
