"""``python -m models.train`` / ``torchrun -m models.train``: train a NonLocalNet variant (models/trainer.py).

    python -m models.train --model r18os8_cityscapes --data data/cityscapes --out runs/r18
    torchrun --nproc_per_node 4 -m models.train --model r50os8_cityscapes --data data/cityscapes
    python -m models.train --model r18os8_cityscapes --data data/synth_cityscapes --preset synthetic

The recipe, the presets and what a run writes are described in models/trainer.py.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Sequence

from apps.cli import positive_int
from models.trainer import PRESETS, RECIPE, TrainConfig, train


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="variant name, e.g. r18os8_cityscapes")
    p.add_argument("--data", required=True, help="dataset root (train + val splits)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="defaults for a known setting (flags win)")
    p.add_argument("--crop", help="train crop HxW (default: the variant's, e.g. 512x1024)")
    p.add_argument("--base-size", help="resize target WxH before the random rescale (default: dataset's)")
    p.add_argument("--ratio-range", help="random rescale of --base-size by U(LO, HI), 0 < LO <= HI <= 8, e.g. "
                                         "0.75,1.5 (default 0.5,2.0, the published recipe)")
    for flag, kind in (("iters", int), ("batch-size", int), ("lr", float), ("min-lr", float),
                       ("momentum", float), ("weight-decay", float), ("power", float),
                       ("aux-weight", float), ("workers", int), ("val-every", int), ("save-every", int)):
        p.add_argument(f"--{flag}", type=kind, help=f"default {RECIPE[flag.replace('-', '_')]}"
                       + (" (per process)" if flag == "batch-size" else ""))
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"),
                   help="autocast: auto = bf16 on CUDA with bf16 / CPUs with AMX or AVX512-BF16, fp16 on older "
                        "GPUs, FP32 elsewhere")
    p.add_argument("--ohem-thresh", type=float,
                   help="online hard example mining for the main loss: train only on pixels whose true-class "
                        "probability is below this (e.g. 0.7; default off)")
    p.add_argument("--ohem-min-kept", type=positive_int,
                   help="OHEM keeps at least this many pixels per batch (default 100000)")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--resume", nargs="?", const="", default=None,
                   help="continue from a checkpoint (default <out>/latest.pth)")
    p.add_argument("--checkpoint", help="initial weights (a file, or 'pretrained')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=positive_int, help="use only the first N train (and val) images")
    p.add_argument("--max-minutes", type=float, help="stop (and save) after this much training time")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per process (default cores/processes)")
    p.add_argument("--log-every", type=positive_int, default=10)
    args = p.parse_args(argv)
    preset = PRESETS.get(args.preset, {})
    for key, default in RECIPE.items():
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, default))
    return args



def config_from(args: argparse.Namespace) -> TrainConfig:
    """The parsed flags as a :class:`models.trainer.TrainConfig`."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from(parse_args(argv))
    config.check()
    return train(config)
