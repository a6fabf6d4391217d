"""segmentation_models_pytorch architectures (DeepLabV3+, U-Net, FPN, ...) as the final segmentation network.

:class:`SMPNet` wraps an smp model so that the DeepLab stage trains and
evaluates it like DeepLab v2: any input size (smp needs sides divisible by
its output stride, so the input is padded and the logits cropped back),
the encoder as the backbone and the decoder and segmentation head as the
head of the learning-rate groups, and optionally frozen encoder BatchNorm.
"""
from __future__ import annotations

import os
from typing import Iterator

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from irnet_moana.models.backbone import ARCHS, resnet_weights, state_mismatch

_CLASSES = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
ARCHITECTURES = tuple(sorted(_CLASSES))
# The largest output stride of smp's encoders: padding to it suits every architecture.
SIDE_MULTIPLE = 32


def _frozen_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding its statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _frozen_batchnorm(child))
    return module


class SMPNet(nn.Module):
    """An smp segmentation model taking images of any size; logits at the input's size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % SIDE_MULTIPLE, -width % SIDE_MULTIPLE
        # Zero is the mean colour of a normalised image: the padding looks like a flat grey border.
        padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        return self.model(padded)[..., :height, :width]

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Decoder and segmentation head: the layers trained from scratch at the head's learning rate."""
        yield from self.model.decoder.parameters()
        yield from self.model.segmentation_head.parameters()


def _load_encoder(model: nn.Module, encoder: str, weights: str | os.PathLike) -> None:
    """Encoder weights from torchvision's ImageNet ResNets (through the toolkit's offline-aware loader) or a file."""
    state = resnet_weights(encoder, weights)
    # as the CAM backbone loads: a file saved with frozen BatchNorm lacks only the unused step counters
    mismatch = state_mismatch(model.encoder.state_dict(), state)
    if mismatch:
        raise RuntimeError(f"weights {weights} do not match the {encoder} encoder: {mismatch}")
    model.encoder.load_state_dict(state, strict=False)


def smp_net(arch: str, encoder: str, num_classes: int, weights: str | os.PathLike = "none",
            freeze_bn: bool = False) -> SMPNet:
    """An smp architecture with ``num_classes`` outputs.

    Args:
        arch: an smp architecture name, e.g. ``DeepLabV3Plus``, ``Unet``, ``FPN``.
        encoder: an smp encoder name, e.g. ``resnet50``, ``resnet101``.
        weights: ``"imagenet"``, ``"none"`` or a file. For ResNet encoders
            ImageNet weights are torchvision's (the file DeepLab v2 uses, from
            torch hub's cache; offline, the error names the file to put
            there); for other encoders smp downloads its own. A file holds a
            torchvision-style state dict of the encoder.
        freeze_bn: the encoder's BatchNorm keeps its statistics and affine
            parameters (as DeepLab v2's recipe); False trains them.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown smp architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")
    torchvision_resnet = encoder in ARCHS
    smp_weights = "imagenet" if weights == "imagenet" and not torchvision_resnet else None
    try:
        model = _CLASSES[arch](encoder_name=encoder, encoder_weights=smp_weights, classes=num_classes)
    except KeyError as error:
        raise ValueError(f"unknown smp encoder {encoder!r} ({error})") from error
    except OSError as error:
        raise RuntimeError(f"could not download smp's ImageNet weights of {encoder} ({error}); without network "
                           f"access set deeplab.weights to a file of encoder weights or to none") from error
    if weights != "none" and smp_weights is None:
        _load_encoder(model, encoder, weights)
    if freeze_bn:
        _frozen_batchnorm(model.encoder)
    return SMPNet(model)
