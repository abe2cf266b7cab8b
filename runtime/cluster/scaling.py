"""Frames/s of the gate's artifact work with 1, 2, ... actors, side by side in one run.

One pool of max(counts) actors is started once; each round times one pass over the frames with
the first n of them, for every n (and, as the baseline, in this process without Ray), the order
reversed every other round so drift on a shared machine hits every setup alike. A pass is what an
artifact actor does in the gate: read the frame and its label, tile, run, score against the ground
truth (no reference: its cost is the same per frame and would only add a second pool).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from runtime.cluster import ClusterOptions
from runtime.errors import ToolkitError


def measure_scaling(data: str, artifact: str, counts: Sequence[int] = (1, 2), rounds: int = 3,
                    limit: int | None = None, options: ClusterOptions = ClusterOptions(),
                    baseline: bool = True, backend: str = "auto",
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time ``rounds`` interleaved passes per setup; returns a JSON-friendly dict with a row per setup."""
    from runtime.backends import backend_for, open_backend
    from runtime.cluster.gate import absolute_dataset, actor_spec
    from runtime.cluster.pool import Pool
    from runtime.cluster.session import check_fits, ray_session
    from runtime.data import open_dataset
    from runtime.sysinfo import describe, machine_info
    from runtime.tiling import Tiler

    dataset = open_dataset(data, limit=limit)
    if dataset[0].label is None:
        raise ToolkitError(f"{data} has no ground-truth labels", fix="pass a labelled split (samples.generate)")
    spec = actor_spec((artifact, backend_for(artifact, backend), {}), options)
    setups = ([("in-process (no Ray)", 0)] if baseline else []) + [(f"Ray, {n} actor(s)", n) for n in counts]
    times: dict[str, list[float]] = {name: [] for name, _ in setups}
    with ray_session(options) as ray:
        check_fits(ray, {"CPU": max(counts) * options.threads}, "--actors, --threads")
        kwargs = {"specs": [spec], "tiler": Tiler(), "dataset": ray.put(absolute_dataset(dataset))}
        with Pool(ray, "artifact", kwargs, max(counts), options.threads, 0, options) as pool, \
                open_backend(spec[0], spec[1], **spec[2]) as here:
            passes = {name: _ray_pass(ray, pool.view(n), len(dataset), options) if n else _local_pass(here, dataset)
                      for name, n in setups}
            passes[setups[-1][0]]()                           # warm-up: file cache, the actors' lazy init
            here(np.zeros(here.input_shape, np.float32))
            for r in range(rounds):
                for name, _ in (setups if r % 2 == 0 else setups[::-1]):
                    start = time.perf_counter()
                    passes[name]()
                    times[name].append(time.perf_counter() - start)
                    log(f"round {r + 1}/{rounds}: {name}: {len(dataset) / times[name][-1]:.2f} frames/s")
            label = pool.headers[0]["label"]
    rows = []
    for name, n in setups:
        rates = [len(dataset) / t for t in times[name]]
        rows.append({"setup": name, "actors": n, "frames": len(dataset), "seconds": times[name],
                     "frames_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)})
    one = next((r["frames_per_s"] for r in rows if r["actors"] == 1), None)
    for r in rows:
        r["speedup_vs_1_actor"] = r["frames_per_s"] / one if one else None
    return {"artifact": label, "data": str(data), "frames": len(dataset), "rounds": rounds,
            "threads_per_actor": options.threads, "address": options.address or "local",
            "machine": describe(), "machine_info": machine_info(), "rows": rows}


def _ray_pass(ray: Any, pool: Any, frames: int, options: ClusterOptions) -> Callable[[], None]:
    from runtime.cluster.pool import run_jobs

    def submit(index: int, actors: dict) -> list:
        return [actors["artifact"].score.options(num_returns=2).remote(index, None)[0]]

    return lambda: run_jobs(ray, {"artifact": pool}, range(frames), int, submit, lambda job, values: None, options)


def _local_pass(backend: Any, dataset: Any) -> Callable[[], None]:
    from runtime.evaluation import score_frame
    from runtime.tiling import Tiler

    tiler = Tiler()

    def run() -> None:
        for i in range(len(dataset)):
            score_frame(backend, tiler, dataset[i], None, dataset.num_classes, dataset.ignore_index)

    return run
