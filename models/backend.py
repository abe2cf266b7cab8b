"""PyTorch reference backend: ``models.create_model(variant, checkpoint=...)`` on CPU or CUDA.

FP32 by default; ``autocast="fp16"`` or ``"bf16"`` runs under ``torch.autocast`` (bf16 is the fast
path on CPUs with AMX / AVX512-BF16; elsewhere it is emulated, slower than FP32, and a note says so). torch is imported on open only, so ``runtime`` stays torch-free.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np

from runtime.artifact import ArtifactMeta
from runtime.backends.base import Backend
from runtime.errors import ToolkitError, require

AUTOCAST = {None: None, "fp32": None, "fp16": "float16", "bf16": "bfloat16"}


def bf16_note(autocast: str | None, device: str) -> str | None:
    """One line when bf16 autocast runs on a CPU without bf16 hardware (oneDNN emulates it, slowly)."""
    from runtime.sysinfo import native_bf16

    if autocast != "bf16" or not device.startswith("cpu") or native_bf16():
        return None
    return ("note: bf16 autocast on a CPU without AVX512-BF16/AMX is emulated and slower than FP32 "
            "(torch.ops.mkldnn._is_mkldnn_bf16_supported() may still say True); use FP32 or the INT8 artifact")


class TorchBackend(Backend):
    """The PyTorch model as a backend. ``artifact`` is a variant name (e.g. ``r18os8_cityscapes``).

    Options: ``checkpoint`` (None = random init, a path, or "pretrained"), ``crop`` (H, W; default
    the variant's crop; any size works for PyTorch, e.g. the frame size for whole-frame mode),
    ``device`` ("cpu", "cuda", "cuda:1"), ``autocast`` (None | "fp16" | "bf16"), ``batch`` (max tiles
    per call), ``threads`` (torch.set_num_threads), ``model`` (an already built nn.Module).
    """

    name = "torch"
    static_batch = False

    def __init__(self, artifact: str, checkpoint: str | os.PathLike | None = None,
                 crop: Sequence[int] | None = None, device: str = "cpu", autocast: str | None = None,
                 batch: int = 1, threads: int | None = None, model: Any = None) -> None:
        super().__init__(artifact)
        if autocast not in AUTOCAST:
            raise ToolkitError(f"unknown autocast mode {autocast!r}", expected="fp16 or bf16 (or none)")
        if int(batch) < 1:
            raise ToolkitError("batch must be >= 1", found=str(batch))
        self.checkpoint = checkpoint
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.device = str(device)
        self.autocast = None if autocast == "fp32" else autocast
        self.batch = int(batch)
        self.threads = threads
        self._model = model
        self._torch: Any = None

    @property
    def precision(self) -> str:
        return self.autocast or "fp32"

    @property
    def label(self) -> str:
        return f"torch:{self.artifact}" + (f"-{self.autocast}" if self.autocast else "")

    def _allocate(self) -> None:
        torch = require("torch", "the PyTorch reference backend needs torch",
                        fix="pip install torch (CPU build: --index-url https://download.pytorch.org/whl/cpu)")
        from runtime.zoo import get_variant

        variant = get_variant(self.artifact)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ToolkitError("device cuda requested but torch sees no CUDA GPU",
                               found=f"torch {torch.__version__}", fix="use --device cpu")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self._model is None:
            from models import create_model
            self._model = create_model(self.artifact, checkpoint=self.checkpoint)
        self._model = self._model.eval().to(self.device)
        self._torch = torch
        note = bf16_note(self.autocast, self.device)
        if note:
            print(note, file=sys.stderr)
        self._meta = self._build_meta(variant)

    def _build_meta(self, variant: Any) -> ArtifactMeta:
        ds = variant.dataset
        crop = self.crop or tuple(variant.crop)
        sha = ""
        if self.checkpoint not in (None, "pretrained") and os.path.isfile(str(self.checkpoint)):
            from runtime.fileio import sha256_file
            sha = sha256_file(self.checkpoint)
        return ArtifactMeta(variant=variant.name, num_classes=variant.num_classes,
                            class_names=tuple(ds.class_names), palette=tuple(ds.palette),
                            crop=crop, mean=tuple(ds.mean), std=tuple(ds.std), batch=self.batch,
                            output="logits", precision="fp16" if self.autocast else "fp32",
                            checkpoint_sha256=sha, random_init=self.checkpoint is None,
                            extra={"autocast": self.autocast or "", "device": self.device})

    def _release(self) -> None:
        self._model = None
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
        self._torch = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(batch).to(self.device)
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.inference_mode():
            if self.autocast:
                with torch.autocast(device_type=dev_type, dtype=getattr(torch, AUTOCAST[self.autocast])):
                    out = self._model(x)
            else:
                out = self._model(x)
        return out.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(checkpoint=str(self.checkpoint) if self.checkpoint else None, device=self.device,
                 autocast=self.autocast)
        return d
