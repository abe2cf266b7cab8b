"""runtime.visualize: palette colouring, overlay blending, legend and HUD drawing."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import ToolkitError
from runtime.visualize import colorize, draw_hud, draw_legend, hud_text, overlay

PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70))
NAMES = ("road", "sidewalk", "building")


def _labels() -> np.ndarray:
    lab = np.zeros((32, 48), np.uint8)
    lab[:, 16:32] = 1
    lab[:, 32:] = 2
    lab[0:4, 0:4] = 255       # ignore
    lab[4:8, 0:4] = 7         # out of range for a 3-colour palette
    return lab


def test_colorize_maps_palette_and_blacks_out_ignore():
    lab = _labels()
    rgb = colorize(lab, PALETTE)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[10, 5]) == PALETTE[0]
    assert tuple(rgb[10, 20]) == PALETTE[1]
    assert tuple(rgb[10, 40]) == PALETTE[2]
    assert not rgb[0:8, 0:4].any()


def test_colorize_int_labels_negative_and_large_are_black():
    lab = np.array([[0, 1, 2], [-1, 3, 1000]], dtype=np.int32)
    rgb = colorize(lab, PALETTE)
    assert [tuple(c) for c in rgb[0]] == list(PALETTE)
    assert not rgb[1].any()


def test_overlay_blends_with_alpha_and_keeps_ignore_pixels():
    lab = _labels()
    img = np.full((32, 48, 3), 100, np.uint8)
    out = overlay(img, lab, PALETTE, alpha=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    expect = np.round(0.5 * 100 + 0.5 * np.array(PALETTE[1]))
    assert np.abs(out[10, 20].astype(int) - expect).max() <= 1
    assert (out[0:8, 0:4] == 100).all()                  # ignore / out of range: photo unchanged
    assert (overlay(img, lab, PALETTE, alpha=0.0) == img).all()
    full = overlay(img, lab, PALETTE, alpha=1.0)
    assert tuple(full[10, 40]) == PALETTE[2]
    assert img[10, 20, 0] == 100                          # input not modified


def test_overlay_resizes_smaller_label_map_nearest():
    lab = np.zeros((16, 24), np.uint8)
    lab[:, 12:] = 2
    out = overlay(np.zeros((32, 48, 3), np.uint8), lab, PALETTE, alpha=1.0)
    assert tuple(out[5, 5]) == PALETTE[0] and tuple(out[5, 40]) == PALETTE[2]


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_overlay_rejects_bad_alpha(bad):
    with pytest.raises(ToolkitError, match="opacity"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), PALETTE, alpha=bad)


def test_overlay_rejects_non_rgb_image():
    with pytest.raises(ToolkitError, match="RGB uint8"):
        overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), PALETTE)


def test_bad_palette_is_a_toolkit_error():
    with pytest.raises(ToolkitError, match="palette"):
        colorize(np.zeros((2, 2), np.uint8), [(1, 2)])


def test_legend_lists_only_present_classes():
    img = np.full((240, 320, 3), 50, np.uint8)
    lab = np.zeros((240, 320), np.uint8)
    lab[:, 200:] = 2                                       # classes 0 and 2 present, 1 absent
    out = draw_legend(img, NAMES, PALETTE, present_only=True, labels=lab)
    assert out is img
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert PALETTE[0] in colours and PALETTE[2] in colours and PALETTE[1] not in colours
    every = draw_legend(np.full((240, 320, 3), 50, np.uint8), NAMES, PALETTE, present_only=False)
    assert PALETTE[1] in {tuple(c) for c in every.reshape(-1, 3)}


def test_legend_on_tiny_frame_does_not_crash():
    img = np.zeros((10, 12, 3), np.uint8)
    draw_legend(img, NAMES, PALETTE, present_only=False)


def test_hud_draws_text_in_top_left():
    img = np.full((120, 400, 3), 200, np.uint8)
    draw_hud(img, fps=29.97, latency_ms=33.4, dropped=5)
    assert (img[:20, :100] != 200).any() and (img[-20:, -100:] == 200).all()
    assert hud_text(29.97, 33.4, 5) == " 30.0 FPS |   33.4 ms | dropped 5"
