"""The segmentation network of ``deeplab.*``, fresh or with a run's trained weights."""
from __future__ import annotations

from pathlib import Path

import torch

from deeplab.model import MultiScale, deeplab_v2
from irnet_moana.outputs import DEEPLAB, MODEL
from irnet_moana.run import resolve_weights
from irnet_moana.training import load_weights


def describe(cfg: dict) -> str:
    """The configured network in words, for logs."""
    d = cfg["deeplab"]
    return f"DeepLab v2 (ResNet-{d['depth']})" if d["arch"] == "v2" else f"{d['arch']} ({d['encoder']})"


def deeplab_net(cfg: dict, num_classes: int, weights: str | None = None) -> MultiScale:
    """The ``deeplab.arch`` network for ``num_classes`` foreground classes plus background.

    ``weights`` overrides ``deeplab.weights`` (e.g. ``"none"`` before loading
    trained weights); ``{run_dir}`` in a path is this run's directory. Every
    architecture runs inside :class:`MultiScale` over ``deeplab.scales``.
    """
    d = cfg["deeplab"]
    value = resolve_weights(d["weights"] if weights is None else weights, Path(cfg["run_dir"]))
    if d["arch"] == "v2":
        return deeplab_v2(num_classes + 1, depth=d["depth"], weights=value, scales=d["scales"],
                          freeze_bn=d["freeze_bn"])
    # Imported here: segmentation_models_pytorch adds about 0.4 s to the start-up of every stage
    # and worker process that imports this module, for architectures most runs do not use.
    from deeplab.smp_net import smp_net

    return MultiScale(smp_net(d["arch"], d["encoder"], num_classes + 1, value, d["freeze_bn"]), d["scales"])


def trained_deeplab(cfg: dict, num_classes: int, device: torch.device) -> MultiScale:
    """The trained ``<run_dir>/deeplab/model.pth`` in eval mode on ``device``."""
    model = deeplab_net(cfg, num_classes, weights="none")
    load_weights(Path(cfg["run_dir"]) / DEEPLAB / MODEL, model)
    return model.to(device).eval()
