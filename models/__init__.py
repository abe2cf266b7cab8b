"""PyTorch NonLocalNet and its variant table.

``models.zoo`` imports without torch (the runtime reads variant facts on torch-free devices);
``create_model`` and the modules are loaded on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["create_model", "get_variant", "list_variants", "NonLocalNet"]


def __getattr__(name: str) -> Any:
    if name in ("get_variant", "list_variants", "VARIANTS", "DATASETS"):
        from models import zoo
        return getattr(zoo, name)
    if name == "create_model":
        from models.factory import create_model
        return create_model
    if name == "NonLocalNet":
        from models.nonlocalnet import NonLocalNet
        return NonLocalNet
    raise AttributeError(f"module 'models' has no attribute {name!r}")
