"""``create_model``: a variant name (+ checkpoint) in, a ready NonLocalNet out."""
from __future__ import annotations

import os

from models.checkpoints import download, load_checkpoint
from models.nonlocalnet import NonLocalNet
from models.zoo import get_variant
from runtime.errors import ToolkitError


def create_model(name: str, checkpoint: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> NonLocalNet:
    """Build variant ``name``; ``checkpoint`` is None, a file, or ``"pretrained"`` (release download)."""
    variant = get_variant(name)
    model = NonLocalNet(**variant.model_kwargs())
    model.variant = variant
    if checkpoint == "pretrained":
        if not variant.checkpoint_url:
            raise ToolkitError(f"{name} has no released checkpoint",
                               fix="train it with `python -m models.train` and pass --checkpoint PATH")
        checkpoint = download(variant.checkpoint_url, cache_dir, sha256=variant.checkpoint_sha256)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
