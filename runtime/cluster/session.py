"""Connecting to Ray, shipping the toolkit's code to the actors, and sizing actor pools."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from runtime.cluster import ClusterOptions, import_ray
from runtime.errors import ToolkitError

ROOT = Path(__file__).resolve().parents[2]      # the folder holding runtime/ (and models/)
PASSED_ENV = ("OMP_WAIT_POLICY",)               # the driver's settings the actors take over


@contextlib.contextmanager
def ray_session(options: ClusterOptions, packages: Sequence[str] = ("runtime",)) -> Iterator[Any]:
    """The ``ray`` module, connected: to ``options.address``, or a local Ray started in this process
    (shut down on exit); the driver's own ``packages`` travel with the job (:func:`job_env`). A
    connection the caller made already is used as it is (and left open)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    env = job_env(packages, options)
    try:
        if options.address is None:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, runtime_env=env)
        else:
            ray.init(address=options.address, logging_level=logging.WARNING, runtime_env=env)
    except ConnectionError as exc:
        raise ToolkitError(f"cannot connect to the Ray cluster at {options.address}", found=str(exc).splitlines()[0],
                           fix="check the address (`ray status` on the head node), or drop ADDRESS "
                               "for a local Ray") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def job_env(packages: Sequence[str], options: ClusterOptions) -> dict:
    """The job's runtime_env: the driver's own ``packages`` (runtime/, and models/ where the PyTorch
    reference runs) shipped to the workers, so cluster nodes need only the backends' libraries,
    never a copy of the toolkit; actors run exactly the driver's code."""
    env: dict[str, Any] = {}
    if options.ship_code:
        env["py_modules"] = [str(ROOT / p) for p in packages]
    passed = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    if passed:
        env["env_vars"] = passed
    return env


def resources(ray: Any) -> tuple[float, float]:
    """(CPUs, GPUs) of the cluster now."""
    total = ray.cluster_resources()
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))


def split_slots(slots: int, rows: int, reference: int | None, actors: int | None) -> tuple[int, int]:
    """(reference actors, artifact actors) sharing ``slots``: the reference gets 1/(1 + rows) of
    them (every artifact row costs about what the reference row costs), at least one each."""
    ref = reference or max(1, round(slots / (1 + rows)))
    return ref, actors or max(1, slots - ref)


def check_fits(ray: Any, demand: dict[str, float], flags: str) -> None:
    """Refuse a pool the cluster cannot hold (Ray would wait for it forever)."""
    cpus, gpus = resources(ray)
    if demand.get("CPU", 0) > cpus + 1e-9 or demand.get("GPU", 0) > gpus + 1e-9:
        raise ToolkitError(f"the actors need {demand.get('CPU', 0):g} CPUs and {demand.get('GPU', 0):g} GPUs, "
                           f"the Ray cluster has {cpus:g} and {gpus:g}",
                           fix=f"ask for fewer actors or threads ({flags}), or add nodes")
