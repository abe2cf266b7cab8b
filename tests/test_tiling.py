"""Tiler: coverage, exact overlap averaging, padding, odd sizes, batching, labels, NaN detection."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.artifact import ArtifactMeta
from runtime.errors import ToolkitError
from runtime.tiling import (NumericalError, Tiler, centrality, default_stride, extract_tiles,
                            tile_grid)

MEAN = (10.0, 20.0, 30.0)
STD = (2.0, 4.0, 8.0)


class FakeBackend:
    """Known outputs: channel 0 = the tile's normalised red channel, channel 1 = the tile's index
    (in call order), channel 2 = 1. ``labels=True``: the tile index as the label everywhere."""

    name = "fake"

    def __init__(self, crop=(16, 24), batch=1, static=True, labels=False, poison=None):
        self.meta = ArtifactMeta("fake", 3, ("a", "b", "c"), ((0, 0, 0),) * 3, crop, MEAN, STD,
                                 batch=batch, output="labels" if labels else "logits")
        self.input_shape = self.meta.input_shape
        self.num_classes = 3
        self.output_kind = self.meta.output
        self.static_batch = static
        self.poison = poison
        self.calls: list[np.ndarray] = []
        self.seen = 0

    def __call__(self, batch):
        assert batch.dtype == np.float32 and batch.shape[1:] == self.input_shape[1:]
        if self.static_batch:
            assert batch.shape[0] == self.input_shape[0]
        self.calls.append(batch.copy())
        n, _, h, w = batch.shape
        idx = np.arange(self.seen, self.seen + n, dtype=np.float32)
        self.seen += n
        if self.output_kind == "labels":
            return np.broadcast_to(idx[:, None, None], (n, h, w)).astype(np.int32)
        out = np.empty((n, 3, h, w), np.float32)
        out[:, 0] = batch[:, 0]
        out[:, 1] = idx[:, None, None]
        out[:, 2] = 1.0
        if self.poison is not None and self.seen > 1:
            out[0, 2, 0, 0] = self.poison
        return out


def image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_default_stride_overlap_at_least_a_third():
    assert default_stride((512, 1024)) == (341, 682)
    for c in range(3, 700, 7):
        (s, _) = default_stride((c, c))
        assert c - s >= c / 3 and s >= 1


@pytest.mark.parametrize("h,w,crop,stride", [(1024, 2048, (512, 1024), (341, 682)), (37, 53, (16, 24), (10, 17)),
                                             (16, 24, (16, 24), (10, 16)), (100, 30, (16, 24), (16, 24)),
                                             (10, 7, (16, 24), (10, 16))])
def test_grid_covers_every_pixel_and_stays_inside(h, w, crop, stride):
    grid = tile_grid(h, w, crop, stride)
    cover = np.zeros((max(h, crop[0]), max(w, crop[1])), int)
    for y, x in grid:
        assert y >= 0 and x >= 0
        assert y + crop[0] <= max(h, crop[0]) and x + crop[1] <= max(w, crop[1])
        cover[y:y + crop[0], x:x + crop[1]] += 1
    assert cover[:h, :w].min() >= 1
    assert len(set(grid)) == len(grid)
    if h >= crop[0]:
        assert max(y for y, _ in grid) == h - crop[0]     # the last row ends on the border


def test_stride_larger_than_crop_is_refused():
    with pytest.raises(ToolkitError, match="stride"):
        tile_grid(100, 100, (16, 16), (20, 8))


def test_extract_tiles_pads_with_zero_only_beyond_the_image():
    chw = np.random.default_rng(1).normal(size=(3, 10, 30)).astype(np.float32)
    tiles, pos = extract_tiles(chw, (16, 24), (8, 12))
    assert tiles.shape == (len(pos), 3, 16, 24) and all(y == 0 for y, _ in pos)
    for t, (y, x) in zip(tiles, pos):
        np.testing.assert_array_equal(t[:, :10], chw[:, :, x:x + 24])
        assert not t[:, 10:].any()


@pytest.mark.parametrize("h,w", [(37, 53), (16, 24), (41, 24), (9, 11), (64, 25)])
def test_overlap_averaging_is_exact(h, w):
    be = FakeBackend()
    img = image(h, w)
    tiler = Tiler(stride=(10, 17))
    out = tiler.logits(be, img)
    assert out.shape == (3, h, w) and out.dtype == np.float32
    # channel 0: the average of identical copies of the normalised pixel is that pixel
    np.testing.assert_allclose(out[0], (img[:, :, 0].astype(np.float32) - MEAN[0]) / STD[0], rtol=0, atol=1e-5)
    # channel 1: the mean tile index over the tiles covering each pixel, computed independently
    grid = tile_grid(h, w, (16, 24), (10, 17))
    expect = np.zeros((h, w))
    for yy in range(h):
        for xx in range(w):
            cov = [i for i, (y, x) in enumerate(grid) if y <= yy < y + 16 and x <= xx < x + 24]
            expect[yy, xx] = np.mean(cov)
    np.testing.assert_allclose(out[1], expect, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[2], 1.0)


def test_padded_region_is_fed_as_mean_colour_and_cut_off():
    be = FakeBackend()
    img = image(9, 11)
    out = Tiler().logits(be, img)
    assert out.shape == (3, 9, 11)
    fed = be.calls[0][0]
    assert not fed[:, 9:].any() and not fed[:, :, 11:].any()


def test_static_batch_is_filled_and_results_match_batch_one():
    img = image(37, 53, seed=3)
    one = Tiler(stride=(10, 17)).logits(FakeBackend(batch=1), img)
    be3 = FakeBackend(batch=3)
    three = Tiler(stride=(10, 17)).logits(be3, img)
    n_tiles = len(tile_grid(37, 53, (16, 24), (10, 17)))
    assert all(c.shape[0] == 3 for c in be3.calls) and len(be3.calls) == -(-n_tiles // 3)
    np.testing.assert_array_equal(one, three)


def test_dynamic_batch_uses_the_tiler_batch():
    be = FakeBackend(batch=1, static=False)
    Tiler(stride=(10, 17), batch=4).logits(be, image(37, 53))
    assert [c.shape[0] for c in be.calls][:-1] == [4] * (len(be.calls) - 1)


def test_labels_are_argmax_of_the_average():
    be = FakeBackend()
    img = image(30, 40)
    logits = Tiler().logits(be, img)
    labels = Tiler().labels(FakeBackend(), img)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, logits.argmax(0))


def test_labels_backend_takes_the_most_central_tile():
    h, w, stride = 37, 53, (10, 17)
    labels = Tiler(stride=stride).labels(FakeBackend(labels=True), image(h, w))
    grid = tile_grid(h, w, (16, 24), stride)
    cen = centrality((16, 24))
    for yy in range(0, h, 3):
        for xx in range(0, w, 4):
            scores = [(cen[yy - y, xx - x], -i) for i, (y, x) in enumerate(grid)
                      if y <= yy < y + 16 and x <= xx < x + 24]
            assert labels[yy, xx] == -max(scores)[1]
    with pytest.raises(ToolkitError, match="labels"):
        Tiler().logits(FakeBackend(labels=True), image(h, w))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_reported_not_mapped(bad):
    with pytest.raises(NumericalError, match="non-finite"):
        Tiler(stride=(10, 17)).labels(FakeBackend(poison=bad), image(37, 53))
    assert issubclass(NumericalError, ToolkitError)


def test_whole_mode_needs_the_frame_size():
    img = image(16, 24)
    out = Tiler(mode="whole").logits(FakeBackend(), img)
    assert out.shape == (3, 16, 24)
    with pytest.raises(ToolkitError, match="whole-frame"):
        Tiler(mode="whole").labels(FakeBackend(), image(20, 24))


def test_resize_mode_returns_frame_size():
    be = FakeBackend()
    out = Tiler(mode="resize").logits(be, image(33, 71))
    assert out.shape == (3, 33, 71) and len(be.calls) == 1
    np.testing.assert_allclose(out[2], 1.0, atol=1e-6)
    assert Tiler(mode="resize").labels(FakeBackend(labels=True), image(33, 71)).shape == (33, 71)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ToolkitError, match="did you mean"):
        Tiler(mode="tile")
    with pytest.raises(ToolkitError, match="crop"):
        Tiler(crop=(32, 32)).labels(FakeBackend(), image(40, 40))
    with pytest.raises(ToolkitError, match="RGB uint8"):
        Tiler().labels(FakeBackend(), image(40, 40).astype(np.float32))


def test_timing_breakdown():
    tiler = Tiler(stride=(10, 17))
    tiler.labels(FakeBackend(), image(37, 53))
    t = tiler.last_timing
    assert set(t) >= {"preprocess", "infer", "stitch", "total", "tiles"}
    assert t["tiles"] == len(tile_grid(37, 53, (16, 24), (10, 17)))
    assert t["total"] == pytest.approx(t["preprocess"] + t["infer"] + t["stitch"])
