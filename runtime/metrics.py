"""Segmentation metrics the official way: one confusion matrix over the whole split.

Per-class IoU = TP / (TP + FP + FN) from the accumulated matrix; classes that occur neither in the
ground truth nor in the predictions of the split are NaN and skipped by :meth:`ConfusionMeter.miou`.
Pixels whose ground truth is ``ignore_index`` are excluded. Rows of the matrix are ground truth,
columns predictions. numpy only (no torch).
"""
from __future__ import annotations

import numpy as np

from runtime.errors import ToolkitError


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """Return the int64 (K, K) confusion matrix (rows gt, columns pred) of one prediction.

    Ground-truth pixels equal to ``ignore_index`` (or outside ``[0, K)``) are excluded. A prediction
    outside ``[0, K)`` at a valid pixel is a programming error in the caller and raises.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ToolkitError("prediction and label have different shapes",
                           expected=f"{gt.shape}", found=f"{pred.shape}",
                           fix="resize the prediction to the label size before scoring")
    gt = gt.astype(np.int64, copy=False).ravel()
    pred = pred.astype(np.int64, copy=False).ravel()
    valid = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    gt, pred = gt[valid], pred[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = int(pred[(pred < 0) | (pred >= num_classes)][0])
        raise ToolkitError("prediction contains a class id outside the model's classes",
                           expected=f"ids in [0, {num_classes})", found=str(bad))
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def iou_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU (float64, NaN where a class is absent from both gt and pred)."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    iou[union == 0] = np.nan
    return iou


class ConfusionMeter:
    """Accumulates one confusion matrix over a split; mIoU / per-class IoU / pixel accuracy from it."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ToolkitError("num_classes must be positive", found=str(num_classes))
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.images = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Add one image (or a batch of equally shaped images); returns that image's matrix."""
        m = confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.add(m)
        return m

    def add(self, matrix: np.ndarray) -> None:
        """Add one image's (K, K) matrix, computed elsewhere (e.g. on a Ray actor): the exact merge."""
        self.matrix += matrix
        self.images += 1

    def reset(self) -> None:
        self.matrix[:] = 0
        self.images = 0

    def per_class_iou(self) -> np.ndarray:
        """IoU per class; NaN for classes absent from both gt and predictions."""
        return iou_from_matrix(self.matrix)

    def miou(self) -> float:
        """Mean IoU over classes that occur (NaN classes skipped); NaN if nothing was scored."""
        iou = self.per_class_iou()
        if np.all(np.isnan(iou)):
            return float("nan")
        return float(np.nanmean(iou))

    def pixel_accuracy(self) -> float:
        """Correct pixels / valid pixels (NaN if nothing was scored)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Recall per class (NaN for classes absent from the ground truth)."""
        gt_count = self.matrix.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.diag(self.matrix) / gt_count
        acc[gt_count == 0] = np.nan
        return acc

    def summary(self, class_names: tuple[str, ...] | list[str] | None = None) -> dict:
        """JSON-friendly dict: mIoU, pixel accuracy and per-class IoU (None for NaN)."""
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        iou = self.per_class_iou()
        return {
            "miou": _nan_to_none(self.miou()),
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy()),
            "images": self.images,
            "per_class_iou": {n: _nan_to_none(float(v)) for n, v in zip(names, iou)},
        }


def _nan_to_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
