"""Segmentation metrics with the semantics that produced the published numbers.

Pixels whose ground truth is 255 are ignored; a predicted 255 counts as
background; IoU = TP / (TP + FP + FN) per class, and mIoU is the mean over
the classes whose union (in ground truth or prediction, over the whole
evaluated set) is not empty, as chainercv's ``eval_semantic_segmentation``
computes it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from .io import IGNORE


@dataclass
class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix: rows ground truth, columns prediction."""

    num_classes: int
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
        keep = gt != IGNORE
        pred = np.where(pred == IGNORE, 0, pred)[keep].astype(np.int64)
        gt = gt[keep].astype(np.int64)
        n = self.num_classes
        if pred.size and (pred.max() >= n or pred.min() < 0 or gt.max() >= n or gt.min() < 0):
            raise ValueError(f"labels must lie in 0..{n - 1} or be {IGNORE}")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def error_rates(self) -> dict[str, float]:
        """IRNet's diagnostics: FP and FN rates relative to TP + FP + FN, background vs foreground mean."""
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(0) - tp
        fn = self.matrix.sum(1) - tp
        denom = tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            fpr = np.where(denom > 0, fp / denom, np.nan)
            fnr = np.where(denom > 0, fn / denom, np.nan)
        return {
            "bg_fp": float(fpr[0]), "bg_fn": float(fnr[0]),
            "fg_fp": float(np.nanmean(fpr[1:])) if np.isfinite(fpr[1:]).any() else float("nan"),
            "fg_fn": float(np.nanmean(fnr[1:])) if np.isfinite(fnr[1:]).any() else float("nan"),
        }

    def summary(self, class_names: list[str]) -> dict:
        """JSON-ready result in percent: miou, iou per class name, pixel_acc and error rates."""
        iou = self.iou()
        return {
            "miou": round(100 * self.miou(), 2),
            "iou": {name: (None if np.isnan(v) else round(100 * float(v), 2)) for name, v in zip(class_names, iou)},
            "pixel_acc": round(100 * self.pixel_accuracy(), 2),
            **{k: round(100 * v, 2) for k, v in self.error_rates().items()},
        }


def format_iou_table(summary: dict, title: str = "") -> str:
    """A per-class table of a ``ConfusionMatrix.summary`` for the terminal."""
    width = max(len(name) for name in summary["iou"]) + 2
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}{'IoU':>8}")
    for name, value in summary["iou"].items():
        lines.append(f"{name:<{width}}{'-' if value is None else f'{value:.2f}':>8}")
    lines.append(f"{'mIoU':<{width}}{summary['miou']:>8.2f}")
    lines.append(f"pixel accuracy {summary['pixel_acc']:.2f}  bg FP {summary['bg_fp']:.2f} FN {summary['bg_fn']:.2f}"
                 f"  fg FP {summary['fg_fp']:.2f} FN {summary['fg_fn']:.2f}")
    return "\n".join(lines)


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the runs that have the figure; no spread for one run."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None)


def format_mean_std(value: float, std: float | None) -> str:
    """``value`` to one decimal, right-aligned in 6 characters, with `` ± std`` when there is a spread."""
    return f"{value:6.1f}" + (f" ± {std:.1f}" if std is not None else "")
