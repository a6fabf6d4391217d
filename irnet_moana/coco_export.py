"""Export instance pseudo labels as a COCO instance-segmentation ``annotations.json``.

The instance folders written by :func:`irnet_moana.io.save_instances` (one
``<stem>.png`` + ``<stem>.json`` per image) become one COCO file that Mask
R-CNN trainers read directly:

* torchvision: ``CocoDetection(<root>/JPEGImages, annotations.json)`` wrapped with
  ``torchvision.datasets.wrap_dataset_for_transforms_v2(..., target_keys={"boxes", "labels", "masks"})``;
* detectron2: ``register_coco_instances(name, {}, "annotations.json", "<root>/JPEGImages")`` with
  ``cfg.INPUT.MASK_FORMAT = "bitmask"`` (masks are RLE, not polygons).

Masks are stored as compressed RLE rather than polygons so that they decode
to exactly the pseudo label (polygons would round the boundary and lose holes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from . import io
from .data.voc import DatasetError


def _instance_files(instance_dir: Path, stem: str) -> Path:
    """The stem path of an image's instance pair; a missing half raises FileNotFoundError naming it."""
    base = instance_dir / stem
    # the JSON is written after the PNG, so a PNG alone is an interrupted write: both must be present
    missing = [str(base.with_suffix(ext)) for ext in (".png", ".json") if not base.with_suffix(ext).is_file()]
    if missing:
        raise FileNotFoundError(
            f"instance pseudo label {' and '.join(missing)} missing for image '{stem}'; "
            f"run `python pipelines/make_instance_masks.py` first")
    return base


def _load(instance_dir: Path, stem: str) -> io.Instances:
    base = _instance_files(instance_dir, stem)
    try:
        return io.load_instances(base)
    except (KeyError, TypeError) as exc:
        # a JSON from something else (no "instances" list) must not pass as an image without instances
        raise io.CorruptFileError(
            f"{base.with_suffix('.json')} is not an instance list written by save_instances ({exc!r}); "
            "delete it and rerun `python pipelines/make_instance_masks.py`") from exc


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a (H, W) mask, with ``counts`` as str so it serialises to JSON."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def export_coco(instance_dir: Path, stems: Sequence[str], class_names: Sequence[str], out_path: Path,
                image_dir_name: str = "JPEGImages", min_score: float = 0.0) -> dict:
    """Write the instances of ``stems`` as a COCO annotations file at ``out_path`` (atomically).

    Images get ids 1.. in ``stems`` order and ``file_name`` ``<stem>.jpg``, relative to the
    dataset's ``image_dir_name`` folder (recorded in ``info`` for the trainer's image root).
    Categories are every class, id = the 1-based class label. Instances scoring ``<= min_score``
    are left out (IRNet scores 0 the fragments under 1% of the image: they are not detections),
    as are empty masks; an image keeps its entry even without any annotation.
    Returns a summary: images, annotations, per-category counts, what was left out, path.
    """
    instance_dir, out_path = Path(instance_dir), Path(out_path)
    stems = list(stems)
    if not stems:
        raise DatasetError(f"no images to export from {instance_dir}; "
                           "run `python pipelines/make_instance_masks.py` first or check the image list")
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        # one file under two image ids would make the trainer see the same image twice with split annotations
        raise DatasetError(f"image list names {', '.join(duplicates[:5])} more than once; list each image once")

    categories = [{"id": k + 1, "name": name, "supercategory": "none"} for k, name in enumerate(class_names)]
    per_category = {name: 0 for name in class_names}
    images: list[dict] = []
    annotations: list[dict] = []
    low_score = empty = 0
    for image_id, stem in enumerate(stems, start=1):
        inst = _load(instance_dir, stem)
        # the instance PNG has the image's size (load_instances gives (0, H, W) when there are no instances)
        height, width = inst.masks.shape[1:]
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": int(height), "width": int(width)})
        for mask, label, score in zip(inst.masks, inst.labels, inst.scores):
            if not 1 <= label <= len(class_names):
                raise DatasetError(
                    f"{instance_dir / stem}.json: class label {int(label)} outside 1..{len(class_names)}; "
                    "pass the class names of the dataset the instances were made for (--classes)")
            if score <= min_score:
                low_score += 1
                continue
            rle = encode_mask(mask)
            area = int(mask_utils.area(rle))
            if area == 0:
                empty += 1  # a zero-pixel box breaks Mask R-CNN's box regression targets
                continue
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "segmentation": rle, "area": area,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0, "score": float(score),
            })
            per_category[class_names[label - 1]] += 1

    io.write_json(out_path, {
        "info": {"description": f"instance pseudo labels from {instance_dir}", "image_dir": image_dir_name},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    })
    annotated = {a["image_id"] for a in annotations}
    return {
        "path": str(out_path),
        "images": len(images),
        "annotations": len(annotations),
        "images_without_annotations": len(images) - len(annotated),
        "left_out_low_score": low_score,
        "left_out_empty": empty,
        "per_category": per_category,
    }
