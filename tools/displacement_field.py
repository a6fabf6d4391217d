"""How well a trained IRNet's displacement field points at instance centres, against ground-truth objects.

    .venv/bin/python tools/displacement_field.py RUN_DIR [--list train] [--json OUT]

Reads the run's configuration (``logs/train_irn.config.yaml``) and IRNet
(``irn/model.pth``), computes each listed image's field as make_instance_masks
does (scale 1.0, mean shift subtracted, at the boundary map's stride 4) and
compares it with the dataset's ``SegmentationObject`` objects (the void band
excluded), subsampled to that stride. Means over all listed images:

* objects: the cosine between the field and the direction from each pixel to
  its object's centroid, and the ratio of the field's length to that
  distance (1 for a perfect field), over pixels more than ``--min-distance``
  map pixels from the centroid (nearer, the direction is ill defined);
* background: the field's length (instance.weak_displacement beside it:
  IRNet's clusters need the background below it), and the cosine between the
  field and the direction to the image centre. IRNet's losses only ask
  neighbouring background pixels to agree, so a slow pull towards the middle
  of the image costs little there, and it carries every centroid to one point.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from irnet_moana import io
from irnet_moana.cli import main_guard
from irnet_moana.config import load_config
from irnet_moana.data.datasets import InferenceDataset
from irnet_moana.data.voc import OBJECT_DIR, VOCData
from irnet_moana.instance_eval import gt_instances
from irnet_moana.models.build import trained_irnet
from irnet_moana.precision import choose
from irnet_moana.run import resolve_device
from irnet_moana.training import autocast

STRIDE = 4


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between (2, n) vector sets, 0 where either is zero."""
    norms = np.hypot(*a) * np.hypot(*b)
    return np.divide((a * b).sum(0), norms, out=np.zeros_like(norms), where=norms > 0)


def object_agreement(displacement: np.ndarray, masks: np.ndarray, min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, length ratios) of the field (2, h, w) against the directions to each object's centroid.

    ``masks`` (I, h, w) are the objects at the field's resolution; pixels within
    ``min_distance`` of their centroid are left out.
    """
    grid = np.mgrid[:displacement.shape[1], :displacement.shape[2]].astype(np.float64)
    cosines, ratios = [], []
    for mask in masks:
        points = grid[:, mask]
        target = points.mean(1, keepdims=True) - points
        distance = np.hypot(*target)
        far = distance > min_distance
        field = displacement[:, mask][:, far]
        cosines.append(_cosine(field, target[:, far]))
        ratios.append(np.hypot(*field) / distance[far])
    return np.concatenate([np.zeros(0), *cosines]), np.concatenate([np.zeros(0), *ratios])


def background_field(displacement: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, cosines to the image centre) of the field (2, h, w) on the ``background`` (h, w) pixels."""
    height, width = displacement.shape[1:]
    grid = np.mgrid[:height, :width].astype(np.float64)
    to_centre = np.array([(height - 1) / 2, (width - 1) / 2])[:, None] - grid[:, background]
    field = displacement[:, background]
    return np.hypot(*field), _cosine(field, to_centre)


def analyse(run_dir: Path, split: str, min_distance: float) -> dict:
    config_path = run_dir / "logs" / "train_irn.config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"{config_path} is missing: {run_dir} has no trained IRNet (run train_irn first)")
    cfg = load_config(config_path)
    device = resolve_device(cfg["device"])
    precision = choose(cfg["instance"]["infer_precision"], device, "instance.infer_precision")
    model = trained_irnet(cfg, run_dir, device)
    data = VOCData(cfg["data"]["root"])
    stems = data.split(split)
    cosines, ratios, lengths, pulls = [], [], [], []
    for sample in InferenceDataset(data, stems, [1.0]):
        with autocast(device, precision):
            _, displacement = model.infer(sample["pyramid"][0].to(device), cfg["irn"]["crop_size"])
        field = displacement.float().cpu().numpy().astype(np.float64)
        masks = gt_instances(data.root, sample["name"]).masks[:, ::STRIDE, ::STRIDE]
        ids = io.load_label_png(data.root / OBJECT_DIR / f"{sample['name']}.png")[::STRIDE, ::STRIDE]
        cosine, ratio = object_agreement(field, masks, min_distance)
        length, pull = background_field(field, ids == 0)
        cosines.append(cosine)
        ratios.append(ratio)
        lengths.append(length)
        pulls.append(pull)
    return {
        "run_dir": str(run_dir), "list": split, "num_images": len(stems), "precision": precision.name,
        "min_distance": min_distance, "weak_displacement": cfg["instance"]["weak_displacement"],
        "object_cosine": float(np.concatenate(cosines).mean()),
        "object_length_ratio": float(np.concatenate(ratios).mean()),
        "background_length": float(np.concatenate(lengths).mean()),
        "background_cosine_to_centre": float(np.concatenate(pulls).mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--list", default="train", help="image list of the dataset (default train)")
    parser.add_argument("--min-distance", type=float, default=2.0,
                        help="object pixels nearer their centroid than this (map pixels) are left out (default 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    result = analyse(args.run_dir, args.list, args.min_distance)
    print(f"{result['num_images']} {args.list} images, {result['precision']}; objects: cosine to the centroid "
          f"{result['object_cosine']:.2f}, length / distance {result['object_length_ratio']:.2f}; background: "
          f"length {result['background_length']:.2f} map px (weak displacement {result['weak_displacement']}), "
          f"cosine to the image centre {result['background_cosine_to_centre']:.2f}")
    if args.json:
        io.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main_guard(main)
