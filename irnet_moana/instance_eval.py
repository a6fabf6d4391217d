"""Instance segmentation scores (mAP^r) with the semantics that produced IRNet's instance numbers.

IRNet scored its instance masks with chainercv's ``eval_instance_segmentation_voc``
(VOC 2010+ average precision, no "difficult" instances); chainercv does not
install on current Python, so this module computes the same quantities:

- per image and class, predictions are visited in the order
  ``scores.argsort()[::-1]``; each one is paired with the ground-truth instance
  of that class it overlaps most (IoU stored as float32, first one on a tie),
  whether or not that instance is already taken. Below the IoU threshold it is
  a false positive; otherwise it is a true positive if the instance was still
  free and a false positive (a duplicate) if not. There is no fallback to the
  next-best free instance;
- per class, the decisions of all images are put in the order
  ``scores.argsort()[::-1]`` of their scores; precision and recall follow
  cumulatively, recall over the class's ground-truth instances of all images;
- AP is the area under the monotone precision envelope; mAP is the mean over
  the classes that have ground truth. A class with ground truth and no
  prediction scores 0.

Exact score ties are ordered by NumPy's default (unstable) argsort, as in
chainercv, and that order depends on the NumPy version and the CPU's SIMD
kernels: with tied scores, results may differ between machines by the same
amount chainercv's would.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

from . import io
from .data.voc import OBJECT_DIR, VOC_CLASSES, DatasetError

IOU_THRESHOLDS = (0.25, 0.5, 0.75)
# Ground truth keeps each outline's pixel on both sides void, so the nearest
# pixels of two touching instances are 3 px apart across the band.
TOUCHING_GAP = 3.0
CLASS_DIR = "SegmentationClass"
PRODUCER = "make_instance_masks"


def gt_instances(root: str | Path, stem: str) -> io.Instances:
    """Ground-truth instances of ``stem`` from a VOC devkit root; scores are ones.

    Instance ids come from ``SegmentationObject/<stem>.png`` (0 and 255 are no
    instance), in increasing id order; each instance takes the smallest class
    of ``SegmentationClass/<stem>.png`` under it, as chainercv's VOC reader does.
    """
    root = Path(root)
    object_path, class_path = root / OBJECT_DIR / f"{stem}.png", root / CLASS_DIR / f"{stem}.png"
    for path in (object_path, class_path):
        if not path.is_file():
            raise DatasetError(
                f"ground truth {path} is missing; instance evaluation needs the VOC 2012 devkit's "
                f"{OBJECT_DIR}/ and {CLASS_DIR}/ PNGs under {root} (copy them from VOCdevkit/VOC2012)")
    ids, classes = io.load_label_png(object_path), io.load_label_png(class_path)
    if ids.shape != classes.shape:
        raise DatasetError(f"{object_path} ({ids.shape[1]}x{ids.shape[0]}) and {class_path} "
                           f"({classes.shape[1]}x{classes.shape[0]}) differ in size; fix or replace them")
    instance_ids = [k for k in np.unique(ids) if k not in (0, io.IGNORE)]
    masks = ids[None] == np.array(instance_ids, dtype=ids.dtype)[:, None, None]
    labels = []
    for k, mask in zip(instance_ids, masks):
        under = np.unique(classes[mask])
        # chainercv asserts on background under an instance and turns void into a
        # label outside the classes, so either means the two PNGs disagree
        if under[0] == 0 or under[-1] == io.IGNORE:
            raise DatasetError(f"instance {k} of {object_path} covers background or void pixels of "
                               f"{class_path}; the two PNGs disagree, fix or replace them")
        labels.append(int(under[0]))
    return io.Instances(masks, np.array(labels, dtype=np.int64),
                        np.ones(len(instance_ids), dtype=np.float64))


def touches_same_class(gt: io.Instances, gap: float = TOUCHING_GAP) -> bool:
    """Whether two instances of one class lie within ``gap`` pixels (centre to centre) of each other.

    These are the cases connected components of a semantic mask cannot separate.
    """
    for label in np.unique(gt.labels):
        masks = gt.masks[gt.labels == label]
        for k in range(len(masks) - 1):
            distance = distance_transform_edt(~masks[k])
            if any(distance[other].min() <= gap for other in masks[k + 1:]):
                return True
    return False


def touching_same_class_stems(gt_root: str | Path, stems: Sequence[str]) -> list[str]:
    """The images of ``stems`` whose ground truth has two touching instances of one class."""
    return [stem for stem in stems if touches_same_class(gt_instances(gt_root, stem))]


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask in ``a`` (N, H, W) with every mask in ``b`` (M, H, W), as (N, M) float64.

    Two empty masks have IoU 0 (chainercv would give NaN, which then counts
    as a match); ground truth read by :func:`gt_instances` is never empty.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask_iou needs (N, H, W) and (M, H, W) masks of one size, got {a.shape} and {b.shape}")
    pixels = int(np.prod(a.shape[1:]))
    flat_a = a.reshape(len(a), pixels).astype(np.float64)
    flat_b = b.reshape(len(b), pixels).astype(np.float64)
    # float64 sums of 0/1 products are exact up to 2**53 pixels
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class InstanceMatches:
    """Accumulates, image by image, which predictions are true positives at each IoU threshold.

    Only scores and decisions are kept, so a whole dataset can be streamed
    through :meth:`update` without holding its masks.
    """

    def __init__(self, num_classes: int, iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> None:
        self.num_classes = num_classes
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.num_gt: dict[int, int] = defaultdict(int)
        self.scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self.hits: dict[float, dict[int, list[np.ndarray]]] = {t: defaultdict(list) for t in self.iou_thresholds}
        self.num_images = 0

    def _check(self, instances: io.Instances, what: str) -> None:
        masks, labels, scores = (np.asarray(x) for x in instances)
        if masks.ndim != 3 or not len(masks) == len(labels) == len(scores):
            raise ValueError(f"{what}: expected (K, H, W) masks with K labels and K scores, got masks "
                             f"{masks.shape}, {len(labels)} labels, {len(scores)} scores")
        if len(labels) and (labels.min() < 1 or labels.max() > self.num_classes):
            raise ValueError(f"{what}: labels {sorted(set(labels.tolist()))} outside classes 1..{self.num_classes}")

    def update(self, pred: io.Instances, gt: io.Instances) -> None:
        """Add one image: its predicted and its ground-truth instances (same H, W)."""
        self._check(pred, "prediction")
        self._check(gt, "ground truth")
        pred_masks, gt_masks_all = np.asarray(pred.masks, dtype=bool), np.asarray(gt.masks, dtype=bool)
        if pred_masks.shape[1:] != gt_masks_all.shape[1:]:
            raise ValueError(f"prediction masks {pred_masks.shape[1:]} and ground truth masks "
                             f"{gt_masks_all.shape[1:]} differ in size")
        pred_labels, gt_labels = np.asarray(pred.labels), np.asarray(gt.labels)
        pred_scores = np.asarray(pred.scores)
        for label in np.unique(np.concatenate([pred_labels, gt_labels]).astype(int)).tolist():
            keep = pred_labels == label
            order = pred_scores[keep].argsort()[::-1]
            masks, scores = pred_masks[keep][order], pred_scores[keep][order]
            gt_masks = gt_masks_all[gt_labels == label]
            self.num_gt[label] += len(gt_masks)
            self.scores[label].append(scores)
            if not len(masks):
                continue
            if not len(gt_masks):
                for threshold in self.iou_thresholds:
                    self.hits[threshold][label].append(np.zeros(len(masks), dtype=bool))
                continue
            # chainercv keeps IoUs in float32: an IoU that rounds up to the threshold
            # passes it, and IoUs that round alike tie (argmax then takes the first)
            iou = mask_iou(masks, gt_masks).astype(np.float32)
            best, best_iou = iou.argmax(1), iou.max(1)
            for threshold in self.iou_thresholds:
                taken = np.zeros(len(gt_masks), dtype=bool)
                hits = np.zeros(len(masks), dtype=bool)
                for k, (g, value) in enumerate(zip(best, best_iou)):
                    if value < np.float32(threshold):
                        continue  # a miss does not take the instance
                    hits[k] = not taken[g]
                    taken[g] = True
                self.hits[threshold][label].append(hits)
        self.num_images += 1

    def precision_recall(self, iou_threshold: float) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray | None]]:
        """Per-class cumulative precision and recall over the predictions in descending score order.

        Keys are the classes seen in predictions or ground truth; recall is
        None for a class without ground truth.
        """
        hits_at = self.hits[float(iou_threshold)]
        prec: dict[int, np.ndarray] = {}
        rec: dict[int, np.ndarray | None] = {}
        for label, num_gt in self.num_gt.items():
            scores = np.concatenate(self.scores[label]) if self.scores[label] else np.zeros(0)
            hits = np.concatenate(hits_at[label]) if hits_at[label] else np.zeros(0, dtype=bool)
            hits = hits[scores.argsort()[::-1]]
            tp = np.cumsum(hits)
            fp = np.cumsum(~hits)
            prec[label] = tp / (tp + fp)
            rec[label] = tp / num_gt if num_gt > 0 else None
        return prec, rec

    def summary(self) -> dict:
        """``{"<threshold>": {"map": .., "ap": {label: ..}}}`` as fractions; None where a class has no ground truth."""
        result = {}
        for threshold in self.iou_thresholds:
            prec, rec = self.precision_recall(threshold)
            ap = {label: average_precision(prec.get(label), rec.get(label))
                  for label in range(1, self.num_classes + 1)}
            scored = [v for v in ap.values() if not math.isnan(v)]
            result[f"{threshold:g}"] = {
                "map": float(np.mean(scored)) if scored else None,
                "ap": {label: (None if math.isnan(v) else v) for label, v in ap.items()},
            }
        return result


def precision_recall(preds: Iterable[io.Instances], gts: Iterable[io.Instances], num_classes: int,
                     iou_threshold: float = 0.5) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray | None]]:
    """Per-class precision and recall of ``preds`` against ``gts`` (one pair per image); see InstanceMatches."""
    matches = InstanceMatches(num_classes, (iou_threshold,))
    for pred, gt in zip(preds, gts, strict=True):
        matches.update(pred, gt)
    return matches.precision_recall(iou_threshold)


def average_precision(prec: np.ndarray | None, rec: np.ndarray | None) -> float:
    """Area under the monotone precision envelope (VOC 2010+); NaN when either is None."""
    if prec is None or rec is None:
        return float("nan")
    precision = np.concatenate([[0.0], np.nan_to_num(prec), [0.0]])
    recall = np.concatenate([[0.0], rec, [1.0]])
    # the envelope: at each recall, the best precision reached at that recall or beyond
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def evaluate_instances(preds: Sequence[io.Instances], gts: Sequence[io.Instances],
                       iou_thresholds: Sequence[float] = IOU_THRESHOLDS, *, num_classes: int) -> dict:
    """Per-class AP and mAP at each IoU threshold, as fractions (see :meth:`InstanceMatches.summary`).

    Labels are 1-based (1..num_classes); ``preds`` and ``gts`` hold one entry
    per image, in the same order, and may be any iterables of equal length.
    """
    matches = InstanceMatches(num_classes, iou_thresholds)
    for pred, gt in zip(preds, gts, strict=True):
        matches.update(pred, gt)
    return matches.summary()


def default_stems(pred_dir: str | Path) -> list[str]:
    """Every image with a prediction pair in ``pred_dir``; a summary JSON there has no PNG and is skipped."""
    pred_dir = Path(pred_dir)
    return sorted(p.stem for p in pred_dir.glob("*.json") if p.with_suffix(".png").is_file())


def _load_pair(pred_dir: Path, gt_root: Path, stem: str, num_classes: int) -> tuple[io.Instances, io.Instances]:
    pred_png, pred_json = pred_dir / f"{stem}.png", pred_dir / f"{stem}.json"
    for path in (pred_json, pred_png):
        if not path.is_file():
            raise DatasetError(f"prediction {path} is missing; run the {PRODUCER} stage for this image list first")
    gt = gt_instances(gt_root, stem)
    pred = io.load_instances(pred_dir / stem)
    gt_png = gt_root / OBJECT_DIR / f"{stem}.png"
    if pred.masks.shape[1:] != gt.masks.shape[1:]:
        (ph, pw), (gh, gw) = pred.masks.shape[1:], gt.masks.shape[1:]
        raise DatasetError(f"prediction {pred_png} is {pw}x{ph} but ground truth {gt_png} is {gw}x{gh}; "
                           f"rerun {PRODUCER} on this dataset's images")
    for instances, path in ((pred, pred_json), (gt, gt_root / CLASS_DIR / f"{stem}.png")):
        labels = np.asarray(instances.labels)
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise DatasetError(f"{path}: class labels {sorted(set(labels.tolist()))} are outside 1..{num_classes}; "
                               "pass the dataset's classes (--classes) or regenerate the file")
    return pred, gt


def score_instance_folder(pred_dir: str | Path, gt_root: str | Path, stems: Sequence[str] | None = None,
                          class_names: Sequence[str] = VOC_CLASSES,
                          iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
    """mAP^r of the instances saved in ``pred_dir`` against a VOC devkit root, in percent.

    ``class_names`` are the foreground classes (label k is ``class_names[k - 1]``);
    without ``stems`` every prediction pair in ``pred_dir`` is scored. Images
    are streamed, so the set's masks are never all in memory.
    """
    pred_dir, gt_root = Path(pred_dir), Path(gt_root)
    for folder, hint in ((pred_dir, f"run the {PRODUCER} stage first"), (gt_root, "pass the VOC devkit root")):
        if not folder.is_dir():
            raise DatasetError(f"folder {folder} does not exist; {hint}")
    if stems is None:
        stems = default_stems(pred_dir)
    if not stems:
        raise DatasetError(f"nothing to evaluate: no predictions (<id>.json + <id>.png) listed for {pred_dir}")
    matches = InstanceMatches(len(class_names), iou_thresholds)
    for stem in stems:
        matches.update(*_load_pair(pred_dir, gt_root, stem, len(class_names)))

    def percent(value: float | None) -> float | None:
        return None if value is None else round(100 * value, 2)

    summary: dict = {"num_images": matches.num_images, "iou_thresholds": list(matches.iou_thresholds)}
    for key, result in matches.summary().items():
        summary[key] = {"map": percent(result["map"]),
                        "ap": {class_names[label - 1]: percent(v) for label, v in result["ap"].items()}}
    return summary


def threshold_keys(summary: dict) -> list[str]:
    return [f"{t:g}" for t in summary["iou_thresholds"]]


def format_ap_table(summary: dict, title: str = "") -> str:
    """A class-by-threshold AP table (percent) of a :func:`score_instance_folder` result."""
    keys = threshold_keys(summary)
    names = list(summary[keys[0]]["ap"])
    width = max(len(name) for name in [*names, "mAP^r"]) + 2
    cell = max(9, *(len(k) + 5 for k in keys))

    def row(label: str, values: Iterable[float | None]) -> str:
        return f"{label:<{width}}" + "".join(f"{'-' if v is None else f'{v:.2f}':>{cell}}" for v in values)

    lines = [title] if title else []
    lines.append(f"{'class':<{width}}" + "".join(f"{'AP@' + k:>{cell}}" for k in keys))
    lines += [row(name, (summary[k]["ap"][name] for k in keys)) for name in names]
    lines.append(row("mAP^r", (summary[k]["map"] for k in keys)))
    return "\n".join(lines)


def format_map_line(summary: dict) -> str:
    """``mAP^r 0.25 / 0.5 / 0.75: a / b / c`` (percent, one decimal)."""
    keys = threshold_keys(summary)
    values = [summary[k]["map"] for k in keys]
    return f"mAP^r {' / '.join(keys)}: " + " / ".join("-" if v is None else f"{v:.1f}" for v in values)
