"""Train a NonLocalNet variant with the published recipe (single process, or multi-process via torchrun).

    python -m models.train --model r18os8_cityscapes --data data/cityscapes --out runs/r18
    torchrun --nproc_per_node 4 -m models.train --model r50os8_cityscapes --data data/cityscapes
    python -m models.train --model r18os8_cityscapes --data data/synth_cityscapes --preset synthetic

Recipe (the defaults): SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly power 0.9 per iteration
down to 1e-4, no warm-up; cross-entropy (ignore 255) on logits at the crop size + 0.4 x auxiliary;
augmentation in :mod:`models.transforms`. ``--preset synthetic`` only changes defaults (explicit
flags win) to the settings measured for the procedurally generated sample set on a 2-core CPU.

Outputs in ``--out``: ``latest.pth`` (every ``--save-every`` iterations, on Ctrl-C and at the end),
``best.pth`` (best validation mIoU), ``log.jsonl``. Checkpoints are ``{'model': state_dict,
'optimizer', 'cur_iter', 'miou', 'finished', ...}``, loadable by ``create_model(name, checkpoint=PATH)``;
``--resume`` continues exactly (weights, optimizer, iteration, data order, RNG). ``finished`` is True
only in the ``latest.pth`` of a run that reached ``--iters``. Ctrl-C or SIGTERM finishes the current
iteration, saves ``latest.pth`` and exits 130 (SIGINT) or 143 (SIGTERM), so a caller never mistakes an
interrupted run for a finished one; ``--max-minutes`` stops with exit 0 (asked for), unfinished.
"""
from __future__ import annotations

import math
import os
import signal

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.checkpoints import save_checkpoint
from models.transforms import AugmentedDataset, IterationBatches, TrainTransform
from runtime.zoo import get_variant
from models.train_log import Progress, RunLog, amp_choice, describe_run
from models.train_state import (SIGNAL_EXIT, StopFlag, checkpoint_extra, load_resume,  # noqa: F401 (API)
                                read_training_checkpoint, run_state)
from runtime.values import parse_hw
from runtime.errors import ToolkitError
from runtime.fileio import ensure_writable_dir

RECIPE = dict(crop=None, base_size=None, iters=80000, batch_size=8, lr=0.01, min_lr=1e-4, momentum=0.9,
              weight_decay=5e-4, power=0.9, aux_weight=0.4, amp="auto", workers=4, val_every=4000,
              save_every=4000, ohem_thresh=None, ohem_min_kept=100000, ratio_range="0.5,2.0")
# Measured on 2-core CPUs for `python -m samples.generate` frames (256x512) and the r18w32os8 sample
# model (README, Training): 192x192 crops learn more per FLOP than 256x256 on this set, and rescales of
# 0.9-1.2 (the val frames are at scale 1) more than 0.75-1.5 or the published 0.5-2.0.
PRESETS = {"synthetic": dict(crop="192x192", base_size="512x256", iters=1250, batch_size=4, lr=0.02,
                             amp="auto", workers=1, val_every=250, save_every=250, ohem_thresh=0.7,
                             ratio_range="0.9,1.2")}


@dataclass
class TrainConfig:
    """One training run: the recipe's values (see RECIPE) plus data, output and run control."""

    model: str
    data: str
    out: str | None = None
    preset: str | None = None
    crop: str | None = None
    base_size: str | None = None
    ratio_range: str = RECIPE["ratio_range"]
    iters: int = RECIPE["iters"]
    batch_size: int = RECIPE["batch_size"]
    lr: float = RECIPE["lr"]
    min_lr: float = RECIPE["min_lr"]
    momentum: float = RECIPE["momentum"]
    weight_decay: float = RECIPE["weight_decay"]
    power: float = RECIPE["power"]
    aux_weight: float = RECIPE["aux_weight"]
    amp: str = RECIPE["amp"]
    workers: int = RECIPE["workers"]
    val_every: int = RECIPE["val_every"]
    save_every: int = RECIPE["save_every"]
    ohem_thresh: float | None = RECIPE["ohem_thresh"]
    ohem_min_kept: int = RECIPE["ohem_min_kept"]
    resume: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    limit: int | None = None
    max_minutes: float | None = None
    threads: int | None = None
    log_every: int = 10
    qat: str | None = None          # a Q/DQ ONNX: fine-tune its graph with fake quantization (models.qat)

    def check(self) -> None:
        """User errors in the values (named by their command-line flags), before any work starts."""
        check_config(self)


