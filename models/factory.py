"""``create_model``: a variant name (+ checkpoint) in, a ready NonLocalNet out."""
from __future__ import annotations

import os

from models.checkpoints import fetch_release, load_checkpoint
from models.nonlocalnet import NonLocalNet
from runtime.zoo import get_variant


def create_model(name: str, checkpoint: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> NonLocalNet:
    """Build variant ``name``; ``checkpoint`` is None, a file, or ``"pretrained"`` (release download)."""
    variant = get_variant(name)
    model = NonLocalNet(**variant.model_kwargs())
    model.variant = variant
    if checkpoint == "pretrained":
        checkpoint = fetch_release(variant, cache_dir)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
