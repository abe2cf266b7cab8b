"""Values a user types, parsed once for the commands and the library alike: ``HxW`` sizes and
accuracy budgets in mIoU points. No argparse here (apps/cli.py holds the argument kit)."""
from __future__ import annotations

import math
from typing import Any

from runtime.errors import ToolkitError


def parse_hw(text: str, flag: str = "--crop") -> tuple[int, int]:
    """Parse ``"512x1024"`` (or a single ``"512"`` meaning square) into ``(H, W)``."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or min(values) <= 0:
        raise ToolkitError(f"bad {flag} value {text!r}", expected="HxW with positive integers, e.g. 512x1024")
    return values  # type: ignore[return-value]


def _points(text: Any) -> float | None:
    """``text`` as mIoU points (a finite number >= 0), else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def drop_points(text: Any, flag: str = "--max-drop") -> float:
    """One accuracy budget in mIoU points: a finite number >= 0 (``export/to_trt.py --max-drop``)."""
    value = _points(text)
    if value is None:
        raise ToolkitError(f"{flag} must be >= 0 mIoU points", found=str(text), fix=f"e.g. {flag} 0.5")
    return value


def max_drop_limits(text: str | None, defaults: dict[str, float], flag: str = "--max-drop") -> dict[str, float]:
    """Per-precision budgets in mIoU points: ``"0.5"`` sets every precision (the meaning ``--max-drop``
    has in ``export/to_trt.py``); ``"fp16=0.2,int8=1"`` sets those, the others keep ``defaults``
    (an fp16 limit also sets bf16 unless bf16 is given)."""
    limits = dict(defaults)
    if not text:
        return limits
    if "=" not in text:
        value = _points(text.strip())
        if value is None:
            raise ToolkitError(f"bad {flag} value {text!r}", expected="POINTS (every precision) or "
                               "PRECISION=POINTS[,...] with PRECISION in " + ", ".join(limits) + ", POINTS >= 0",
                               fix=f"e.g. {flag} 0.5 or {flag} fp16=0.2,int8=1.0")
        return {key: value for key in limits}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, number = key.strip().lower(), _points(value)
        if not sep or key not in limits or number is None:
            raise ToolkitError(f"bad {flag} entry {item!r}",
                               expected="PRECISION=POINTS with PRECISION in " + ", ".join(limits) + ", POINTS >= 0",
                               fix=f"e.g. {flag} fp16=0.2,int8=1.0, or {flag} 0.5 for every precision")
        limits[key] = number
        if key == "fp16" and "bf16=" not in text:
            limits["bf16"] = number
    return limits


def dataset_name_of(variant: str) -> str:
    """The dataset of a variant name (``cityscapes`` / ``ade20k`` / ``voc``)."""
    from runtime.zoo import get_variant
    return get_variant(variant).dataset.name
