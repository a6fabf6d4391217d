"""Stage 5: train IRNet's boundary and displacement branches on the relation labels."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import ConfigError
from ..data import transforms as T
from ..data.datasets import RelationDataset
from ..data.voc import VOCData, training_stems
from ..models.build import irnet
from ..models.irn import IRNet, irn_losses
from ..outputs import IR_LABELS, IRN
from ..precision import Precision
from ..run import start_run
from ..training import TrainSpec, autocast, fit, poly_lambda

OUTPUTS = (IRN,)


@torch.no_grad()
def measure_displacement_mean(model: IRNet, data: VOCData, stems: Sequence[str], crop_size: int, batch_size: int,
                              device: torch.device, precision: Precision) -> torch.Tensor:
    """IRNet's mean shift, stored in ``model.displacement_mean`` and returned.

    As IRNet's train_irn: each image normalised and top-left cropped (zero
    padded) to the training crop, the field's mean per batch in eval mode,
    then the mean of the batch means. IRNet drops a last partial batch; so
    does this, unless there is no full batch at all.
    """
    model.eval()
    model.displacement_mean.zero_()
    full = len(stems) // batch_size * batch_size
    stems = list(stems[:full] if full else stems)
    means = []
    for start in range(0, len(stems), batch_size):
        crops = [T.to_chw(T.top_left_crop(T.normalize(data.load_image(stem)), crop_size))
                 for stem in stems[start:start + batch_size]]
        images = torch.from_numpy(np.stack(crops)).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            _, displacement = model(images)
        means.append(displacement.float().mean(dim=(0, 2, 3)))
    model.displacement_mean.copy_(torch.stack(means).mean(0))
    return model.displacement_mean.clone()


def run(cfg: dict, resume: bool = False) -> Path:
    """Train and return ``<run_dir>/irn/model.pth``; skipped when it exists."""
    run_ = start_run(cfg, "train_irn", precision_key="irn.amp")
    c = cfg["irn"]
    if c["crop_size"] % 16:
        raise ConfigError(f"key 'irn.crop_size' must be a multiple of 16 (the boundary map is at stride 4 of a "
                          f"stride-16 network), got {c['crop_size']}")
    data = VOCData(cfg["data"]["root"])
    stems, _ = training_stems(data, data.split(cfg["data"]["train_list"]), run_.log)
    dataset = RelationDataset(data, stems, run_.path(IR_LABELS), cfg["seed"], c["resize_scale"],
                              c["crop_size"], c["radius"], cfg["data"]["skip_corrupt"])
    model = irnet(cfg)
    path_index = dataset.path_index

    def loss_fn(m, batch):
        edge, displacement = m(batch["image"])
        losses = irn_losses(edge, displacement, batch["bg_pos"], batch["fg_pos"], batch["neg"], path_index)
        total = (losses["pos_aff"] + losses["neg_aff"]) / 2 + (losses["dp_fg"] + losses["dp_bg"]) / 2
        return total, {k: v.item() for k, v in losses.items()}

    spec = TrainSpec(batch_size=c["batch_size"], epochs=c["epochs"],
                     num_workers=cfg["data"]["num_workers"])
    mean_stems = data.split(cfg["data"]["eval_list"])

    def mean_shift(trained: IRNet) -> None:
        mean = measure_displacement_mean(trained, data, mean_stems, c["crop_size"], c["batch_size"], run_.device,
                                         run_.precision)
        run_.log.info("mean displacement over %d %s images: (%.4f, %.4f)", len(mean_stems),
                      cfg["data"]["eval_list"], *mean.tolist())

    run_.log.info("training IRNet (%s) on %d relation label maps", c["backbone"], len(stems))
    final = fit(run_, model, model.param_groups(c["lr"], c["displacement_lr_mult"], c["weight_decay"]), dataset,
                spec, loss_fn, momentum=c["momentum"], weight_decay=c["weight_decay"],
                schedule=lambda total, _: poly_lambda(total, 0.9), out_dir=run_.path(IRN), resume=resume,
                after_training=mean_shift)
    run_.finish("trained", final)
    return final
