"""Box geometry for WSOL: IoU, ground-truth resizing, score maps and boxes from score maps.

Every convention here follows the standard WSOL evaluation protocol
(wsolevaluation, MaxBoxAccV2) so that numbers are comparable with published
ones, including its quirks, which are pointed out where they occur.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

RESIZE_LENGTH = 224


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``boxes_a`` (N, 4) with every box of ``boxes_b`` (M, 4) -> (N, M).

    Boxes are inclusive pixel boxes (x0, y0, x1, y1): a box covers
    (x1 - x0 + 1) * (y1 - y0 + 1) pixels. A pair whose union is not positive
    (only possible for malformed boxes) gets IoU 0.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    inter_w = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    intersection = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - intersection
    valid = union > 0
    return np.where(valid, intersection / np.where(valid, union, 1.0), 0.0)


def resize_boxes(boxes: np.ndarray | Sequence[Sequence[int]], image_size: tuple[int, int],
                 target_size: tuple[int, int] = (RESIZE_LENGTH, RESIZE_LENGTH)) -> np.ndarray:
    """Scale (N, 4) boxes from ``image_size`` (width, height) to ``target_size`` (width, height).

    Each coordinate is scaled independently and truncated to an integer
    (x * new_w / w, then int), as the reference does; int64 (N, 4) result.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (width, height), (new_width, new_height) = image_size, target_size
    scale = np.array([new_width, new_height, new_width, new_height], dtype=np.float64)
    size = np.array([width, height, width, height], dtype=np.float64)
    # Multiply before dividing: the reference's order, so truncation matches bit for bit.
    return np.trunc(boxes * scale / size).astype(np.int64)


def normalize_scoremap(scoremap: np.ndarray, size: int = RESIZE_LENGTH) -> np.ndarray:
    """Resize a 2-D map of any size to ``size`` x ``size`` (bicubic) and min-max normalise it to [0, 1].

    A constant map, or one with a NaN or infinity, becomes all zeros (the
    reference's rule), which later yields the empty-map box.
    """
    scoremap = np.asarray(scoremap, dtype=np.float64)
    if scoremap.ndim != 2:
        raise ValueError(f"a score map must be 2-D, got shape {scoremap.shape}")
    if not np.isfinite(scoremap).all():
        return np.zeros((size, size), dtype=np.float64)
    if scoremap.shape != (size, size):
        scoremap = cv2.resize(scoremap, (size, size), interpolation=cv2.INTER_CUBIC)
    low, high = scoremap.min(), scoremap.max()
    if low == high:
        return np.zeros((size, size), dtype=np.float64)
    return (scoremap - low) / (high - low)


def quantize_scoremap(scoremap: np.ndarray) -> np.ndarray:
    """A normalised map as the uint8 image the reference thresholds: int(value * 255)."""
    scoremap = np.asarray(scoremap)
    if scoremap.ndim != 2:
        raise ValueError(f"a score map must be 2-D, got shape {scoremap.shape}")
    if not np.isfinite(scoremap).all() or scoremap.min() < 0 or scoremap.max() > 1:
        raise ValueError("a score map must be finite and within [0, 1]; normalise it first (normalize_scoremap)")
    return (scoremap * 255).astype(np.uint8)


def _boxes_from_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = mask.shape
    # RETR_TREE also returns hole contours, and their boxes count as
    # candidates in the multi-contour protocol; kept so numbers match.
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        empty = np.zeros((1, 4), dtype=np.int64)
        return empty, empty[0]
    boxes = np.empty((len(contours), 4), dtype=np.int64)
    for index, contour in enumerate(contours):
        x, y, w, h = cv2.boundingRect(contour)
        # The reference's far corner is x + w (one past the last pixel),
        # clipped to the map; kept so numbers match published ones.
        boxes[index] = (x, y, min(x + w, width - 1), min(y + h, height - 1))
    # First contour of maximal polygon area, as max(..., key=contourArea) picks it.
    largest = int(np.argmax([cv2.contourArea(contour) for contour in contours]))
    return boxes, boxes[largest]


def boxes_at_thresholds(scoremap: np.ndarray, thresholds: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each threshold t: (boxes of all contours (K, 4), box of the largest contour (4,)).

    ``scoremap`` is a normalised map in [0, 1]. As in the reference, it is
    quantised to uint8 (int(v * 255)) and a pixel is foreground when its
    quantised value is strictly greater than int(t * quantised max). A map
    with no foreground gives the single box (0, 0, 0, 0).
    """
    image = quantize_scoremap(scoremap)
    peak = int(image.max())
    results: list[tuple[np.ndarray, np.ndarray]] = []
    # Thresholds that quantise to the same level give the same mask.
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for threshold in thresholds:
        level = int(threshold * peak)
        if level not in cache:
            cache[level] = _boxes_from_mask((image > level).astype(np.uint8))
        results.append(cache[level])
    return results


def boxes_from_scoremap(scoremap: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(all contours' boxes (K, 4), largest contour's box (4,)) of a normalised map at one threshold."""
    return boxes_at_thresholds(scoremap, [threshold])[0]


def centre_scoremap(size: int = RESIZE_LENGTH) -> np.ndarray:
    """The centre-box baseline: 1 on the central half-width, half-height region, 0 elsewhere.

    For size 224 the region is rows and columns 56..167, so at every
    threshold the box is (56, 56, 168, 168) in the reference's box convention.
    """
    scoremap = np.zeros((size, size), dtype=np.float64)
    start = size // 4
    stop = start + size // 2
    scoremap[start:stop, start:stop] = 1.0
    return scoremap