@dataclass
class Runtime:
    """Where this process runs: rank, world size, device, autocast dtype."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    amp: torch.dtype | None
    amp_note: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(args: TrainConfig) -> Runtime:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; nccl on CUDA, gloo on CPU; pick the autocast dtype."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    if not cuda:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local_world))
    return Runtime(rank, world, local_rank, device, *amp_choice(args.amp, device))


def poly_lr(base: float, it: int, total: int, power: float = 0.9, min_lr: float = 1e-4) -> float:
    """mmseg poly schedule: (base - min) * (1 - it/total)^power + min, per iteration, no warm-up."""
    return (base - min_lr) * (1.0 - min(it, total) / total) ** power + min_lr


def _worker_init(_: int) -> None:
    import cv2

    # Ctrl-C / SIGTERM to the process group: the main process finishes the iteration and saves
    # (StopFlag); a worker dying first would make it crash instead. Workers exit with the loader.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def check_config(args: "TrainConfig") -> None:
    """User errors in a config (named by their command-line flags), before any work starts."""
    if not Path(args.data).is_dir():
        raise ToolkitError(f"--data folder does not exist: {args.data}",
                           fix="pass the dataset root holding the train and val splits "
                               "(python -m samples.generate --out DIR makes the synthetic one)")
    for key in ("iters", "batch_size"):
        if getattr(args, key) < 1:
            raise ToolkitError(f"--{key.replace('_', '-')} must be >= 1", found=str(getattr(args, key)))
    for key in ("val_every", "save_every", "workers"):
        if getattr(args, key) < 0:
            raise ToolkitError(f"--{key.replace('_', '-')} must be >= 0", found=str(getattr(args, key)))
    if args.resume is not None and args.checkpoint:
        raise ToolkitError("--resume and --checkpoint conflict", fix="--resume restores the weights itself; "
                           "use --checkpoint only to start a new run from given weights")
    parse_ratio_range(args.ratio_range)
    if args.ohem_thresh is not None and not 0.0 < args.ohem_thresh <= 1.0:
        raise ToolkitError("--ohem-thresh must be in (0, 1]", found=str(args.ohem_thresh))
    if args.ohem_min_kept < 1:
        raise ToolkitError("--ohem-min-kept must be >= 1", found=str(args.ohem_min_kept))
    if args.crop:
        parse_hw(args.crop)
    if args.base_size:
        parse_hw(args.base_size, "--base-size")
    if not 0.0 < args.lr or args.min_lr < 0 or args.min_lr > args.lr:
        raise ToolkitError("learning rates must satisfy 0 <= --min-lr <= --lr and --lr > 0",
                           found=f"lr {args.lr}, min-lr {args.min_lr}")
    if args.qat is not None:
        if not Path(args.qat).is_file():
            raise ToolkitError(f"QAT graph not found: {args.qat}", fix="pass a Q/DQ ONNX file")
        if args.amp != "off" or args.val_every:
            raise ToolkitError("quantization-aware training runs in FP32 (amp off) without whole-image "
                               "validation (the graph has a static crop)", found=f"amp {args.amp}, "
                               f"val-every {args.val_every}", fix="amp='off', val_every=0")



MAX_RATIO = 8.0       # --ratio-range: a frame rescaled beyond 8x its base size is no augmentation (and can overflow)


def parse_ratio_range(text: str) -> tuple[float, float]:
    """``"0.5,2.0"`` -> (0.5, 2.0); a malformed, empty, non-finite or huge range is a usage error."""
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ToolkitError("--ratio-range must be LO,HI", found=str(text), expected="e.g. 0.5,2.0") from None
    if not 0.0 < lo <= hi <= MAX_RATIO:          # also false for nan; inf is above MAX_RATIO
        raise ToolkitError(f"--ratio-range needs 0 < LO <= HI <= {MAX_RATIO:g}", found=str(text),
                           expected="e.g. 0.5,2.0 (the published recipe)")
    return lo, hi


def build_loader(args: TrainConfig, rt: Runtime, variant: Any, start: int) -> torch.utils.data.DataLoader:
    from runtime.data import open_dataset

    ds = open_dataset(args.data, split="train", limit=args.limit, label_ids_flag=None)
    if len(ds) == 0:
        raise ToolkitError(f"no training images under {args.data}", fix="check --data (train split)")
    info = variant.dataset
    crop = parse_hw(args.crop) if args.crop else variant.crop
    base = parse_hw(args.base_size, "--base-size")[::-1] if args.base_size else info.base_size
    transform = TrainTransform(crop=crop, base_size=base, mean=info.mean, std=info.std,
                               ratio_range=parse_ratio_range(args.ratio_range), ignore_index=info.ignore_index)
    batches = IterationBatches(len(ds), args.batch_size, rt.rank, rt.world, args.seed, start, args.iters)
    return torch.utils.data.DataLoader(AugmentedDataset(ds, transform, args.seed), batch_sampler=batches,
                                       num_workers=args.workers, worker_init_fn=_worker_init,
                                       pin_memory=rt.device.type == "cuda", persistent_workers=False)


def build_model(args: TrainConfig, rt: Runtime) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(model to train, unwrapped model, note on BatchNorm). DDP + SyncBatchNorm on CUDA only.
    With ``args.qat``: the Q/DQ graph as a :class:`models.qat.QuantGraph` (BatchNorm folded)."""
    from models import create_model

    torch.manual_seed(args.seed)
    if args.qat is not None:
        from models.qat import QuantGraph

        model = QuantGraph.from_file(args.qat).to(rt.device).train()
        note = f"BatchNorm folded (QAT on {Path(args.qat).name}: {model.fake_quant_sites} activation Q/DQ sites)"
    else:
        model = create_model(args.model, checkpoint=args.checkpoint).to(rt.device).train()
        note = "BatchNorm"
    # channels_last: oneDNN (CPU) and cuDNN (CUDA) convolutions run NHWC natively (CPU bf16: 1.17x per step)
    model = model.to(memory_format=torch.channels_last)
    if rt.world > 1 and rt.device.type == "cuda" and args.qat is None:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        note = "SyncBatchNorm"
    elif rt.world > 1 and args.qat is None:
        # PyTorch's SyncBatchNorm raises for CPU tensors ("expected input tensor to be on GPU"), so
        # CPU/gloo runs keep per-process BatchNorm statistics (gradients are still all-reduced).
        note = "BatchNorm (per process: SyncBatchNorm does not support CPU tensors)"
    inner = model
    if rt.world > 1:
        ids = [rt.local_rank] if rt.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, inner, note


