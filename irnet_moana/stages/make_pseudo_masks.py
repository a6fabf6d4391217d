"""Stage 6: pseudo masks by a random walk of the stride-4 CAMs over IRNet's boundary affinities."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import io
from ..data.datasets import InferenceDataset, collate_single
from ..data.cams import label_keys, load_cam
from ..data.voc import VOCData
from ..models.build import trained_irnet
from ..outputs import CAMS, PSEUDO_MASKS
from ..random_walk import walk_to_image
from ..run import pending, progress, start_run
from ..training import autocast

OUTPUTS = (PSEUDO_MASKS,)


def walk_to_labels(cam: np.ndarray, keys: np.ndarray, boundary: torch.Tensor, size: tuple[int, int],
                   radius: int = 5, beta: float = 10, exp_times: int = 8, bg_threshold: float = 0.25) -> np.ndarray:
    """Random-walk the stride-4 CAMs, upsample x4, crop, divide by the global max, add background, argmax."""
    up = walk_to_image(torch.from_numpy(cam).to(boundary.device), boundary, size, radius, beta, exp_times)
    scores = F.pad(up, (0, 0, 0, 0, 1, 0), value=bg_threshold)
    return np.r_[0, keys + 1][scores.argmax(0).cpu().numpy()].astype(np.uint8)


def run(cfg: dict) -> Path:
    """Write ``<run_dir>/pseudo_masks/<id>.png`` for every image of ``pseudo.list`` not done yet."""
    run_ = start_run(cfg, "make_pseudo_masks", precision_key="pseudo.infer_precision")
    p = cfg["pseudo"]
    data = VOCData(cfg["data"]["root"])
    stems = data.split(p["list"])
    labels = data.image_labels(stems)
    out_dir, cam_dir = run_.path(PSEUDO_MASKS), run_.path(CAMS)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = pending(stems, out_dir, ".png", run_.log)
    if todo:
        model = trained_irnet(cfg, run_.dir, run_.device)
        loader = DataLoader(InferenceDataset(data, todo, [1.0]), batch_size=1,
                            num_workers=cfg["data"]["num_workers"], collate_fn=collate_single)
        for sample in progress(loader, len(todo), "make_pseudo_masks"):
            stem, size = sample["name"], sample["size"]
            keys = label_keys(labels[stem])
            if keys.size == 0:
                mask = np.zeros(size, np.uint8)
            else:
                cam = load_cam(cam_dir / f"{stem}.npz", keys)["cam"]
                images = sample["pyramid"][0].to(run_.device).contiguous(memory_format=torch.channels_last)
                with autocast(run_.device, run_.precision):
                    boundary = model.infer(images, cfg["irn"]["crop_size"])[0].float()
                mask = walk_to_labels(cam, keys, boundary, size, p["radius"], p["beta"], p["exp_times"],
                                      p["bg_threshold"])
            io.save_label_png(out_dir / f"{stem}.png", mask)
    run_.finish(f"{len(todo)} pseudo masks written ({run_.precision.name} boundary maps)", out_dir)
    return out_dir
