"""Train-time augmentation (numpy + OpenCV), the published NonLocalNet / mmsegmentation pipeline.

Order, as in the released training configs: random rescale (keep ratio, ``base_size`` times a
ratio in [0.5, 2.0]) -> random crop (retried so that no class covers more than 75% of the crop)
-> horizontal flip (p=0.5) -> photometric distortion -> normalise -> pad to the crop
(image 0 in normalised space, label ``ignore_index``).

Every random draw comes from the ``numpy.random.Generator`` passed in, so a (seed, index) pair
reproduces a sample exactly (the training loop derives one generator per sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from runtime.preprocess import normalize

CROP_TRIES = 10


def rescale_size(h: int, w: int, base_size: tuple[int, int], ratio: float) -> tuple[int, int]:
    """(H, W) after a keep-ratio resize into ``base_size`` (W, H) scaled by ``ratio`` (mmcv.imrescale)."""
    long_edge = max(base_size) * ratio
    short_edge = min(base_size) * ratio
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def random_rescale(image: np.ndarray, label: np.ndarray, base_size: tuple[int, int],
                   ratio_range: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resize image (bilinear) and label (nearest) to ``base_size * U(ratio_range)``, keeping the ratio."""
    import cv2

    ratio = rng.uniform(*ratio_range)
    nh, nw = rescale_size(image.shape[0], image.shape[1], base_size, ratio)
    if (nh, nw) == image.shape[:2]:
        return image, label
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return image, label


def _crop_box(h: int, w: int, crop: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    y0 = int(rng.integers(0, max(h - crop[0], 0) + 1))
    x0 = int(rng.integers(0, max(w - crop[1], 0) + 1))
    return y0, min(y0 + crop[0], h), x0, min(x0 + crop[1], w)


def class_fraction_ok(label: np.ndarray, max_ratio: float, ignore_index: int) -> bool:
    """True if the crop shows >= 2 classes and none covers ``max_ratio`` or more (ignore excluded)."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < max_ratio


def random_crop(image: np.ndarray, label: np.ndarray, crop: tuple[int, int], rng: np.random.Generator,
                cat_max_ratio: float = 0.75, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Crop to at most ``crop`` (H, W); up to ``CROP_TRIES`` draws so no class exceeds ``cat_max_ratio``.

    As in mmsegmentation, when every try fails the last drawn window is used.
    """
    h, w = label.shape
    box = _crop_box(h, w, crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(CROP_TRIES):
            y0, y1, x0, x1 = box
            if class_fraction_ok(label[y0:y1, x0:x1], cat_max_ratio, ignore_index):
                break
            box = _crop_box(h, w, crop, rng)
    y0, y1, x0, x1 = box
    return image[y0:y1, x0:x1], label[y0:y1, x0:x1]


def random_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and label together with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast: tuple[float, float] = (0.5, 1.5),
                           saturation: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """mmseg PhotoMetricDistortion on uint8 RGB: each step with p=0.5; contrast first or last at random."""
    import cv2

    image = np.ascontiguousarray(image)
    if rng.integers(2):
        image = _convert(image, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(*contrast))
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*saturation))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(-hue_delta, hue_delta + 1))
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(*contrast))
    return image


def pad_to(image_chw: np.ndarray, label: np.ndarray, crop: tuple[int, int],
           ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right to ``crop``: image with 0 (normalised space = mean colour), label with ignore."""
    h, w = label.shape
    ph, pw = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if ph == 0 and pw == 0:
        return image_chw, label
    image_chw = np.pad(image_chw, ((0, 0), (0, ph), (0, pw)), constant_values=0.0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image_chw, label


@dataclass(frozen=True)
class TrainTransform:
    """The full train pipeline: ``(image RGB uint8 HxWx3, label uint8 HxW) -> (float32 3xHxW, uint8 HxW)``."""

    crop: tuple[int, int]                         # (H, W)
    base_size: tuple[int, int]                    # (W, H), e.g. Cityscapes (2048, 1024)
    mean: Sequence[float]
    std: Sequence[float]
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = 255

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, label = random_rescale(image, label, self.base_size, self.ratio_range, rng)
        image, label = random_crop(image, label, self.crop, rng, self.cat_max_ratio, self.ignore_index)
        image, label = random_flip(image, label, rng, self.flip_prob)
        if self.photometric:
            image = photometric_distortion(image, rng)
        chw = normalize(np.ascontiguousarray(image), self.mean, self.std)
        chw, label = pad_to(chw, np.ascontiguousarray(label), self.crop, self.ignore_index)
        return chw, label


class AugmentedDataset:
    """A :mod:`runtime.data` dataset through ``transform``; item key ``(index, draw)`` seeds the draw.

    Items are (float32 3xHxW, int64 HxW) numpy arrays (a DataLoader collates them into tensors).
    """

    def __init__(self, dataset: Any, transform: TrainTransform, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        from runtime.errors import ToolkitError

        index, draw = key
        sample = self.dataset[index]
        if sample.label is None:
            raise ToolkitError(f"training image {sample.image_path} has no label",
                               fix="train on a dataset with ground truth (gtFine / label files)")
        image, label = self.transform(sample.image, sample.label, np.random.default_rng([self.seed, draw]))
        return image, label.astype(np.int64)


class IterationBatches:
    """Batch keys for iterations [start, total): per-epoch permutations sharded over ranks (as
    DistributedSampler). Global draw d = (it * world + rank) * batch + j, so the data order and
    augmentation depend only on (seed, iteration): a resumed run sees exactly the same samples."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, start: int, total: int) -> None:
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.seed, self.start, self.total = seed, start, total
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def index(self, draw: int) -> int:
        epoch, pos = divmod(draw, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 1 << 20, epoch]).permutation(self.n))
        return int(self._perm[1][pos])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.total):
            first = (it * self.world + self.rank) * self.batch
            yield [(self.index(d), d) for d in range(first, first + self.batch)]
