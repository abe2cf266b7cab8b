"""The ``--max-drop`` run's options and the name tag of a budgeted artifact (imported by every part)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class BudgetOptions:
    """The ``--max-drop`` run (export/to_trt.py's flags of the same names; ``argv`` for the report)."""

    model: str
    out: str
    max_drop: float
    calib_data: str
    checkpoint: str | None = None
    random_init: bool = False
    crop: str | None = None
    batch: int = 1
    output: str = "logits"
    data: str | None = None
    int8: bool = False
    fp16: bool = False
    calib_method: str | None = None
    calib_images: int | None = None
    eval_data: str | None = None
    label_ids: str | None = None
    keep_fp32: str | None = None
    keep_int8: str | None = None
    max_float_layers: int | None = None
    no_float_for_speed: bool = False
    qat_data: str | None = None       # --int8: fine-tune with fake quantization when no PTQ candidate fits
    qat_iters: int = 300
    qat_lr: float = 0.002
    qat_batch: int = 4
    no_qat: bool = False
    quiet: bool = False
    argv: list[str] = dataclasses.field(default_factory=list)


def budget_tag(precision: str, layout: str | None, budget: float) -> str:
    """``int8_ort_maxdrop0.1`` / ``fp16_maxdrop0.5``: the name tag of a budgeted artifact."""
    return "_".join([precision] + ([layout] if layout else []) + [f"maxdrop{budget:g}"])
