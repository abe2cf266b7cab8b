"""``python -m samples.generate``: write the synthetic Cityscapes-format sample set (samples/dataset.py).

    python -m samples.generate --out data/synth_cityscapes [--size 256x512] [--train 300] [--val 30] [--video data/drive.mp4]
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

from apps.cli import non_negative_int, parse_hw, positive_int
from samples.dataset import generate_dataset
from samples.video import write_video


def print_summary(summary: dict) -> None:
    H, W = summary["size"]
    print(f"dataset: {summary['out']}  ({summary['train']} train + {summary['val']} val, {H}x{W}, "
          f"{summary['written']} written, {summary['skipped']} already present and skipped, "
          f"{summary['seconds']:.1f} s)")
    print("class pixel frequency (labelIds; 'ego vehicle' is ignored in training/evaluation):")
    for name, frac in sorted(summary["pixel_fractions"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14s} {100 * frac:6.2f} %")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m samples.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="dataset root to write (Cityscapes layout)")
    ap.add_argument("--size", default="256x512", help="image size HxW (e.g. 1024x2048)")
    ap.add_argument("--train", type=non_negative_int, default=300, help="number of train images")
    ap.add_argument("--val", type=non_negative_int, default=30, help="number of val images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--force", action="store_true", help="replace a different dataset in --out")
    ap.add_argument("--video", help="also write a driving video here (.mp4 or .avi)")
    ap.add_argument("--video-size", default="256x512", help="video frame size HxW")
    ap.add_argument("--video-frames", type=positive_int, default=120)
    ap.add_argument("--fps", type=float, default=10.0)
    args = ap.parse_args(argv)
    size = parse_hw(args.size, "--size")
    summary = generate_dataset(args.out, size, args.train, args.val, args.seed, args.workers, args.force)
    print_summary(summary)
    if args.video:
        t0 = time.perf_counter()
        path = write_video(args.video, seed=args.seed, n_frames=args.video_frames, fps=args.fps,
                           size=parse_hw(args.video_size, "--video-size"))
        print(f"video: {path} ({args.video_frames} frames at {args.fps:g} fps, "
              f"{time.perf_counter() - t0:.1f} s)")
    return 0
