"""Scoring folders of label PNGs against ground-truth masks."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import io
from .data.voc import DatasetError, check_mask
from .metrics import ConfusionMatrix


def score_mask_folder(pred_dir: str | Path, gt_dir: str | Path, class_names: Sequence[str],
                      stems: Sequence[str] | None = None) -> dict:
    """mIoU summary of ``pred_dir/<stem>.png`` against ``gt_dir/<stem>.png``.

    ``class_names`` includes background first. Without ``stems`` every
    ground-truth PNG is evaluated. A missing prediction, a size mismatch or a
    value outside the classes and 255 is an error naming the file.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise DatasetError(f"folder {folder} does not exist")
    if stems is None:
        stems = sorted(p.stem for p in gt_dir.glob("*.png"))
    if not stems:
        raise DatasetError(f"nothing to evaluate: no ground-truth PNGs listed for {gt_dir}")
    confusion = ConfusionMatrix(len(class_names))
    for stem in stems:
        gt_path, pred_path = gt_dir / f"{stem}.png", pred_dir / f"{stem}.png"
        if not gt_path.is_file():
            raise DatasetError(f"ground truth {gt_path} is missing")
        if not pred_path.is_file():
            raise DatasetError(f"prediction {pred_path} is missing; run the stage that writes it first")
        gt = io.load_label_png(gt_path)
        pred = io.load_label_png(pred_path)
        check_mask(gt, len(class_names) - 1, gt_path)
        check_mask(pred, len(class_names) - 1, pred_path, gt.shape)
        confusion.update(pred, gt)
    summary = confusion.summary(list(class_names))
    summary["num_images"] = len(stems)
    return summary
