"""The instance-examples figure: IRNet's displacement field, its centroid groups and instances, beside the
semantic-component baseline and the ground-truth objects."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .. import io
from ..data import transforms as T
from ..data.voc import OBJECT_DIR, VOCData
from ..instances import cluster_centroids, refine_centroids
from ..io import IGNORE
from ..models.build import trained_irnet
from ..outputs import INSTANCE_BASELINE, INSTANCE_MASKS
from .drawing import Row, colour_labels, display_size, displacement_picture, draw_grid
from .inputs import NUM_IMAGES, LazyModel, attempt, image_tensor, optional_label_png


def centroid_groups(displacement: np.ndarray, cfg: dict) -> np.ndarray:
    """(h, w) group ids (1..) of the clustered centroids, 0 where a centroid lands."""
    centroids = refine_centroids(displacement, cfg["instance"]["centroid_steps"])
    groups = cluster_centroids(centroids, displacement, cfg["instance"]["weak_displacement"]).argmax(0) + 1
    groups[centroids[0], centroids[1]] = 0
    return groups.astype(np.uint8)


def instance_stems(cfg: dict, num_images: int = NUM_IMAGES) -> list[str]:
    """Images of ``data.eval_list`` with two or more objects of one class (ground truth) first, then the first others."""
    data = VOCData(cfg["data"]["root"])
    stems = data.split(cfg["data"]["eval_list"])
    objects, classes = data.root / OBJECT_DIR, data.root / "SegmentationClass"
    if not objects.is_dir():
        return stems[:num_images]
    chosen = []
    for stem in stems:
        ids = optional_label_png(objects / f"{stem}.png")
        if ids is None:
            continue
        labels = io.load_label_png(classes / f"{stem}.png")
        per_class = [labels[ids == k][0] for k in set(np.unique(ids).tolist()) - {0, IGNORE}]
        if len(per_class) > len(set(per_class)):
            chosen.append(stem)
        if len(chosen) == num_images:
            break
    return (chosen + [stem for stem in stems if stem not in chosen])[:num_images]


def instance_figure(cfg: dict, run_dir: Path, stems: Sequence[str], device: torch.device,
                    log: logging.Logger) -> Image.Image | None:
    """The grid image | displacement | centroid groups | IRNet instances | baseline | ground-truth objects.

    The displacement field is coloured by direction (hue) and length (brightness); the centroid groups
    colour each pixel by the region its centroid reaches, landing points black. None without IRNet's weights.
    """
    model = LazyModel("IRNet displacement field", lambda: trained_irnet(cfg, run_dir, device), log).model
    if model is None:
        return None
    data = VOCData(cfg["data"]["root"])
    titles = ["image", "displacement", "centroid groups", "IRNet instances", "semantic components",
              "ground-truth objects"]
    rows = []
    for stem in stems:
        image = data.load_image(stem)
        height, width = image.shape[:2]
        size = display_size(height, width)
        x = image_tensor(image)
        with torch.no_grad():
            displacement = model.infer(torch.stack([x, x.flip(-1)]).to(device), cfg["irn"]["crop_size"])[1]
        displacement = displacement.float().cpu().numpy()

        def full(stride4: np.ndarray) -> np.ndarray:
            return np.repeat(np.repeat(stride4, 4, 0), 4, 1)[:height, :width]

        found = [attempt(f"{folder} of {stem}", log, io.load_instances, run_dir / folder / stem)
                 for folder in (INSTANCE_MASKS, INSTANCE_BASELINE)]
        objects = optional_label_png(data.root / OBJECT_DIR / f"{stem}.png")
        pictures = [image, full(displacement_picture(displacement)),
                    full(colour_labels(centroid_groups(displacement, cfg))),
                    *[None if f is None else colour_labels(io.instance_id_map(f.masks)) for f in found],
                    None if objects is None else colour_labels(objects)]
        cells = [None if p is None else T.resize(p, size, nearest=index > 0) for index, p in enumerate(pictures)]
        rows.append(Row(stem, size, cells))
    title = f"{Path(run_dir).name}: instances (colours are instance numbers, not classes)"
    return draw_grid(title, titles, rows)
