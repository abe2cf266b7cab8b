"""Quickstart: a stale sample-model run is refused up front with the --retrain fix."""
from __future__ import annotations

import pytest

from models import create_model
from models.checkpoints import save_checkpoint
from runtime.errors import ToolkitError
from samples.quickstart import MODEL, check_reusable


def test_reused_run_must_fit_the_current_variant(tmp_path):
    good = save_checkpoint(tmp_path / "good.pth", create_model(MODEL))
    check_reusable(good)
    stale = save_checkpoint(tmp_path / "stale.pth", create_model("tiny_cityscapes"))
    with pytest.raises(ToolkitError, match="cannot reuse") as info:
        check_reusable(stale)
    assert "--retrain" in str(info.value)
