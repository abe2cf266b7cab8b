"""The accuracy gate on a Ray cluster: ``evaluate(..., executor=ray_executor(options))``.

Two pools of actors: reference actors hold the PyTorch reference (they need torch), artifact
actors hold one backend of every artifact row (they need the runtime and their backends only).
Per frame, a reference actor returns the reference's scores and label map, and an artifact actor
reads the same frame, runs every artifact on it and scores them against the ground truth and that
map (the label map travels through Ray's object store; the driver never sees it). The driver keeps
each frame's scores under its index and adds them up in frame order with the gate's own
:class:`runtime.evaluation.RowScores`: integer confusion matrices and agreement counts, so every
figure equals the one-process run's.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable

from runtime.cluster import ClusterOptions
from runtime.evaluation import GatePlan, GateRun, RowScores, check_artifact

THREADED = ("onnxruntime", "openvino", "torch")     # backends with a threads option


def ray_executor(options: ClusterOptions) -> Callable[[GatePlan], GateRun]:
    """The gate's executor for ``runtime.evaluation.evaluate(executor=...)``."""
    return lambda plan: run_gate(plan, options)


def actor_spec(spec: tuple[str, str, dict], options: ClusterOptions) -> tuple[str, str, dict]:
    """A row spec as an actor opens it: local paths absolute, threads = the actor's CPUs."""
    artifact, kind, opts = spec
    opts = dict(opts)
    if kind in THREADED:
        opts["threads"] = opts.get("threads") or options.threads
    if opts.get("checkpoint") and Path(str(opts["checkpoint"])).exists():
        opts["checkpoint"] = str(Path(str(opts["checkpoint"])).resolve())
    return (str(Path(artifact).resolve()) if Path(artifact).exists() else artifact), kind, opts


def absolute_dataset(dataset: Any) -> Any:
    """A copy of ``dataset`` with absolute paths (actors do not share the driver's directory)."""
    from runtime.data import Item

    ds = copy.copy(dataset)
    ds.root = Path(dataset.root).resolve()
    ds.items = [Item(Path(it.image).resolve(), Path(it.label).resolve() if it.label else None, it.name)
                for it in dataset.items]
    return ds


def run_gate(plan: GatePlan, options: ClusterOptions) -> GateRun:
    """Run ``plan`` on the cluster; returns the rows as runtime.evaluation.run_in_process does."""
    from tqdm import tqdm

    from runtime.cluster.pool import run_jobs
    from runtime.cluster.session import check_fits, ray_session

    rows = len(plan.specs)
    ref_gpu = str(plan.reference_spec[2].get("device") or "cpu").startswith("cuda")
    with ray_session(options, ("runtime", "models")) as ray:
        n_ref, n_art = _actor_counts(ray, options, rows, ref_gpu)
        g, t = options.gpus_per_actor, options.threads
        check_fits(ray, {"CPU": (n_ref + (n_art if rows else 0)) * t,
                         "GPU": (n_ref if ref_gpu else 0) * g + (n_art if rows else 0) * g},
                   "--ray-actors, --ray-reference-actors, --threads")
        ref_pool, art_pool = _pools(ray, plan, options, n_ref, n_art, ref_gpu)
        results: dict[int, tuple[dict, dict | None]] = {}
        with ref_pool, (art_pool or contextlib.nullcontext()):
            ref_header = ref_pool.headers[0]
            headers = art_pool.headers if art_pool else []
            notes = [n for h in headers for n in check_artifact(h["meta"], ref_header["meta"], h["label"])]
            pools = {"reference": ref_pool, **({"artifact": art_pool} if art_pool else {})}
            bar = tqdm(total=len(plan.dataset), desc=f"gate on Ray ({n_ref}+{n_art if rows else 0} actors)",
                       unit="img", disable=None, leave=False)

            def submit(index: int, actors: dict) -> list:
                ref_result, labels = actors["reference"].score.options(num_returns=2).remote(index, None, bool(rows))
                if not rows:
                    return [ref_result]
                return [ref_result, actors["artifact"].score.options(num_returns=2).remote(index, labels)[0]]

            def on_done(index: int, values: list) -> None:
                results[index] = (values[0], values[1] if rows else None)
                bar.update(1)

            stats = run_jobs(ray, pools, range(len(plan.dataset)), int, submit, on_done, options)
            bar.close()
            replaced = ref_pool.replaced + (art_pool.replaced if art_pool else 0)
    return _merge(plan, results, ref_header, headers, notes, {
        "cluster": {"address": options.address or "local", "reference_actors": n_ref,
                    "artifact_actors": n_art if rows else 0, "threads_per_actor": t, "gpus_per_actor": g,
                    "frames_retried": sorted(stats.retried), "actors_replaced": replaced,
                    "seconds": stats.seconds}})


