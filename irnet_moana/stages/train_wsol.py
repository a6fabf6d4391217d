"""WSOL stage 1: train the localisation classifier (ResNet, optional MoANA, 1x1 classifier, GAP).

Recipe (docs/design.md, WSOL): SGD with momentum and weight decay, the
backbone at ``wsol.lr`` and the new layers (MoANA and the classifier) at
``wsol.lr * wsol.new_lr_mult``, both multiplied by ``wsol.lr_decay`` every
``wsol.lr_decay_every`` epochs; cross-entropy on the globally pooled logits.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.build import wsol_net, wsol_weights
from ..outputs import WSOL
from ..run import start_run
from ..training import TrainSpec, fit, step_lambda
from ..wsol.data import WSOLTrainDataset
from ..wsol.metadata import read_metadata

OUTPUTS = (WSOL,)
TRAIN_SPLIT = "train"



def loss_and_accuracy(model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of the logits, with the batch's top-1 accuracy for the log."""
    logits = model(batch["image"]).float()
    with torch.no_grad():
        accuracy = (logits.argmax(1) == batch["label"]).float().mean().item()
    return F.cross_entropy(logits, batch["label"]), {"acc": accuracy}


def run(cfg: dict, resume: bool = False) -> Path:
    """Train on ``<metadata_root>/train``; returns ``<run_dir>/wsol/model.pth`` (skipped when it exists)."""
    run_ = start_run(cfg, "train_wsol", precision_key="wsol.amp")
    final = wsol_weights(run_.dir)
    if final.is_file():
        run_.finish("already trained; skipping", final)
        return final
    w = cfg["wsol"]
    metadata = read_metadata(Path(w["metadata_root"]) / TRAIN_SPLIT)
    dataset = WSOLTrainDataset(w["image_root"], metadata, w["num_classes"], cfg["seed"], w["resize_size"],
                               w["crop_size"], cfg["data"]["skip_corrupt"])
    model = wsol_net(cfg)
    spec = TrainSpec(batch_size=w["batch_size"], epochs=w["epochs"],
                     checkpoint_every=w["checkpoint_every"], num_workers=cfg["data"]["num_workers"])
    run_.log.info("training WSOL network (%s, MoANA %s) on %d images of %s, %d epochs", w["backbone"],
                  "on" if w["moana"] else "off", len(dataset), w["metadata_root"], w["epochs"])
    groups = model.param_groups(w["lr"], w["lr"] * w["new_lr_mult"], w["weight_decay"])
    final = fit(run_, model, groups, dataset, spec, loss_and_accuracy,
                momentum=w["momentum"], weight_decay=w["weight_decay"],
                schedule=lambda _, steps_per_epoch: step_lambda(steps_per_epoch, w["lr_decay_every"], w["lr_decay"]),
                out_dir=run_.path(WSOL), resume=resume)
    run_.finish("trained", final)
    return final
