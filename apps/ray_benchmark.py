"""Scaling on Ray: frames/s of the gate's artifact work with 1 and 2 (or N) actors, side by side.

    python -m runtime.ray_benchmark --data data/synth_cityscapes \\
        --artifact artifacts/quickstart/r18w32os8_cityscapes_256x256_int8_ort.onnx \\
        [--actors 1,2] [--rounds 5] [--threads 1] [--limit N] [--ray ADDRESS] [--out FILE.json]

One pool of max(--actors) actors, started once; every round times one pass over the frames per
setup (in this process without Ray, then Ray with 1, 2, ... actors), the order reversed every other
round; the table gives the median frames/s, its range and the speed-up over one actor. Without
--ray a local Ray is started in this process (docs/ray.md: what the figures mean).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from apps.cli import positive_int
from runtime.errors import ToolkitError


def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise ToolkitError(f"bad --actors {text!r}", expected="actor counts >= 1, e.g. 1,2")
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.ray_benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="labelled dataset root (Cityscapes/VOC/ADE20k layout)")
    p.add_argument("--artifact", required=True, help=".onnx / .engine artifact")
    p.add_argument("--backend", default="auto", help="backend for the artifact (e.g. openvino)")
    p.add_argument("--actors", default="1,2", help="actor counts to compare (default 1,2)")
    p.add_argument("--rounds", type=positive_int, default=3, help="timed passes per setup (default 3)")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (and Ray CPUs) per actor")
    p.add_argument("--limit", type=positive_int, help="first N frames only")
    p.add_argument("--no-baseline", action="store_true", help="leave out the in-process row")
    p.add_argument("--ray", metavar="ADDRESS", help="an existing cluster (default: a local Ray started here)")
    p.add_argument("--out", default="runs/ray_benchmark.json", help="JSON result")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.cluster import ClusterOptions, check_address, import_ray
    from runtime.cluster.scaling import measure_scaling
    from runtime.fileio import atomic_open
    from runtime.tables import format_table

    import_ray()
    counts = parse_counts(args.actors)
    options = ClusterOptions(address=check_address(args.ray), threads=args.threads)
    result = measure_scaling(args.data, args.artifact, counts, args.rounds, args.limit, options,
                             baseline=not args.no_baseline, backend=args.backend)
    rows = [[r["setup"], str(r["frames"]), f"{r['frames_per_s']:.2f}", f"{r['min']:.2f}-{r['max']:.2f}",
             "-" if r["speedup_vs_1_actor"] is None else f"{r['speedup_vs_1_actor']:.2f}"] for r in result["rows"]]
    print(result["machine"])
    print(f"{result['artifact']}, {result['frames']} frames, {result['rounds']} rounds, "
          f"{result['threads_per_actor']} thread(s) per actor")
    print(format_table(rows, ["setup", "frames", "frames/s (median)", "range", "x 1 actor"], align="lrrrr"))
    with atomic_open(Path(args.out), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0