def ohem_cross_entropy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int, thresh: float,
                       min_kept: int) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (online hard example mining, as mmsegmentation's
    OHEMPixelSampler selects them): pixels whose probability of the true class is below
    ``max(thresh, p[min_kept])`` (the ``min_kept``-th smallest), so at least ``min_kept`` pixels
    per batch train; the loss is the mean over the kept pixels (HRNet's OhemCrossEntropy)."""
    pixel = F.cross_entropy(logits, label, ignore_index=ignore_index, reduction="none")
    valid = label != ignore_index
    if not bool(valid.any()):
        return pixel.sum() * 0.0
    with torch.no_grad():
        prob = torch.exp(-pixel[valid])          # softmax probability of the true class
        kth = prob.kthvalue(min(max(min_kept, 1), prob.numel())).values
        threshold = torch.clamp(kth, min=thresh)
        keep = valid.clone()
        keep[valid] = prob <= threshold
    return pixel[keep].mean()


def train_step(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: Any, rt: Runtime, aux_weight: float, ignore_index: int,
               ohem: tuple[float, int] | None = None) -> float:
    """One SGD step: CE(out) + aux_weight * CE(aux), logits at the crop size; ``ohem`` =
    (thresh, min_kept) mines hard pixels for the main head's loss. Returns the loss."""
    image = batch[0].to(rt.device, non_blocking=True, memory_format=torch.channels_last)
    label = batch[1].to(rt.device, non_blocking=True)
    with torch.autocast(rt.device.type, dtype=rt.amp or torch.float32, enabled=rt.amp is not None):
        outputs = model(image)
    if ohem is None:
        loss = F.cross_entropy(outputs["out"].float(), label, ignore_index=ignore_index)
    else:
        loss = ohem_cross_entropy(outputs["out"].float(), label, ignore_index, *ohem)
    if "aux" in outputs:                        # a QAT graph is the deployed model: no auxiliary head
        loss = loss + aux_weight * F.cross_entropy(outputs["aux"].float(), label, ignore_index=ignore_index)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds: Any, variant: Any, rt: Runtime) -> dict:
    """Whole-image inference on the val split (this rank's share), one confusion matrix over all ranks."""
    from runtime.metrics import ConfusionMeter
    from runtime.preprocess import normalize

    info = variant.dataset
    meter = ConfusionMeter(variant.num_classes, info.ignore_index)
    was_training = model.training
    model.eval()
    for i in range(rt.rank, len(val_ds), rt.world):
        sample = val_ds[i]
        x = torch.from_numpy(normalize(sample.image, info.mean, info.std))[None].to(rt.device)
        with torch.autocast(rt.device.type, dtype=rt.amp or torch.float32, enabled=rt.amp is not None):
            logits = model(x)
        meter.update(logits.argmax(1)[0].to(torch.uint8).cpu().numpy(), sample.label)
    model.train(was_training)
    if rt.world > 1:
        total = torch.from_numpy(meter.matrix).to(rt.device)
        dist.all_reduce(total)
        meter.matrix[:] = total.cpu().numpy()
    return meter.summary(info.class_names)


