"""What a training run tells its user: the autocast that really runs, the CPU kernels, a projection of
the training time from the first iterations, and steady progress lines when stdout is not a terminal.

Split from :mod:`models.train` so that the loop stays short; everything here writes through
:class:`RunLog` (``log.jsonl`` + console, rank 0 only).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

# oneDNN's ONEDNN_MAX_CPU_ISA names, slowest first; bf16 kernels need avx512_core_bf16 or AMX.
_ONEDNN_ISA_ORDER = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni",
                     "avx512_core_bf16", "avx10_1_512", "avx512_core_fp16", "avx512_core_amx",
                     "avx10_1_512_amx", "avx512_core_amx_fp16", "avx10_1_512_amx_fp16", "all", "default")


def cpu_kernels() -> str:
    """The ISA the CPU kernels run on, with any environment restriction, e.g. ``ATen AVX2, oneDNN avx2
    (ONEDNN_MAX_CPU_ISA)``."""
    aten = torch.backends.cpu.get_cpu_capability()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    aten_env = " (ATEN_CPU_CAPABILITY)" if os.environ.get("ATEN_CPU_CAPABILITY") else ""
    return f"ATen {aten}{aten_env}, oneDNN " + (f"{onednn.lower()} (ONEDNN_MAX_CPU_ISA)" if onednn else "best available")


def _onednn_allows_bf16() -> bool:
    """False when ONEDNN_MAX_CPU_ISA caps oneDNN below its bf16 kernels (e.g. an AVX2 emulation)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "default").lower()
    if cap not in _ONEDNN_ISA_ORDER:
        return True
    return _ONEDNN_ISA_ORDER.index(cap) >= _ONEDNN_ISA_ORDER.index("avx512_core_bf16")


def cpu_bf16_unit() -> str | None:
    """The CPU unit that runs bf16 fast (``'AMX'`` / ``'AVX512-BF16'``), or None. Elsewhere PyTorch's bf16
    autocast falls back to slow kernels (about 130x slower than FP32 on an AVX2 EPYC, issue 13)."""
    if not _onednn_allows_bf16():
        return None
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return None


def amp_choice(mode: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """(autocast dtype, what it means in words). auto: bf16 on CUDA with bf16 and on CPUs with a fast bf16
    unit, fp16 on older GPUs, otherwise FP32."""
    if mode == "off":
        return None, "off (--amp off): FP32"
    if mode in ("bf16", "fp16"):
        dtype = torch.bfloat16 if mode == "bf16" else torch.float16
        note = f"{mode} autocast (--amp {mode})"
        if device.type == "cpu" and (mode == "fp16" or cpu_bf16_unit() is None):
            note += "; this CPU has no fast kernels for it: expect it to be much slower than FP32"
        return dtype, note
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast (auto: CUDA with bf16)"
        return torch.float16, "fp16 autocast (auto: CUDA without bf16)"
    unit = cpu_bf16_unit()
    if unit is not None:
        return torch.bfloat16, f"bf16 autocast (auto: {unit} on this CPU)"
    return None, "off (auto: no AMX or AVX512-BF16 usable on this CPU): FP32"


class RunLog:
    """log.jsonl lines + console output, rank 0 only."""

    def __init__(self, out: Path | None) -> None:
        self.path = out / "log.jsonl" if out else None

    def write(self, record: dict, echo: bool = False) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            self.say(json.dumps({k: v for k, v in record.items() if k != "per_class_iou"}))

    def say(self, text: str) -> None:
        if self.path is None:
            return
        from tqdm import tqdm

        tqdm.write(text)
        sys.stdout.flush()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Progress:
    """Projects the training time after ``warmup + measure`` iterations and, when stdout is not a
    terminal (no progress bar), prints a progress line every ``every_s`` seconds with s/iter and ETA."""

    def __init__(self, log: RunLog, start: int, total: int, warmup: int = 1, measure: int = 4,
                 every_s: float = 30.0, tty: bool | None = None) -> None:
        self.log, self.start, self.total = log, start, total
        self.warmup, self.measure, self.every_s = warmup, measure, every_s
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._t0: float | None = None          # time after the warm-up iterations
        self._last_print = time.perf_counter()
        self.projected = False

    def rate(self, it: int) -> float | None:
        """Seconds per iteration since the warm-up (None until one measured iteration)."""
        done = it - self.start - self.warmup
        if self._t0 is None or done < 1:
            return None
        return (time.perf_counter() - self._t0) / done

    def update(self, it: int, loss: float, lr: float) -> None:
        if it - self.start == self.warmup:
            self._t0 = time.perf_counter()
        rate = self.rate(it)
        if rate is None:
            return
        left = (self.total - it) * rate
        if not self.projected and it - self.start >= self.warmup + self.measure:
            self.projected = True
            self.log.write({"iter": it, "s_per_iter": round(rate, 3), "projected_s": round(left, 1)})
            self.log.say(f"speed: {rate:.2f} s/iter over iterations {self.start + self.warmup + 1}-{it} "
                         f"({cpu_kernels()}); the remaining {self.total - it} iterations take about "
                         f"{_minutes(left)} plus validation")
        now = time.perf_counter()
        if not self.tty and now - self._last_print >= self.every_s:
            self._last_print = now
            self.log.say(f"iter {it}/{self.total}  loss {loss:.3f}  lr {lr:.2e}  {rate:.2f} s/iter  "
                         f"ETA {_minutes(left)}")


def describe_run(note: str) -> dict[str, Any]:
    """Machine and kernels of this run, for the first log line."""
    from runtime.sysinfo import describe

    return {"machine": describe(), "kernels": cpu_kernels(), "amp": note}
