"""WSOL box metrics: MaxBoxAccV2, MaxBoxAcc, GT-known / Top-1 / Top-5 Loc.

``BoxAccumulator`` takes one score map per image (the map of the image's
ground-truth class), optionally with the model's top-5 classes, so a trainer
feeds it batch by batch and a CLI feeds it .npy files. Per image it keeps only
counts and one boolean per score-map threshold, so any threshold on the grid
can be applied afterwards, e.g. one chosen on a held-out split.

Protocol (the standard WSOL evaluation, "Evaluating WSOL Right", CVPR 2020):
score maps are resized to 224 x 224 and min-max normalised; boxes are
extracted at thresholds 0, 0.01, ..., 0.99; ground-truth boxes are resized to
224 x 224. MaxBoxAccV2 counts an image correct at IoU delta when any contour's
box reaches delta against any ground-truth box, takes the best threshold per
delta and averages over delta in {30, 50, 70}. MaxBoxAcc, GT-known, Top-1 and
Top-5 Loc use the largest contour's box at IoU 0.5. All values are percent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from irnet_moana.io import CorruptFileError
from irnet_moana.wsol.boxes import box_iou, boxes_at_thresholds, centre_scoremap, normalize_scoremap, resize_boxes
from irnet_moana.wsol.metadata import MetadataError, WSOLMetadata, read_metadata

# np.arange, not k / 100: the reference's grid, so int(t * 255) levels agree exactly.
CAM_THRESHOLDS = np.arange(0, 1, 0.01)
IOU_THRESHOLDS = (30, 50, 70)
LOC_IOU = 50


class BoxAccumulator:
    """Accumulates box-localisation results over the images of one split.

    Call ``add`` once per image, then ``result`` (or ``best_threshold``).
    Accumulators over disjoint parts of a split (e.g. one per process) can be
    combined with ``merge``.
    """

    def __init__(self, metadata: WSOLMetadata, cam_thresholds: Sequence[float] = CAM_THRESHOLDS,
                 iou_thresholds: Sequence[int] = IOU_THRESHOLDS) -> None:
        if not metadata.has_localization():
            raise MetadataError("the metadata lacks image sizes or boxes for some images; "
                             "box evaluation needs image_sizes.txt and localization.txt")
        if LOC_IOU not in iou_thresholds:
            raise ValueError(f"iou_thresholds must include {LOC_IOU}")
        self.metadata = metadata
        self.cam_thresholds = np.asarray(cam_thresholds, dtype=np.float64)
        self.iou_thresholds = tuple(int(d) for d in iou_thresholds)
        self._seen: set[str] = set()
        self._multi_correct = np.zeros((len(self.iou_thresholds), len(self.cam_thresholds)), dtype=np.int64)
        self._largest_correct: list[np.ndarray] = []
        self._top1: list[bool | None] = []
        self._top5: list[bool | None] = []

    def __len__(self) -> int:
        return len(self._largest_correct)

    def gt_boxes(self, image_id: str) -> np.ndarray:
        """The image's ground-truth boxes resized to 224 x 224, (M, 4)."""
        return resize_boxes(self.metadata.boxes[image_id], self.metadata.image_sizes[image_id])

    def add(self, image_id: str, scoremap: np.ndarray, topk: Sequence[int] | None = None) -> None:
        """Add one image's result.

        ``scoremap`` is the map of the image's ground-truth class (2-D, any
        size, any range; resized and normalised here). ``topk`` lists the
        predicted classes best first: Top-1 uses the first, Top-5 the first five.
        """
        if image_id not in self.metadata.class_labels:
            raise KeyError(f"image id {image_id!r} is not in the metadata")
        if image_id in self._seen:
            raise ValueError(f"image id {image_id!r} was added twice")
        if topk is not None and len(topk) == 0:
            raise ValueError(f"image id {image_id!r}: empty list of predicted classes")

        results = boxes_at_thresholds(normalize_scoremap(scoremap), self.cam_thresholds)
        gt = self.gt_boxes(image_id)
        all_boxes = np.concatenate([boxes for boxes, _ in results])
        starts = np.cumsum([0] + [len(boxes) for boxes, _ in results[:-1]])
        # Best IoU per threshold over every (contour box, GT box) pair.
        best_iou = np.maximum.reduceat(box_iou(all_boxes, gt).max(axis=1), starts)
        largest_iou = box_iou(np.stack([largest for _, largest in results]), gt).max(axis=1)

        deltas = np.array(self.iou_thresholds, dtype=np.float64)[:, None] / 100
        self._multi_correct += best_iou[None, :] >= deltas
        self._largest_correct.append(largest_iou >= LOC_IOU / 100)
        label = self.metadata.class_labels[image_id]
        self._top1.append(None if topk is None else int(topk[0]) == label)
        self._top5.append(None if topk is None else label in [int(c) for c in topk[:5]])
        self._seen.add(image_id)

    def merge(self, other: BoxAccumulator) -> None:
        """Add another accumulator's images (same thresholds, no image in both) to this one."""
        if not (np.array_equal(self.cam_thresholds, other.cam_thresholds)
                and self.iou_thresholds == other.iou_thresholds):
            raise ValueError("cannot merge accumulators with different thresholds")
        common = self._seen & other._seen
        if common:
            raise ValueError(f"cannot merge: {len(common)} image(s) in both, e.g. {sorted(common)[0]!r}")
        self._seen |= other._seen
        self._multi_correct += other._multi_correct
        self._largest_correct += other._largest_correct
        self._top1 += other._top1
        self._top5 += other._top5

    def gt_known_curve(self) -> np.ndarray:
        """GT-known Loc (percent) at every score-map threshold."""
        self._require_images()
        return np.stack(self._largest_correct).mean(axis=0) * 100

    def best_threshold(self) -> float:
        """The threshold that maximises GT-known Loc on this split (the lowest one on ties)."""
        return float(self.cam_thresholds[int(np.argmax(self.gt_known_curve()))])

    def threshold_index(self, threshold: float) -> int:
        """Position of ``threshold`` in the threshold grid; ValueError when it is off the grid."""
        matches = np.flatnonzero(np.isclose(self.cam_thresholds, threshold, rtol=0, atol=1e-6))
        if len(matches) == 0:
            raise ValueError(f"threshold {threshold} is not on the grid {self.cam_thresholds[0]:g}, "
                             f"{self.cam_thresholds[1]:g}, ..., {self.cam_thresholds[-1]:g}")
        return int(matches[0])

    def result(self, split: str, threshold: float | None = None, threshold_split: str | None = None) -> dict[str, Any]:
        """All metrics as a JSON-ready dict.

        With ``threshold`` None the localisation threshold is chosen on this
        split (maximal GT-known Loc); otherwise the given threshold is used
        and ``threshold_split`` records where it was chosen.
        """
        curve = self.gt_known_curve()
        if threshold is None:
            threshold, threshold_split = self.best_threshold(), split
        index = self.threshold_index(threshold)
        per_iou = self._multi_correct * 100 / len(self)
        best = per_iou.argmax(axis=1)
        largest = np.stack(self._largest_correct)[:, index]
        top1, top5 = self._predictions()
        v1_index = int(np.argmax(curve))
        return {
            "split": split,
            "num_images": len(self),
            "MaxBoxAccV2": float(per_iou.max(axis=1).mean()),
            "MaxBoxAccV2_per_iou": {str(d): float(per_iou[i, best[i]]) for i, d in enumerate(self.iou_thresholds)},
            "MaxBoxAccV2_best_threshold": {str(d): _rounded(self.cam_thresholds[best[i]])
                                           for i, d in enumerate(self.iou_thresholds)},
            "MaxBoxAcc": float(curve[v1_index]),
            "MaxBoxAcc_threshold": _rounded(self.cam_thresholds[v1_index]),
            "threshold": _rounded(self.cam_thresholds[index]),
            "threshold_split": threshold_split,
            "gt_known_loc": float(largest.mean() * 100),
            "top1_loc": None if top1 is None else float((largest & top1).mean() * 100),
            "top5_loc": None if top5 is None else float((largest & top5).mean() * 100),
            "top1_cls": None if top1 is None else float(top1.mean() * 100),
            "top5_cls": None if top5 is None else float(top5.mean() * 100),
        }

    def _predictions(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        given = [flag is not None for flag in self._top1]
        if not any(given):
            return None, None
        if not all(given):
            raise ValueError(f"class predictions were given for {sum(given)} of {len(given)} images; "
                             "give them for all images or for none")
        return np.array(self._top1, dtype=bool), np.array(self._top5, dtype=bool)

    def _require_images(self) -> None:
        if not self._largest_correct:
            raise ValueError("no images were added")


def _rounded(threshold: float) -> float:
    # Grid values such as 0.07000000000000001 are shown as 0.07.
    return round(float(threshold), 6)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_results(result: Mapping[str, Any]) -> str:
    """A human-readable table of ``BoxAccumulator.result``'s dict."""
    per_iou, best = result["MaxBoxAccV2_per_iou"], result["MaxBoxAccV2_best_threshold"]
    rows = [("MaxBoxAccV2", _percent(result["MaxBoxAccV2"]), "mean over IoU " + "/".join(per_iou))]
    for delta, value in per_iou.items():
        rows.append((f"  BoxAcc @ IoU {delta}", _percent(value), f"best threshold {best[delta]:g}"))
    rows.append(("MaxBoxAcc (IoU 50)", _percent(result["MaxBoxAcc"]),
                 f"best threshold {result['MaxBoxAcc_threshold']:g}"))
    at = f"threshold {result['threshold']:g} chosen on {result['threshold_split']}"
    for key, name in (("gt_known_loc", "GT-known Loc"), ("top1_loc", "Top-1 Loc"), ("top5_loc", "Top-5 Loc")):
        rows.append((name, _percent(result[key]), at))
    for key, name in (("top1_cls", "Top-1 Cls"), ("top5_cls", "Top-5 Cls")):
        rows.append((name, _percent(result[key]), ""))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"WSOL box evaluation, split {result['split']}, {result['num_images']} images"]
    lines += [f"{name:<{width}}  {value:>6}  {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)


def format_one_line(result: Mapping[str, Any]) -> str:
    """The headline numbers on one line (for logs)."""
    return (f"{result['split']}: MaxBoxAccV2 {_percent(result['MaxBoxAccV2'])} "
            f"MaxBoxAcc {_percent(result['MaxBoxAcc'])} "
            f"GT-known {_percent(result['gt_known_loc'])} Top-1 {_percent(result['top1_loc'])} "
            f"Top-5 {_percent(result['top5_loc'])} "
            f"(threshold {result['threshold']:g} from {result['threshold_split']}, n={result['num_images']})")


def scoremap_path(scoremap_root: str | os.PathLike, image_id: str) -> Path:
    """Where the score map of ``image_id`` lives: ``<root>/<image_id>.npy``."""
    return Path(scoremap_root) / f"{image_id}.npy"


def load_scoremap(scoremap_root: str | os.PathLike, image_id: str) -> np.ndarray:
    """Read one 2-D score map (.npy, no pickle); FileNotFoundError or CorruptFileError name the file."""
    path = scoremap_path(scoremap_root, image_id)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: score map of image {image_id!r} not found")
    try:
        scoremap = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptFileError(f"{path}: unreadable .npy ({exc})") from exc
    if scoremap.ndim != 2 or not np.issubdtype(scoremap.dtype, np.number):
        raise CorruptFileError(f"{path}: expected a 2-D numeric array, got {scoremap.dtype} of shape {scoremap.shape}")
    return scoremap


def load_predictions(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read a JSON object mapping image id -> predicted classes, best first (the top five suffice)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path}: expected a JSON object mapping image id to a list of classes")
    for image_id, classes in data.items():
        if (not isinstance(classes, list) or not classes
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes)):
            raise CorruptFileError(
                f"{path}: predictions of {image_id!r} must be a non-empty list of integers, got {classes!r}")
    return data


