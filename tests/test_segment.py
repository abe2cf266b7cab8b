"""runtime.segment: image files / folders through any backend into label and colour PNGs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from runtime.errors import ToolkitError
from apps.segment import collect_images, main

VARIANT = "tiny_cityscapes"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from models import create_model
    from models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("seg") / "tiny.pth", create_model(VARIANT))


def test_folder_is_segmented_like_the_tiler(ckpt, tmp_path, capsys):
    from runtime.backends import open_backend
    from runtime.preprocess import read_image
    from runtime.tiling import Tiler

    src = tmp_path / "in"
    (src / "city").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(src / "city" / "a_leftImg8bit.png"), rng.integers(0, 255, (100, 300, 3), np.uint8))
    cv2.imwrite(str(src / "b.png"), rng.integers(0, 65535, (40, 90), np.uint16))   # 16-bit gray, < crop
    out = tmp_path / "out"
    assert main([str(src), "--model", VARIANT, "--checkpoint", str(ckpt), "--out", str(out), "--overlay"]) == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == ["b_color.png", "b_labelIds.png", "b_overlay.png", "b_trainIds.png",
                     "city/a_color.png", "city/a_labelIds.png", "city/a_overlay.png", "city/a_trainIds.png"]
    # crop 64x128, stride 42x85: rows 0, 36 x columns 0, 85, 170, 236
    assert "100x300, 8 tiles" in capsys.readouterr().out
    with open_backend(VARIANT, checkpoint=str(ckpt)) as backend:
        expected = Tiler().labels(backend, read_image(src / "city" / "a_leftImg8bit.png"))
    got = cv2.imread(str(out / "city" / "a_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert got.shape == (100, 300) and np.array_equal(got, expected)
    assert cv2.imread(str(out / "b_trainIds.png"), cv2.IMREAD_UNCHANGED).shape == (40, 90)


def test_bad_inputs_are_errors(tmp_path):
    with pytest.raises(ToolkitError, match="input not found"):
        collect_images([str(tmp_path / "missing.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="no images"):
        collect_images([str(tmp_path / "empty")])
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "f.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ToolkitError, match="same output files"):
        collect_images([str(tmp_path / "x" / "f.png"), str(tmp_path / "y" / "f.png")])
