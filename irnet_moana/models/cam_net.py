"""Classification network whose class activation maps seed IRNet (WSSS).

backbone -> optional MoANA after layer4 -> 1x1 convolution classifier (no
bias) -> global average pooling. Because the classifier is linear and has no
bias, the logits equal the spatial mean of the (un-ReLU'd) class maps, so the
maps are exactly what the classification loss trains.

Learning rates (IRNet ``trainable_parameters`` + its train_cam step): the
backbone at ``lr`` and the classifier at 10x. In the MoANA authors' WSSS
code the module is appended to ``resnet50.layer4``, so its parameters land in
IRNet's *backbone* group and train at ``lr`` as well; ``moana_lr_mult=1``
reproduces that, ``moana_lr_mult=10`` treats MoANA as a new layer instead.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone
from .moana import MoANA


class CAMHead(nn.Module):
    """Optional MoANA calibration followed by a bias-free 1x1 classifier.

    Shared by :class:`CAMNet` and :class:`~irnet_moana.models.wsol_net.WSOLNet`.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        moana: bool = True,
        moana_calibration: str = "paper",
        moana_view_conv: str = "dense",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.moana = (MoANA(in_channels, calibration=moana_calibration, view_conv=moana_view_conv)
                      if moana else None)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=False)

    def calibrate(self, features: Tensor) -> Tensor:
        """Features after MoANA (unchanged without MoANA)."""
        return features if self.moana is None else self.moana(features)

    def logits(self, calibrated: Tensor) -> Tensor:
        """(N, num_classes) scores: the classifier applied to globally pooled features."""
        pooled = calibrated.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def class_maps(self, calibrated: Tensor) -> Tensor:
        """(N, num_classes, h, w) un-ReLU'd maps; their spatial mean equals the logits."""
        return F.conv2d(calibrated, self.classifier.weight)

    def moana_parameters(self) -> list[nn.Parameter]:
        """Trainable MoANA parameters (empty without MoANA)."""
        return [] if self.moana is None else [p for p in self.moana.parameters()
                                              if p.requires_grad]

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Trainable classifier parameters."""
        return [p for p in self.classifier.parameters() if p.requires_grad]


def param_group(name: str, params: list[nn.Parameter], lr: float,
                weight_decay: float) -> dict[str, Any]:
    """One optimizer parameter group; ``name`` is kept for logging and schedulers."""
    return {"name": name, "params": params, "lr": lr, "weight_decay": weight_decay}


class CAMNet(nn.Module):
    """IRNet's CAM network with MoANA after layer4.

    Args:
        num_classes: foreground classes (20 for VOC).
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        weights: ``"imagenet"``, ``"none"`` or a torchvision ResNet state-dict
            file (see :class:`Backbone`).
        strides: backbone strides of (conv1, layer2, layer3, layer4).
        moana: insert MoANA between layer4 and the classifier.
        moana_calibration: ``"paper"`` or ``"wsss_code"`` (see :class:`MoANA`).
        moana_view_conv: ``"dense"`` or ``"depthwise"`` (see :class:`MoANA`).
        freeze_bn: frozen BatchNorm in the backbone (IRNet: True).
        freeze_stem: no gradients to conv1 .. layer1 (IRNet: True).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        weights: str | os.PathLike[str] = "imagenet",
        strides: Sequence[int] = (2, 2, 2, 1),
        moana: bool = True,
        moana_calibration: str = "paper",
        moana_view_conv: str = "dense",
        freeze_bn: bool = True,
        freeze_stem: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = Backbone(backbone, weights=weights, strides=strides,
                                 freeze_bn=freeze_bn, freeze_stem=freeze_stem)
        self.head = CAMHead(self.backbone.feature_channels, num_classes, moana=moana,
                            moana_calibration=moana_calibration,
                            moana_view_conv=moana_view_conv)

    @property
    def output_stride(self) -> int:
        """Ratio between the input size and the class-map size."""
        return self.backbone.stage_strides[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (N, num_classes) for images (N, 3, H, W)."""
        return self.head.logits(self.head.calibrate(self.backbone(x)))

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        """Multilabel soft-margin loss against 0/1 labels of shape (N, num_classes)."""
        return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))

    def cams(self, x: Tensor) -> Tensor:
        """ReLU class activation maps (N, num_classes, h, w) at the output stride."""
        return F.relu(self.head.class_maps(self.head.calibrate(self.backbone(x))))

    def flip_merged_cams(self, x: Tensor) -> Tensor:
        """CAMs of the images plus the un-flipped CAMs of their horizontal flips.

        Images and flips go through the network as one batch of 2N, as in
        IRNet's CAM inference; returns (N, num_classes, h, w).
        """
        maps = self.cams(torch.cat([x, x.flip(-1)], dim=0))
        n = x.shape[0]
        return maps[:n] + maps[n:].flip(-1)

    def param_groups(
        self,
        lr: float,
        classifier_lr_mult: float = 10.0,
        weight_decay: float = 1e-4,
        moana_lr_mult: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Optimizer groups: ``backbone`` at ``lr``, ``moana`` at ``lr * moana_lr_mult``
        (the authors' code: 1, see the module docstring), ``classifier`` at
        ``lr * classifier_lr_mult`` (IRNet: 10). Only trainable parameters are
        listed; empty groups are left out.
        """
        groups = [
            param_group("backbone", self.backbone.trainable_parameters(), lr, weight_decay),
            param_group("moana", self.head.moana_parameters(), lr * moana_lr_mult, weight_decay),
            param_group("classifier", self.head.classifier_parameters(),
                        lr * classifier_lr_mult, weight_decay),
        ]
        return [g for g in groups if g["params"]]
