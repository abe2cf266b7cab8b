"""What a training run saves and how it stops: the first Ctrl-C / SIGTERM finishes the iteration and saves
(:class:`StopFlag`), checkpoints carry what an exact resume needs plus a ``finished`` flag, and a run
directory can be asked whether it finished (:func:`run_state`). Split from :mod:`models.train`."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from models.checkpoints import load_checkpoint, read_state_dict
from runtime.errors import ToolkitError

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}   # 128 + signal number, as shells report it


class StopFlag:
    """First Ctrl-C / SIGTERM: finish the current iteration, save, exit. Second Ctrl-C: abort now."""

    def __init__(self) -> None:
        self.set = False
        self.signum: int | None = None      # the signal that stopped the run (None: none, or a time limit)
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True
        self.signum = self.signum or signum

    def agreed(self, rt: Any) -> bool:
        """All ranks stop at the same iteration (otherwise one would wait in all-reduce forever)."""
        if rt.world == 1:
            return self.set
        flag = torch.tensor([1.0 if self.set else 0.0], device=rt.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)


def checkpoint_extra(args: Any, optimizer: torch.optim.Optimizer, scaler: Any, it: int,
                     miou: float | None, best: float | None) -> dict:
    """Everything besides the weights that an exact resume needs (plain types: weights_only loadable)."""
    extra = dict(optimizer=optimizer.state_dict(), cur_iter=it, finished=it >= args.iters, miou=miou, best_miou=best,
                 variant=args.model, torch_rng=torch.get_rng_state(),
                 args={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, type(None)))})
    if torch.cuda.is_available():
        extra["cuda_rng"] = torch.cuda.get_rng_state()
    if scaler is not None:
        extra["scaler"] = scaler.state_dict()
    return extra


def read_training_checkpoint(path: Path) -> Any:
    """``torch.load`` with weights only (nothing executed); a truncated, foreign or pickled-object file is
    the same one-line error that ``--checkpoint`` gives."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors for truncated files, UnpicklingError for pickled objects
        raise ToolkitError(f"cannot read checkpoint {path}", found=f"{type(exc).__name__}: {exc}"[:200],
                           fix="a truncated file or one holding pickled objects cannot be resumed; start a new "
                               "run without --resume (or with --checkpoint WEIGHTS)") from None


def run_state(out: str | Path) -> tuple[str, int, int]:
    """(state, iteration, iterations) of the run in ``out``: ``'none'`` (no latest.pth), ``'unfinished'``
    (stopped before its ``--iters``) or ``'finished'``. Runs from before the ``finished`` flag count as
    finished when ``cur_iter`` reached their ``args['iters']``."""
    path = Path(out) / "latest.pth"
    if not path.is_file():
        return "none", 0, 0
    ckpt = read_training_checkpoint(path)
    if not isinstance(ckpt, dict) or "cur_iter" not in ckpt:
        raise ToolkitError(f"{path} is not a training checkpoint", fix="delete the run directory or pick another")
    it, total = int(ckpt["cur_iter"]), int(ckpt.get("args", {}).get("iters", 0))
    finished = bool(ckpt.get("finished", total and it >= total))
    return ("finished" if finished else "unfinished"), it, total


def load_resume(path: Path, inner: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                model_name: str) -> dict:
    """Restore weights, optimizer and scaler; returns the checkpoint (cur_iter, RNG states, best_miou)."""
    if not path.is_file():
        raise ToolkitError(f"--resume checkpoint not found: {path}", fix="pass the path of a latest.pth")
    ckpt = read_training_checkpoint(path)
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "cur_iter" not in ckpt:
        raise ToolkitError(f"{path} is a weights-only checkpoint and cannot be resumed",
                           expected="a training checkpoint with 'optimizer' and 'cur_iter'",
                           fix="use --checkpoint to start from these weights instead")
    if ckpt.get("variant") not in (None, model_name):
        raise ToolkitError(f"{path} was trained as {ckpt['variant']}", found=f"--model {model_name}")
    load_checkpoint(inner, read_state_dict(ckpt))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt
