"""DeepLab v2 (Chen et al., TPAMI 2017) as trained in deeplab-pytorch.

The network is a torchvision ResNet run at output stride 8 (layer3 and
layer4 dilated by 2 and 4 instead of strided) with frozen BatchNorm, followed
by ASPP-v2: four parallel 3x3 convolutions at rates 6, 12, 18, 24 straight to
class logits, summed. :class:`MultiScale` runs it on several input scales and
fuses the logits by a pixel-wise max. Use :func:`deeplab_v2` to build it,
:func:`param_groups` for the optimizer and :func:`resize_labels` to bring
labels to each logit map's size for the loss.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

DEPTHS = (18, 34, 50, 101)
ASPP_RATES = (6, 12, 18, 24)
DEFAULT_SCALES = (1.0, 0.75, 0.5)
OUTPUT_STRIDE = 8
# Learning-rate multipliers of the ASPP head relative to the backbone
# (deeplab-pytorch's get_params, after Caffe's lr_mult in train.prototxt).
HEAD_WEIGHT_LR_MULT = 10.0
HEAD_BIAS_LR_MULT = 20.0
# Caffe convention for biases (lr_mult 2, decay_mult 0); torchvision's ResNet
# has no biases outside BatchNorm, so this only matters for other backbones.
BACKBONE_BIAS_LR_MULT = 2.0


class ASPP(nn.Module):
    """ASPP-v2 head: parallel dilated 3x3 convolutions to logits, summed.

    Initialised as deeplab-pytorch does (weights N(0, 0.01), biases 0), which
    keeps the initial logits small whatever the backbone's activation scale.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=rate, dilation=rate, bias=True)
            for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Sum of the branch outputs: (N, num_classes, H, W) logits."""
        return sum(branch(features) for branch in self.branches)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """All of it: trained from scratch at the head's learning rates."""
        return self.parameters()


