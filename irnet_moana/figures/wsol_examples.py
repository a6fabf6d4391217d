"""The WSOL-examples figure: images with their score map, ground-truth boxes (red) and predicted box (green)."""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import cv2
import numpy as np

from ..wsol.boxes import RESIZE_LENGTH, box_iou, boxes_from_scoremap, normalize_scoremap, resize_boxes
from ..wsol.data import ImageRoot
from ..wsol.evaluation import load_scoremap
from ..wsol.metadata import WSOLMetadata
from .drawing import WHITE, overlay, put_text

TILE = RESIZE_LENGTH  # tiles show the evaluation frame, where the boxes are scored
CAPTION = 24
HEADER = 28
PAD = 6
RED = (230, 25, 25)
GREEN = (25, 220, 25)


def figure_size(num_images: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of the figure for ``num_images`` tiles in up to ``columns`` columns."""
    columns = max(1, min(columns, num_images))
    rows = math.ceil(num_images / columns)
    return columns * TILE + (columns + 1) * PAD, HEADER + rows * (TILE + CAPTION) + (rows + 1) * PAD


def draw_tile(image: np.ndarray, scoremap: np.ndarray, gt_boxes: np.ndarray, pred_box: np.ndarray,
              caption: str) -> np.ndarray:
    """One (TILE + CAPTION, TILE, 3) tile; boxes are inclusive (x0, y0, x1, y1) in the 224 frame."""
    tile = np.full((TILE + CAPTION, TILE, 3), WHITE, dtype=np.uint8)
    picture = np.ascontiguousarray(overlay(image, scoremap))
    for x0, y0, x1, y1 in np.asarray(gt_boxes).reshape(-1, 4):
        cv2.rectangle(picture, (int(x0), int(y0)), (int(x1), int(y1)), RED, 2)
    x0, y0, x1, y1 = (int(v) for v in pred_box)
    cv2.rectangle(picture, (x0, y0), (x1, y1), GREEN, 2)
    tile[:TILE] = picture
    put_text(tile, caption, (4, TILE + CAPTION - 7), TILE - 8)
    return tile


def grid(tiles: Sequence[np.ndarray], columns: int, header: str) -> np.ndarray:
    """Tiles row by row on a white canvas under a one-line header."""
    width, height = figure_size(len(tiles), columns)
    columns = max(1, min(columns, len(tiles)))
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    put_text(canvas, header, (PAD, HEADER - 8), width - 2 * PAD)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top = HEADER + PAD + row * (TILE + CAPTION + PAD)
        left = PAD + column * (TILE + PAD)
        canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    return canvas


def example_ids(image_ids: Sequence[str], num_images: int) -> list[str]:
    """``num_images`` ids evenly spaced over ``image_ids`` from the first (all of them when fewer)."""
    if not image_ids or num_images < 1:
        raise ValueError("no images to show")
    count = min(num_images, len(image_ids))
    return [image_ids[i] for i in np.linspace(0, len(image_ids) - 1, count).round().astype(int)]


def example_figure(image_root: str | os.PathLike, metadata: WSOLMetadata, scoremap_root: str | os.PathLike,
                   threshold: float, threshold_split: str, num_images: int = 8, columns: int = 4,
                   predictions: Mapping[str, Sequence[int]] | None = None) -> np.ndarray:
    """The figure for ``num_images`` images of the split, as an RGB array.

    The images are evenly spaced in the split's order (always the same ones,
    and from several classes, since metadata lists images class by class).
    Each tile is the image resized to the evaluation frame under a jet overlay
    of its score map, the predicted box being the largest contour at the
    localisation threshold, captioned with the class, the top-1 prediction
    when known and the IoU with the best-matching ground-truth box.
    """
    images = ImageRoot(image_root)
    image_ids = example_ids(metadata.image_ids, num_images)
    tiles = []
    for image_id in image_ids:
        image = cv2.resize(images.load_image(image_id), (TILE, TILE), interpolation=cv2.INTER_LINEAR)
        # Normalised exactly as the evaluation does, so the drawn box is the one it scores.
        scoremap = normalize_scoremap(load_scoremap(scoremap_root, image_id))
        gt = resize_boxes(metadata.boxes[image_id], metadata.image_sizes[image_id])
        _, largest = boxes_from_scoremap(scoremap, threshold)
        iou = float(box_iou(largest[None], gt).max())
        caption = f"class {metadata.class_labels[image_id]}"
        if predictions is not None:
            caption += f" pred {predictions[image_id][0]}"
        tiles.append(draw_tile(image, scoremap, gt, largest, f"{caption}  IoU {iou:.2f}"))
    header = f"GT box red, predicted box green (threshold {threshold:g} chosen on {threshold_split})"
    return grid(tiles, columns, header)