def _pools(ray: Any, plan: GatePlan, options: ClusterOptions, n_ref: int, n_art: int, ref_gpu: bool) -> tuple:
    """The reference pool and the artifact pool (None without artifact rows), not started yet."""
    from runtime.cluster.pool import Pool

    g, t = options.gpus_per_actor, options.threads
    save = ({"dir": str(Path(plan.save_dir).resolve()), "dataset_name": plan.dataset_name}
            if plan.save_dir else None)
    common = {"tiler": plan.tiler(), "dataset": ray.put(absolute_dataset(plan.dataset)), "save": save}
    ref_pool = Pool(ray, "reference", dict(common, specs=[actor_spec(plan.reference_spec, options)],
                                           crash_once=_crash(options, "reference")),
                    n_ref, t, g if ref_gpu else 0, options)
    art_pool = Pool(ray, "artifact", dict(common, specs=[actor_spec(s, options) for s in plan.specs],
                                          crash_once=_crash(options, "artifact")),
                    n_art, t, g, options) if plan.specs else None
    return ref_pool, art_pool


def _crash(options: ClusterOptions, pool: str) -> tuple[int, str] | None:
    """The test hook for one pool: ``crash_once`` is (frame, marker file[, pool name])."""
    crash = options.crash_once
    if crash is None or (len(crash) > 2 and crash[2] != pool):
        return None
    return int(crash[0]), str(crash[1])


def _actor_counts(ray: Any, options: ClusterOptions, rows: int, ref_gpu: bool) -> tuple[int, int]:
    """(reference actors, artifact actors): the flags, else the cluster shared by row count."""
    from runtime.cluster.session import resources, split_slots

    cpus, gpus = resources(ray)
    t, g = options.threads, options.gpus_per_actor
    if not rows:
        return options.reference_actors or max(1, int((gpus // g) if (g and ref_gpu) else cpus // t)), 0
    if g and not ref_gpu:
        n_art = options.actors or max(1, int(gpus // g))
        return options.reference_actors or max(1, int((cpus - n_art * t) // t)), n_art
    return split_slots(int(gpus // g) if g else int(cpus // t), rows, options.reference_actors, options.actors)


def _merge(plan: GatePlan, results: dict, ref_header: dict, headers: list, notes: list, extra: dict) -> GateRun:
    """Add the frames' scores up in frame order, each frame once (the one-process merge)."""
    ds = plan.dataset
    checkpoint = plan.reference_spec[2].get("checkpoint")
    ref_info = dict(ref_header["info"], checkpoint=str(checkpoint) if checkpoint else None)
    ref = RowScores(ref_header["label"], ref_header["precision"], ref_info, ds.num_classes, ds.ignore_index)
    rows = [RowScores(h["label"], h["precision"], dict(h["info"], artifact=spec[0]), ds.num_classes, ds.ignore_index)
            for h, spec in zip(headers, plan.specs)]     # paths as given, not as the actors opened them
    unreadable = []
    for index in sorted(results):
        ref_result, art_result = results[index]
        if ref_result["error"] is not None:
            unreadable.append((ref_result["name"], ref_result["error"]))
            continue
        ref.add(ref_result["scores"][0])
        for row, score in zip(rows, art_result["scores"] if art_result else []):
            row.add(score)
    names = ds.class_names
    return GateRun(ref.result(names), ref_header["meta"], [r.result(names) for r in rows], notes,
                   unreadable, extra)
