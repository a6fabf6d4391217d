"""Networks built from a run's configuration, fresh or with the run's trained weights.

``weights`` overrides the configured initial weights; the trained loaders
pass "none" so that no ImageNet file is read only to be overwritten.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..outputs import CAM, IRN, MODEL, WSOL
from ..run import resolve_weights
from ..training import load_weights
from .cam_net import CAMNet
from .irn import IRNet
from .wsol_net import WSOLNet


def _weights(cfg: dict, section: str, weights: str | None) -> str:
    return resolve_weights(cfg[section]["weights"] if weights is None else weights, Path(cfg["run_dir"]))


def cam_net(cfg: dict, num_classes: int, weights: str | None = None) -> CAMNet:
    """The classifier of ``cam.*`` (MoANA on or off)."""
    c = cfg["cam"]
    return CAMNet(num_classes, backbone=c["backbone"], weights=_weights(cfg, "cam", weights),
                  strides=c["strides"], moana=c["moana"], moana_calibration=c["moana_calibration"],
                  moana_view_conv=c["moana_view_conv"], freeze_bn=c["freeze_bn"], freeze_stem=c["freeze_stem"])


def trained_cam_net(cfg: dict, num_classes: int, run_dir: Path, device: torch.device) -> CAMNet:
    """This run's trained classifier, in eval mode on ``device``."""
    model = cam_net(cfg, num_classes, weights="none")
    load_weights(run_dir / CAM / MODEL, model)
    return model.to(device).eval()


def irnet(cfg: dict, weights: str | None = None) -> IRNet:
    """IRNet of ``irn.*``."""
    c = cfg["irn"]
    return IRNet(c["backbone"], _weights(cfg, "irn", weights), c["strides"])


def trained_irnet(cfg: dict, run_dir: Path, device: torch.device) -> IRNet:
    """This run's trained IRNet, in eval mode and channels-last on ``device``, for inference."""
    model = irnet(cfg, weights="none")
    load_weights(run_dir / IRN / MODEL, model)
    return model.to(device, memory_format=torch.channels_last).eval()


def wsol_net(cfg: dict, weights: str | None = None) -> WSOLNet:
    """The localisation network of ``wsol.*``."""
    w = cfg["wsol"]
    return WSOLNet(w["num_classes"], backbone=w["backbone"], weights=_weights(cfg, "wsol", weights),
                   moana=w["moana"], moana_calibration=w["moana_calibration"],
                   moana_view_conv=w["moana_view_conv"], strides=w["strides"])


def wsol_weights(run_dir: Path) -> Path:
    """Where train_wsol writes the final weights of a run."""
    return run_dir / WSOL / MODEL