class Trainer:
    """Owns model, optimizer, data and outputs for one run; :meth:`run` is the loop."""

    def __init__(self, args: TrainConfig, rt: Runtime) -> None:
        self.args, self.rt = args, rt
        self.variant = get_variant(args.model)
        self.out = Path(args.out or f"runs/{args.model}")
        if rt.main:
            ensure_writable_dir(self.out)
        self.log = RunLog(self.out if rt.main else None)
        self.model, self.inner, self.bn_note = build_model(args, rt)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                                         weight_decay=args.weight_decay)
        self.scaler = torch.amp.GradScaler(rt.device.type) if rt.amp == torch.float16 else None
        self.start, self.best, self.last_miou, ckpt = 0, None, None, None
        self.exit_code = 0
        if args.resume is not None:
            path = Path(args.resume) if args.resume else self.out / "latest.pth"
            ckpt = load_resume(path, self.inner, self.optimizer, self.scaler, args.model)
            self.start, self.best = int(ckpt["cur_iter"]), ckpt.get("best_miou")
            self.last_miou = ckpt.get("miou")
        self.val_ds = self._open_val() if args.val_every else None
        self.loader_iter = iter(build_loader(args, rt, self.variant, self.start))
        if ckpt is not None:   # after the loader iterator took its seed, as in the uninterrupted run
            torch.set_rng_state(ckpt["torch_rng"])
            if "cuda_rng" in ckpt and torch.cuda.is_available():
                torch.cuda.set_rng_state(ckpt["cuda_rng"])

    def _open_val(self) -> Any:
        from runtime.data import open_dataset

        try:
            return open_dataset(self.args.data, split="val", limit=self.args.limit, label_ids_flag=None)
        except ToolkitError as exc:
            raise ToolkitError(f"cannot open the val split for validation: {exc.message}",
                               fix="add a val split or pass --val-every 0") from None

    def save(self, name: str, it: int, full: bool = True) -> None:
        if not self.rt.main:
            return
        extra = checkpoint_extra(self.args, self.optimizer, self.scaler, it, self.last_miou, self.best)
        if not full:   # best.pth: weights + facts, no optimizer/RNG (a deployable file)
            extra = {k: extra[k] for k in ("cur_iter", "miou", "best_miou", "variant", "args")}
        save_checkpoint(self.out / name, self.inner, **extra)

    def validate(self, it: int) -> float:
        summary = validate(self.inner, self.val_ds, self.variant, self.rt)
        self.last_miou = summary["miou"]
        improved = self.last_miou is not None and (self.best is None or self.last_miou > self.best)
        if improved:
            self.best = self.last_miou
            self.save("best.pth", it, full=False)
        if self.rt.main:
            self.log.write({"iter": it, "val": True, **summary, "best_miou": self.best}, echo=True)
        return self.last_miou

    def _stop_now(self, stop: StopFlag, started: float) -> bool:
        over = self.args.max_minutes is not None and time.time() - started > 60 * self.args.max_minutes
        interrupted = stop.set
        stop.set = stop.set or over
        if not stop.agreed(self.rt):
            return False
        # a signal here or on another rank: exit as interrupted; only the time limit alone is a clean stop
        self.exit_code = SIGNAL_EXIT.get(stop.signum, 130) if interrupted or not over else 0
        return True

    def run(self) -> int:
        """Train from ``self.start`` to ``--iters``; returns the exit code (0, or 130/143 if interrupted)."""
        from tqdm import tqdm

        a, rt = self.args, self.rt
        info = self.variant.dataset
        if rt.main:
            self.log.write({"start": self.start, "iters": a.iters, "world": rt.world, "device": str(rt.device),
                            **describe_run(rt.amp_note), "norm": self.bn_note, "args": vars(a)}, echo=True)
        ohem = (a.ohem_thresh, a.ohem_min_kept) if a.ohem_thresh is not None else None
        started, it, recent = time.time(), self.start, []
        progress = Progress(self.log, self.start, a.iters)
        bar = tqdm(total=a.iters, initial=it, disable=None if rt.main else True, dynamic_ncols=True)
        with StopFlag() as stop, bar:
            for batch in self.loader_iter:
                lr = poly_lr(a.lr, it, a.iters, a.power, a.min_lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = train_step(self.model, batch, self.optimizer, self.scaler, rt, a.aux_weight,
                                  info.ignore_index, ohem)
                if not math.isfinite(loss):
                    raise ToolkitError(f"training loss became {loss} at iteration {it + 1}",
                                       fix="lower --lr or use --amp off")
                it += 1
                recent.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                if rt.main:
                    progress.update(it, loss, lr)
                if rt.main and (it % a.log_every == 0 or it == a.iters):
                    self.log.write({"iter": it, "loss": float(np.mean(recent)), "lr": lr,
                                    "elapsed_s": round(time.time() - started, 1)})
                    recent = []
                if a.save_every and it % a.save_every == 0:
                    self.save("latest.pth", it)
                if a.val_every and it % a.val_every == 0:
                    self.validate(it)
                if it < a.iters and self._stop_now(stop, started):
                    break
        self._finish(it, started)
        return self.exit_code

    def _finish(self, it: int, started: float) -> None:
        a = self.args
        if a.val_every and it % a.val_every != 0 and it > self.start and not self.exit_code:
            self.validate(it)   # skipped after Ctrl-C / SIGTERM: the user wants out, resume validates later
        if not (a.save_every and it % a.save_every == 0) or it == self.start:
            self.save("latest.pth", it)
        if self.rt.main:
            minutes = (time.time() - started) / 60
            self.log.write({"end": it, "minutes": round(minutes, 2), "best_miou": self.best,
                            "finished": it >= a.iters, "exit_code": self.exit_code}, echo=True)
            where = f"{self.out / 'latest.pth'}" + (f", best {self.best:.4f} in {self.out / 'best.pth'}"
                                                    if self.best is not None else "")
            if it >= a.iters:
                print(f"finished {it}/{a.iters} iterations in {minutes:.1f} min; saved {where}")
            else:
                why = "interrupted" if self.exit_code else "stopped by --max-minutes"
                print(f"{why} at iteration {it}/{a.iters} after {minutes:.1f} min, unfinished; saved {where} "
                      f"(continue with the same command plus --resume)")


def train(config: Any) -> int:
    """Train ``config`` (:class:`TrainConfig`, checked) in this process; returns the exit code
    (0 finished or stopped by max_minutes, 130/143 interrupted)."""
    get_variant(config.model)
    rt = setup_runtime(config)
    try:
        return Trainer(config, rt).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
