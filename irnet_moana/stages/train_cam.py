"""Stage 1: train the (MoANA-augmented) CAM classifier on image-level labels."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import distributed, io
from ..data.datasets import ClassificationDataset
from ..data.voc import VOCData, training_stems
from ..models.build import cam_net
from ..models.cam_net import CAMNet
from ..outputs import CAM, CAM_BACKBONE, MODEL
from ..run import start_run
from ..training import TrainSpec, fit, poly_lambda

OUTPUTS = (CAM,)



def run(cfg: dict, resume: bool = False) -> Path:
    """Train and return the final weights path (``<run_dir>/cam/model.pth``); skipped when it exists."""
    run_ = start_run(cfg, "train_cam", precision_key="cam.amp")
    out_dir = run_.path(CAM)
    final = out_dir / MODEL
    if final.is_file() and (out_dir / CAM_BACKBONE).is_file():
        run_.finish("already trained; skipping", final)
        return final
    c = cfg["cam"]
    data = VOCData(cfg["data"]["root"])
    stems, labels = training_stems(data, data.split(cfg["data"]["train_list"]), run_.log)
    dataset = ClassificationDataset(data, stems, labels, cfg["seed"], c["resize_long"], c["crop_size"],
                                    c["color_jitter"], cfg["data"]["skip_corrupt"])
    model = cam_net(cfg, data.num_classes)
    spec = TrainSpec(batch_size=c["batch_size"], epochs=c["epochs"], max_steps=c["max_steps"],
                     num_workers=cfg["data"]["num_workers"])
    run_.log.info("training CAM network (%s, MoANA %s) on %d images", c["backbone"], c["moana"], len(stems))
    final = fit(run_, model, model.param_groups(c["lr"], c["classifier_lr_mult"], c["weight_decay"]), dataset, spec,
                lambda m, b: (CAMNet.loss(m(b["image"]).float(), b["label"]), {}),
                momentum=c["momentum"], weight_decay=c["weight_decay"],
                schedule=lambda total, _: poly_lambda(total, 0.9), out_dir=out_dir, resume=resume)
    # The trained backbone in torchvision's format lets later stages start from it
    # (the demo has no ImageNet weights): weights: "{run_dir}/cam/backbone.pth".
    if distributed.is_main():
        with io.atomic_path(out_dir / CAM_BACKBONE) as tmp:
            torch.save(model.backbone.state_dict(), tmp)
    run_.finish("trained", final)
    return final
