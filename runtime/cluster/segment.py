"""Batch segmentation on a Ray cluster: runtime.segmentation's frames over a pool of actors.

Image frames are read by the actors (by absolute path: the inputs and ``out`` must be on storage
every node sees at the same path); video frames are decoded here, in order, and travel to the
actors through the object store, only as fast as the actors take them. Each actor writes its
frames' files as one set; frames already complete (same model and options) are skipped here.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from runtime.cluster import ClusterOptions
from runtime.cluster.gate import actor_spec


def segment_on_ray(spec: tuple[str, str, dict], inputs: Sequence[Any], out: Path, tiler: Any,
                   overlay_alpha: float | None, stamp: dict, overwrite: bool, options: ClusterOptions,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Segment every frame of ``inputs`` into ``out``; returns one record per frame, in order
    (status done / skipped / unreadable), as the one-process loop does."""
    from tqdm import tqdm

    from runtime.cluster.pool import Pool, run_jobs
    from runtime.cluster.session import check_fits, ray_session, resources
    from runtime.segmentation import describe, finish_out, iter_frames, prepare_out, remove_partials, skip_complete

    out = Path(out).resolve()
    records: dict[int, dict] = {}
    with ray_session(options, ("runtime", "models") if spec[1] == "torch" else ("runtime",)) as ray:
        cpus, gpus = resources(ray)
        g, t = options.gpus_per_actor, options.threads
        n = options.actors or max(1, int(gpus // g) if g else int(cpus // t))
        check_fits(ray, {"CPU": n * t, "GPU": n * g}, "--ray-actors, --threads")
        pool = Pool(ray, "model", {"specs": [actor_spec(spec, options)], "tiler": tiler,
                                   "segment": {"out": str(out), "alpha": overlay_alpha},
                                   "crash_once": options.crash_once and options.crash_once[:2]},
                    n, t, g, options)
        try:
            with pool:
                header = pool.headers[0]
                meta = header["meta"]
                resume = prepare_out(out, inputs, stamp, overwrite)
                log(f"{header['label']}: crop {meta.crop[0]}x{meta.crop[1]}, {tiler.mode}, {len(inputs)} input(s) "
                    f"-> {out}, on Ray: {n} actor(s) x {t} thread(s)" + (f", {g:g} GPU(s) each" if g else ""))
                bar = tqdm(desc="segment on Ray", unit="frame", disable=None, leave=False)

                def frames() -> Any:
                    for job in iter_frames(inputs):
                        done = resume and skip_complete(job, out, meta.variant, overlay_alpha is not None)
                        if done or job.error is not None:
                            records[job.index] = done or {"index": job.index, "name": job.name,
                                                          "status": "unreadable", "error": job.error}
                            _print(bar, describe(records[job.index]), records[job.index])
                            continue
                        yield job

                def on_done(job: Any, values: list) -> None:
                    records[job.index] = values[0]
                    bar.update(1)
                    _print(bar, describe(values[0]), values[0])

                run_jobs(ray, {"model": pool}, frames(), lambda job: job.index,
                         lambda job, actors: [actors["model"].segment.remote(job)], on_done, options)
                bar.close()
        except KeyboardInterrupt:
            remove_partials(out, inputs)      # the killed actors' half-placed sets and temporaries
            raise KeyboardInterrupt("stopped the cluster's work; run the same command again to resume") from None
    if overwrite:
        finish_out(out, stamp)
    return [records[i] for i in sorted(records)]


def _print(bar: Any, line: str, record: dict) -> None:
    bar.write(line, file=sys.stderr if record["status"] == "unreadable" else sys.stdout)