def accumulate_scoremaps(scoremap_root: str | os.PathLike, metadata: WSOLMetadata,
                         predictions: Mapping[str, Sequence[int]] | None = None,
                         progress: bool = False) -> BoxAccumulator:
    """A BoxAccumulator fed with ``<scoremap_root>/<image_id>.npy`` for every image of ``metadata``."""
    if predictions is not None:
        missing = [i for i in metadata.image_ids if i not in predictions]
        if missing:
            raise MetadataError(f"no class predictions for {len(missing)} image(s), e.g. {missing[0]!r}")
    accumulator = BoxAccumulator(metadata)
    for image_id in tqdm(metadata.image_ids, desc="score maps", disable=not progress):
        topk = None if predictions is None else predictions[image_id]
        accumulator.add(image_id, load_scoremap(scoremap_root, image_id), topk)
    return accumulator


def centre_baseline_accumulator(metadata: WSOLMetadata) -> BoxAccumulator:
    """A BoxAccumulator in which every image's score map is the centre-box baseline map."""
    accumulator = BoxAccumulator(metadata)
    scoremap = centre_scoremap()
    for image_id in metadata.image_ids:
        accumulator.add(image_id, scoremap)
    return accumulator


def evaluate_scoremap_dir(scoremap_root: str | os.PathLike | None, metadata_root: str | os.PathLike, *,
                          predictions_path: str | os.PathLike | None = None,
                          threshold_scoremap_root: str | os.PathLike | None = None,
                          threshold_metadata_root: str | os.PathLike | None = None,
                          threshold: float | None = None, threshold_split: str | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """Evaluate a folder of score maps against one metadata split folder.

    ``scoremap_root`` None evaluates the centre-box baseline instead. The
    localisation threshold is, in order of precedence: chosen on the
    ``threshold_*`` split (both roots given; the baseline needs only the
    metadata), the given ``threshold`` (recorded as chosen on
    ``threshold_split``), or chosen on the evaluated split itself. Split names
    are the metadata folders' names.
    """
    split = Path(metadata_root).resolve().name
    metadata = read_metadata(metadata_root)
    predictions = None if predictions_path is None else load_predictions(predictions_path)
    if scoremap_root is None:
        accumulator = centre_baseline_accumulator(metadata)
    else:
        accumulator = accumulate_scoremaps(scoremap_root, metadata, predictions, progress)

    if threshold_metadata_root is not None:
        if threshold is not None:
            raise ValueError("give either a threshold or a split to choose it on, not both")
        if scoremap_root is not None and threshold_scoremap_root is None:
            raise ValueError("choosing the threshold on another split needs that split's score maps too")
        threshold_metadata = read_metadata(threshold_metadata_root)
        if scoremap_root is None:
            chooser = centre_baseline_accumulator(threshold_metadata)
        else:
            chooser = accumulate_scoremaps(threshold_scoremap_root, threshold_metadata, progress=progress)
        threshold = chooser.best_threshold()
        threshold_split = Path(threshold_metadata_root).resolve().name
    elif threshold_scoremap_root is not None:
        raise ValueError("threshold score maps were given without their metadata folder")
    elif threshold is not None and threshold_split is None:
        threshold_split = "given"
    return accumulator.result(split, threshold, threshold_split)

