"""The segmentation network of ``deeplab.*``, fresh or with a run's trained weights."""
from __future__ import annotations

from pathlib import Path

import torch

from deeplab.model import MultiScale, deeplab_v2
from irnet_moana.outputs import DEEPLAB, MODEL
from irnet_moana.run import resolve_weights
from irnet_moana.training import load_weights


def deeplab_net(cfg: dict, num_classes: int, weights: str | None = None) -> MultiScale:
    """DeepLab v2 for ``num_classes`` foreground classes plus background.

    ``weights`` overrides ``deeplab.weights`` (e.g. ``"none"`` before loading
    trained weights); ``{run_dir}`` in a path is this run's directory.
    """
    d = cfg["deeplab"]
    value = resolve_weights(d["weights"] if weights is None else weights, Path(cfg["run_dir"]))
    return deeplab_v2(num_classes + 1, depth=d["depth"], weights=value, scales=d["scales"], freeze_bn=d["freeze_bn"])


def trained_deeplab(cfg: dict, num_classes: int, device: torch.device) -> MultiScale:
    """The trained ``<run_dir>/deeplab/model.pth`` in eval mode on ``device``."""
    model = deeplab_net(cfg, num_classes, weights="none")
    load_weights(Path(cfg["run_dir"]) / DEEPLAB / MODEL, model)
    return model.to(device).eval()
