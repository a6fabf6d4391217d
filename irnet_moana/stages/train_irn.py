"""Stage 5: train IRNet's boundary and displacement branches on the relation labels."""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from ..data.datasets import RelationDataset
from ..data.voc import VOCData, training_stems
from ..models.irn import IRNet, irn_losses
from ..run import start_run
from ..training import TrainSpec, fit, poly_lambda
from . import make_ir_labels
from .common import resolve_weights

OUT = "irn"


def build_model(cfg: dict, weights: str | None = None) -> IRNet:
    c = cfg["irn"]
    return IRNet(c["backbone"], resolve_weights(c["weights"] if weights is None else weights, Path(cfg["run_dir"])),
                 c["strides"])


def run(cfg: dict, resume: bool = False) -> Path:
    """Train and return ``<run_dir>/irn/model.pth``; skipped when it exists."""
    run_ = start_run(cfg, "train_irn", precision_key="irn.amp")
    c = cfg["irn"]
    if c["crop_size"] % 16:
        raise ConfigError(f"key 'irn.crop_size' must be a multiple of 16 (the boundary map is at stride 4 of a "
                          f"stride-16 network), got {c['crop_size']}")
    data = VOCData(cfg["data"]["root"])
    stems, _ = training_stems(data, data.split(cfg["data"]["train_list"]), run_.log)
    dataset = RelationDataset(data, stems, run_.path(make_ir_labels.OUT), cfg["seed"], c["resize_scale"],
                              c["crop_size"], c["radius"], cfg["data"]["skip_corrupt"])
    model = build_model(cfg)
    path_index = dataset.path_index

    def loss_fn(m, batch):
        edge, displacement = m(batch["image"])
        losses = irn_losses(edge, displacement, batch["bg_pos"], batch["fg_pos"], batch["neg"], path_index)
        total = (losses["pos_aff"] + losses["neg_aff"]) / 2 + (losses["dp_fg"] + losses["dp_bg"]) / 2
        return total, {k: v.item() for k, v in losses.items()}

    spec = TrainSpec(batch_size=c["batch_size"], epochs=c["epochs"],
                     num_workers=cfg["data"]["num_workers"])
    run_.log.info("training IRNet (%s) on %d relation label maps", c["backbone"], len(stems))
    final = fit(run_, model, model.param_groups(c["lr"], c["displacement_lr_mult"], c["weight_decay"]), dataset,
                spec, loss_fn, momentum=c["momentum"], weight_decay=c["weight_decay"],
                schedule=lambda total, _: poly_lambda(total, 0.9), out_dir=run_.path(OUT), resume=resume)
    run_.finish("trained", final)
    return final
