"""Time one training step of a variant: forward, backward and SGD on random data, as ``models.train`` runs it.

    python -m models.step_time --model r18w32os8_cityscapes --crop 192x192 [--batch-size 4] [--steps 4]

Channels-last, the training mode (auxiliary head included), cross-entropy on both outputs, the threads
PyTorch uses by default (``--threads`` to set them). Prints the machine, every timed step and the
median; the first step is a warm-up and is not counted. Use it to compare variants or crops on one
machine (README, Training); ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` gives the AVX2 kernels.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence

from apps.cli import parse_hw, positive_int


def step_times(model_name: str, crop: tuple[int, int], batch: int, steps: int) -> list[float]:
    """Seconds of ``steps`` training steps after one warm-up step."""
    import torch
    import torch.nn.functional as F

    from models import create_model
    from runtime.zoo import get_variant

    torch.manual_seed(0)
    model = create_model(model_name).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    image = torch.randn(batch, 3, *crop).contiguous(memory_format=torch.channels_last)
    label = torch.randint(0, get_variant(model_name).num_classes, (batch, *crop))

    def step() -> float:
        start = time.perf_counter()
        out = model(image)
        loss = F.cross_entropy(out["out"], label) + 0.4 * F.cross_entropy(out["aux"], label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    step()
    return [step() for _ in range(steps)]


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from models.train_log import cpu_kernels
    from runtime.zoo import get_variant
    from runtime.sysinfo import describe

    ap = argparse.ArgumentParser(prog="python -m models.step_time", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="variant name, e.g. r18w32os8_cityscapes")
    ap.add_argument("--crop", default="256x256", help="HxW (default 256x256)")
    ap.add_argument("--batch-size", type=positive_int, default=4)
    ap.add_argument("--steps", type=positive_int, default=4, help="timed steps after the warm-up (default 4)")
    ap.add_argument("--threads", type=positive_int, help="torch CPU threads (default: PyTorch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    crop = parse_hw(args.crop)
    get_variant(args.model)                 # an unknown name fails before any output
    print(f"machine: {describe()}\nkernels: {cpu_kernels()}, {torch.get_num_threads()} threads", flush=True)
    times = step_times(args.model, crop, args.batch_size, args.steps)
    print(f"{args.model} batch {args.batch_size} x {crop[0]}x{crop[1]}: steps "
          f"{' '.join(f'{t:.3f}' for t in times)} s; median {statistics.median(times):.3f} s")
    return 0
