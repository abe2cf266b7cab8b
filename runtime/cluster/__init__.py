"""The accuracy gate and batch segmentation on a Ray cluster (optional extra: ``pip install -e ".[ray]"``).

Frames are sharded over Ray actors, each holding open backends (runtime/cluster/worker.py); the
driver keeps every frame's result keyed by its index, so a frame re-run after an actor died
replaces its result and is never counted twice (pool.py), and merges them with the gate's own
merge (runtime.evaluation.RowScores) in frame order: the report equals the one-process report.
gate.py runs the gate, segment.py batch segmentation, scaling.py the 1-vs-N actor measurement.
Nothing here imports Ray at module level; see docs/ray.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runtime.errors import ToolkitError, require

INSTALL = 'pip install -e ".[ray]"'
ADDRESS = re.compile(r"^(auto|ray://\S+|[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+)$")


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    return require("ray", "--ray needs Ray, which is not installed", fix=INSTALL)


def check_address(text: str | None) -> str | None:
    """``--ray``'s value as ``ray.init(address=...)`` takes it (None: start a local Ray)."""
    if text in (None, "local"):
        return None
    if not ADDRESS.match(str(text)):
        raise ToolkitError(f"--ray takes a Ray cluster address, not {text!r}",
                           expected="auto, HOST:6379 or ray://HOST:10001 (nothing: a local Ray)",
                           fix="put --ray after the positional inputs, or write --ray=ADDRESS")
    return str(text)


@dataclass(frozen=True)
class ClusterOptions:
    """How to use the cluster. ``actors``: actors holding the artifacts (segment: the model);
    ``reference_actors``: actors holding the PyTorch reference (gate only); None: fill the cluster
    (docs/ray.md). ``threads``: CPU threads, and Ray CPUs, per actor."""

    address: str | None = None
    actors: int | None = None
    reference_actors: int | None = None
    threads: int = 1
    gpus_per_actor: float = 0.0
    max_inflight: int = 2            # frames queued per actor: one running, one waiting
    max_retries: int = 3             # attempts per frame after actor deaths
    ship_code: bool = True           # send runtime/ (and models/ to reference actors) with the actors
    start_timeout_s: float = 600.0   # actors not started by then: the cluster lacks the resources
    crash_once: tuple | None = None  # tests: (frame, marker file[, pool]): an actor dies on that frame, once


__all__ = ["ClusterOptions", "INSTALL", "check_address", "import_ray"]
