"""Stage 8: IRNet's instance masks from its displacement field and boundary map, and a COCO export.

Beside them, the baseline instances: the connected components of each class
of the semantic pseudo mask, scored by their mean CAM.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import distributed, io
from ..coco_export import export_coco
from ..data.datasets import InferenceDataset, collate_single
from ..data.cams import label_keys, load_cam
from ..data.voc import DatasetError, VOCData
from ..instances import instance_masks, semantic_components
from ..models.build import trained_irnet
from ..outputs import CAMS, INSTANCE_BASELINE, INSTANCE_COCO, INSTANCE_MASKS, PSEUDO_MASKS
from ..run import pending, progress, start_run
from ..training import autocast

OUTPUTS = (INSTANCE_MASKS, INSTANCE_BASELINE, INSTANCE_COCO)


def _empty(size: tuple[int, int]) -> io.Instances:
    return io.Instances(np.zeros((0, *size), bool), np.zeros(0, np.int64), np.zeros(0))


def run(cfg: dict) -> Path:
    """Write ``<run_dir>/instance_masks/<id>.{png,json}`` (and the baseline's) for ``instance.list``."""
    run_ = start_run(cfg, "make_instance_masks", precision_key="instance.infer_precision")
    c, p = cfg["instance"], cfg["pseudo"]
    data = VOCData(cfg["data"]["root"])
    stems = data.split(c["list"])
    labels = data.image_labels(stems)
    out_dir, baseline_dir = run_.path(INSTANCE_MASKS), run_.path(INSTANCE_BASELINE)
    cam_dir, mask_dir = run_.path(CAMS), run_.path(PSEUDO_MASKS)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline_dir.mkdir(parents=True, exist_ok=True)
    missing = set(pending(stems, out_dir, ".json", run_.log)) | set(pending(stems, baseline_dir, ".json", run_.log))
    todo = [stem for stem in stems if stem in missing]
    if todo:
        model = trained_irnet(cfg, run_.dir, run_.device)
        loader = DataLoader(InferenceDataset(data, todo, [1.0]), batch_size=1,
                            num_workers=cfg["data"]["num_workers"], collate_fn=collate_single)
        for sample in progress(loader, len(todo), "make_instance_masks"):
            stem, size = sample["name"], tuple(sample["size"])
            keys = label_keys(labels[stem])
            if keys.size == 0:
                found = baseline = _empty(size)
            else:
                cam = load_cam(cam_dir / f"{stem}.npz", keys)
                images = sample["pyramid"][0].to(run_.device).contiguous(memory_format=torch.channels_last)
                with autocast(run_.device, run_.precision):
                    boundary, displacement = model.infer(images, cfg["irn"]["crop_size"])
                found = instance_masks(cam["cam"], keys, boundary.float(), displacement.float().cpu().numpy(), size,
                                       p["radius"], p["beta"], p["exp_times"], c["bg_threshold"],
                                       c["centroid_steps"], c["weak_displacement"], c["min_fragment"])
                mask_path = mask_dir / f"{stem}.png"
                if not mask_path.is_file():
                    raise DatasetError(f"pseudo mask {mask_path} is missing for the baseline instances; "
                                       f"instance.list must lie within pseudo.list (run make_pseudo_masks)")
                baseline = semantic_components(io.load_label_png(mask_path), cam["high_res"], keys)
            io.save_instances(out_dir / stem, found)
            io.save_instances(baseline_dir / stem, baseline)
    distributed.barrier()  # every rank's images are in before the export reads them all
    if distributed.is_main():
        coco = export_coco(out_dir, stems, data.names, run_.path(INSTANCE_COCO))
        run_.log.info("COCO annotations of %d images, %d instances: %s", coco["images"], coco["annotations"],
                      coco["path"])
    run_.finish(f"instance masks of {len(todo)} images written ({run_.precision.name}); COCO export {INSTANCE_COCO}",
                out_dir)
    return out_dir