def _dilate_(layer: nn.Module, rate: int) -> None:
    """Turn a strided ResNet stage into a dilated one, in place.

    Every block of the stage gets the same rate, including the first (as in
    the original DeepLab and deeplab-pytorch; torchvision's
    ``replace_stride_with_dilation`` keeps the previous rate in the first
    block and refuses BasicBlock, so ResNet-18/34 could not use it).
    """
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size != (1, 1):
                module.dilation = (rate, rate)
                module.padding = tuple(rate * (k // 2) for k in module.kernel_size)


def resnet_backbone(depth: int, freeze_bn: bool = True) -> tuple[nn.Sequential, int]:
    """A randomly initialised output-stride-8 ResNet, with frozen BatchNorm unless ``freeze_bn`` is False.

    Returns the feature extractor (torchvision's module names, so a
    torchvision ResNet state dict without ``fc.*`` loads into it unchanged)
    and its number of output channels. Trainable BatchNorm is for training
    from random weights (the demo), where frozen identity statistics leave
    the activations unnormalised.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth}")
    norm_layer = FrozenBatchNorm2d if freeze_bn else nn.BatchNorm2d
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm_layer)
    _dilate_(resnet.layer3, 2)
    _dilate_(resnet.layer4, 4)
    channels = resnet.fc.in_features
    features = nn.Sequential(OrderedDict(
        (name, module) for name, module in resnet.named_children() if name not in ("avgpool", "fc")
    ))
    return features, channels


class DeepLabV2(nn.Module):
    """Single-scale DeepLab v2: dilated ResNet features then ASPP logits at stride 8."""

    def __init__(self, num_classes: int, depth: int = 101, freeze_bn: bool = True) -> None:
        super().__init__()
        self.depth = depth
        self.backbone, channels = resnet_backbone(depth, freeze_bn)
        self.aspp = ASPP(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, num_classes, ceil(H/8), ceil(W/8)) logits."""
        return self.aspp(self.backbone(images))


class MultiScale(nn.Module):
    """Runs a segmentation model at several input scales and max-fuses the logits.

    Each scale ``s`` resizes the input (bilinear) to ``int(H*s) x int(W*s)``;
    every logit map is resized (bilinear) to the size of the scale-1.0
    logits and the fused output is their element-wise max. In training mode
    the forward returns ``[logits at each scale in the order of scales...,
    fused]`` so that a loss can be put on each; in eval mode only the fused
    logits. With the single scale 1.0 there is nothing to fuse: training
    returns ``[logits]`` alone (the fused copy would be the same map, and
    its loss would count it twice, as doubling the learning rate).
    """

    def __init__(self, base: nn.Module, scales: Sequence[float] = DEFAULT_SCALES) -> None:
        super().__init__()
        scales = tuple(float(s) for s in scales)
        if 1.0 not in scales:
            raise ValueError(f"scales must include 1.0 (the fused output's resolution), got {scales}")
        if any(s <= 0 for s in scales):
            raise ValueError(f"scales must be positive, got {scales}")
        self.base = base
        self.scales = scales

    def output_names(self) -> list[str]:
        """Names of the training-mode outputs, in order: each scale, then the fused max if there are several."""
        return [f"x{s:g}" for s in self.scales] + (["max"] if len(self.scales) > 1 else [])

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Per-scale logits plus fused logits (training) or fused logits (eval)."""
        height, width = images.shape[-2:]
        logits = []
        for scale in self.scales:
            size = (max(1, int(height * scale)), max(1, int(width * scale)))
            scaled = images if size == (height, width) else F.interpolate(
                images, size=size, mode="bilinear", align_corners=False
            )
            logits.append(self.base(scaled))
        if len(logits) == 1:
            return logits if self.training else logits[0]
        reference = logits[self.scales.index(1.0)].shape[-2:]
        aligned = [
            x if x.shape[-2:] == reference
            else F.interpolate(x, size=reference, mode="bilinear", align_corners=False)
            for x in logits
        ]
        fused = torch.stack(aligned).amax(dim=0)
        return logits + [fused] if self.training else fused


def _imagenet_state_dict(depth: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet weights, from torch hub's cache or the network."""
    entry = torchvision.models.get_weight(f"ResNet{depth}_Weights.IMAGENET1K_V1")
    try:
        return torch.hub.load_state_dict_from_url(entry.url, map_location="cpu", progress=False)
    except Exception as error:
        filename = os.path.basename(entry.url)
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"could not get ImageNet weights for resnet{depth} ({error}). Without network access, "
            f"download {entry.url} elsewhere and either put it as {os.path.join(cache, filename)} "
            f"(torch hub's checkpoint cache; $TORCH_HOME moves it) or pass the file's path as weights."
        ) from error


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict with ``weights_only=True``; any failure names the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"cannot read weights file {path}: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"weights file {path} does not hold a state dict (name -> tensor)")
    return state


def load_weights(model: DeepLabV2, path: str | os.PathLike) -> None:
    """Load a weights file into ``model``.

    Accepted: a torchvision ResNet state dict of the same depth (``fc.*``
    ignored; the ASPP keeps its initialisation) or a DeepLab state dict saved
    from :class:`DeepLabV2` or its :class:`MultiScale` wrapper. Keys must
    match exactly otherwise.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        RuntimeError: unreadable file or mismatched keys/shapes (names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file {path} is not a file (weights must be 'imagenet', 'none' or a file path)"
        )
    state = _read_state_dict(path)
    if any(key.startswith("base.") for key in state):
        state = {key.removeprefix("base."): value for key, value in state.items()}
    is_deeplab = any(key.startswith(("backbone.", "aspp.")) for key in state)
    target = model if is_deeplab else model.backbone
    if not is_deeplab:
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    kind = "DeepLab" if is_deeplab else f"ResNet-{model.depth}"
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"weights file {path} does not match a {kind} model: {error}") from error


def deeplab_v2(
    num_classes: int,
    depth: int = 101,
    weights: str | os.PathLike = "none",
    scales: Sequence[float] = DEFAULT_SCALES,
    freeze_bn: bool = True,
) -> MultiScale:
    """Build DeepLab v2 with its multi-scale wrapper.

    Args:
        num_classes: number of output classes (21 for VOC).
        depth: ResNet depth, one of 18, 34, 50, 101.
        weights: ``"imagenet"`` (torchvision's IMAGENET1K_V1 backbone, via
            torch hub's cache), ``"none"`` (random backbone) or a file path
            (see :func:`load_weights`).
        scales: input scales of :class:`MultiScale`; must include 1.0.
        freeze_bn: frozen BatchNorm (DeepLab's recipe); False trains it.
    """
    model = DeepLabV2(num_classes, depth, freeze_bn)
    if weights == "imagenet":
        state = {k: v for k, v in _imagenet_state_dict(depth).items() if not k.startswith("fc.")}
        model.backbone.load_state_dict(state, strict=True)
    elif weights != "none":
        load_weights(model, weights)
    return MultiScale(model, scales)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """SGD parameter groups with deeplab-pytorch's learning-rate multipliers.

    Backbone weights: ``lr`` with ``weight_decay``. Head weights (DeepLab
    v2's ASPP, an smp model's decoder and segmentation head: whatever a
    module's ``head_parameters()`` yields): 10x ``lr`` with
    ``weight_decay``; head biases: 20x ``lr`` without weight decay.
    Backbone biases (none in torchvision's ResNet with frozen BatchNorm; the
    BatchNorm scales and shifts when it is trainable) get 2x ``lr`` without
    weight decay. Only parameters with ``requires_grad`` are included; empty
    groups are left out. Each group carries a ``name`` for logging.
    """
    head = {id(p) for m in model.modules() if hasattr(m, "head_parameters") for p in m.head_parameters()}
    groups: dict[str, list[nn.Parameter]] = {
        "backbone_weight": [], "backbone_bias": [], "head_weight": [], "head_bias": [],
    }
    for param in model.parameters():
        if not param.requires_grad:
            continue
        part = "head" if id(param) in head else "backbone"
        kind = "bias" if param.ndim <= 1 else "weight"
        groups[f"{part}_{kind}"].append(param)
    settings = {
        "backbone_weight": (lr, weight_decay),
        "backbone_bias": (BACKBONE_BIAS_LR_MULT * lr, 0.0),
        "head_weight": (HEAD_WEIGHT_LR_MULT * lr, weight_decay),
        "head_bias": (HEAD_BIAS_LR_MULT * lr, 0.0),
    }
    return [
        {"name": name, "params": params, "lr": settings[name][0], "weight_decay": settings[name][1]}
        for name, params in groups.items()
        if params
    ]


def logit_size(size: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
    """Logit map size of :class:`DeepLabV2` for an (H, W) input seen at ``scale``.

    The input is resized to ``int(H*scale) x int(W*scale)`` as
    :class:`MultiScale` does; the stride-2 conv1, max pool and layer2 each
    map ``n`` to ``ceil(n/2)``, hence ``ceil(n/8)`` overall.
    """
    return tuple((max(1, int(n * scale)) - 1) // OUTPUT_STRIDE + 1 for n in size)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (N, H, W) integer labels to (N, *size), int64.

    Samples at pixel centres (``floor((i + 0.5) * H / h)``), which is what
    deeplab-pytorch gets from PIL's NEAREST resize; torch's plain ``nearest``
    samples at ``floor(i * H / h)`` and shifts the labels against the
    logits. Values, 255 (ignore) included, are copied, never mixed.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (N, H, W), got {tuple(labels.shape)}")
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    # float32 holds every label value exactly, and nearest never mixes values.
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()

