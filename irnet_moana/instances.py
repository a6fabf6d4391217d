"""IRNet's instance masks: centroids from the displacement field, instances, class-wise walks, detections.

All maps here are at the boundary map's resolution (stride 4) until the walked
scores are upsampled to the image. Labels are 1-based class labels as in
VOC's SegmentationClass.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from .io import Instances
from .random_walk import walk_to_image


def refine_centroids(displacement: np.ndarray, steps: int = 300) -> np.ndarray:
    """Each pixel's centroid, (2, h, w) int (y, x): its position moved ``steps`` times along the field.

    The field (2, h, w) is (dy, dx) per pixel, sampled bilinearly at the
    moving position, which is clipped to the map after every step and rounded
    at the end, in float32, as IRNet's find_centroids_with_refinement.
    """
    field = np.asarray(displacement, dtype=np.float32)
    height, width = field.shape[1:]
    y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    x = np.repeat(np.arange(width, dtype=np.float32)[None, :], height, axis=0)
    for _ in range(steps):
        up_y, down_y = np.ceil(y).astype(np.int32), np.floor(y).astype(np.int32)
        up_x, down_x = np.ceil(x).astype(np.int32), np.floor(x).astype(np.int32)
        frac_y, frac_x = y - down_y, x - down_x
        moves = [f[up_y, up_x] * frac_y * frac_x + f[down_y, up_x] * (1 - frac_y) * frac_x
                 + f[up_y, down_x] * frac_y * (1 - frac_x) + f[down_y, down_x] * (1 - frac_y) * (1 - frac_x)
                 for f in field]
        # the moves are float64 (float32 minus int32 promotes); IRNet adds them in place, so in float32
        y = np.clip((y + moves[0]).astype(np.float32), 0, height - 1)
        x = np.clip((x + moves[1]).astype(np.float32), 0, width - 1)
    return np.stack([np.round(y).astype(np.int32), np.round(x).astype(np.int32)])


def cluster_centroids(centroids: np.ndarray, displacement: np.ndarray, threshold: float = 2.5) -> np.ndarray:
    """(I, h, w) bool instance masks: pixels grouped by the weak-displacement region their centroid lands in.

    Regions are the 4-connected components of ``|displacement| < threshold``.
    Pixels whose centroid lands outside every region form a group of their own
    (IRNet keeps it as an instance too). Groups are ordered by region number.
    """
    strength = np.sqrt(displacement[1] ** 2 + displacement[0] ** 2)
    regions, _ = ndimage.label(strength < threshold)
    landed = regions[centroids[0], centroids[1]]
    _, groups = np.unique(landed, return_inverse=True)
    groups = groups.reshape(landed.shape)
    return groups[None] == np.arange(groups.max() + 1)[:, None, None]


def _components(shape: tuple[int, ...], regions: Sequence[np.ndarray], labels: Sequence[int],
                score: Callable[[int, np.ndarray], float]) -> Instances:
    """One instance per 4-connected component of each region (of ``shape``), with the region's label and
    ``score(region index, component mask)``."""
    masks, classes, values = [], [], []
    for index, (region, label) in enumerate(zip(regions, labels)):
        components, count = ndimage.label(region)
        for number in range(1, count + 1):
            component = components == number
            masks.append(component)
            classes.append(label)
            values.append(score(index, component))
    return Instances(np.array(masks, dtype=bool).reshape(-1, *shape), np.array(classes, dtype=np.int64),
                     np.array(values, dtype=np.float64))


def detect_instances(scores: np.ndarray, class_labels: Sequence[int], bg_threshold: float,
                     min_fragment: float) -> Instances:
    """Detections from walked instance-class scores (K, H, W), max-normalised, one class label per channel.

    Every pixel goes to the channel of highest score, or to none where no
    score exceeds ``bg_threshold``; each channel's pixels are split into
    4-connected components, one detection each, scored by the channel's
    maximum over it, or 0 for a component smaller than ``min_fragment`` of
    the image. As IRNet's make_ins_seg_labels.
    """
    height, width = scores.shape[1:]
    owner = np.concatenate([np.full((1, height, width), bg_threshold, scores.dtype), scores]).argmax(0)
    smallest = min_fragment * height * width

    def score(channel: int, component: np.ndarray) -> float:
        return 0.0 if component.sum() < smallest else float(scores[channel][component].max())

    regions = [owner == channel + 1 for channel in range(len(class_labels))]
    return _components((height, width), regions, class_labels, score)


def instance_masks(cam: np.ndarray, keys: np.ndarray, boundary: torch.Tensor, displacement: np.ndarray,
                   size: tuple[int, int], radius: int = 5, beta: float = 10, exp_times: int = 8,
                   bg_threshold: float = 0.25, centroid_steps: int = 300, weak_displacement: float = 2.5,
                   min_fragment: float = 0.01) -> Instances:
    """One image's instances from its stride-4 CAMs (C, h, w) of 0-based classes ``keys``, boundary and field.

    Each class CAM is split by the instance masks of the clustered centroids;
    the C x I maps are walked over the boundary together and detected.
    """
    groups = cluster_centroids(refine_centroids(displacement, centroid_steps), displacement, weak_displacement)
    cams = torch.from_numpy(cam)[:, None] * torch.from_numpy(groups)[None].to(torch.float32)
    cams = cams.reshape(-1, *cam.shape[1:]).to(boundary.device)
    scores = walk_to_image(cams, boundary, size, radius, beta, exp_times).cpu().numpy()
    return detect_instances(scores, np.repeat(np.asarray(keys) + 1, len(groups)), bg_threshold, min_fragment)


def semantic_components(mask: np.ndarray, high_res: np.ndarray, keys: np.ndarray) -> Instances:
    """Baseline instances: each 4-connected component of each class of a semantic mask, scored by its mean CAM.

    ``high_res`` (C, H, W) holds the image-size CAMs of 0-based classes ``keys``.
    """
    return _components(mask.shape, [mask == key + 1 for key in keys], [int(key) + 1 for key in keys],
                       lambda index, component: float(high_res[index][component].mean()))
