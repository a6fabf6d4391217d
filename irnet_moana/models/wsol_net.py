"""Weakly supervised object localization network (CUB, ILSVRC).

ResNet with layer3 and layer4 at stride 1 (output stride 8: 28 x 28 maps at
224 x 224), trainable BatchNorm, MoANA after layer4, bias-free 1x1
classifier and global average pooling: the same head as :class:`CAMNet`.
The authors' WSOL code trains MoANA and the classifier at the "new layers"
learning rate and the backbone at a lower one (ILSVRC: 0.02 vs 0.002).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .cam_net import CAMNet, param_group


class WSOLNet(CAMNet):
    """:class:`CAMNet` with the WSOL recipe's defaults, unclipped maps of chosen classes and two LR groups.

    Args:
        num_classes: 200 for CUB, 1000 for ILSVRC.
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        weights: ``"imagenet"``, ``"none"`` or a torchvision ResNet state-dict file.
        moana: insert MoANA between layer4 and the classifier.
        moana_calibration: ``"paper"`` or ``"wsss_code"`` (see :class:`MoANA`).
        moana_view_conv: ``"dense"`` or ``"depthwise"`` (see :class:`MoANA`).
        strides: backbone strides of (conv1, layer2, layer3, layer4).
        freeze_bn: frozen BatchNorm in the backbone (WSOL: False).
        freeze_stem: no gradients to conv1 .. layer1 (WSOL: False).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        weights: str | os.PathLike[str] = "imagenet",
        moana: bool = True,
        moana_calibration: str = "paper",
        moana_view_conv: str = "dense",
        strides: Sequence[int] = (2, 2, 1, 1),
        freeze_bn: bool = False,
        freeze_stem: bool = False,
    ) -> None:
        super().__init__(num_classes, backbone=backbone, weights=weights, strides=strides, moana=moana,
                         moana_calibration=moana_calibration, moana_view_conv=moana_view_conv,
                         freeze_bn=freeze_bn, freeze_stem=freeze_stem)

    def cams(self, x: Tensor, class_idx: Tensor) -> Tensor:  # type: ignore[override]
        """Class activation maps of the requested classes, without ReLU.

        The WSOL score map is min-max normalised afterwards, as in the
        wsolevaluation protocol and the authors' code, which do not clip.

        Args:
            x: images (N, 3, H, W).
            class_idx: integer classes, shape (N,) for one map per image or
                (N, K) for K maps per image.

        Returns:
            (N, h, w) or (N, K, h, w) maps at the output stride.
        """
        if class_idx.dim() not in (1, 2) or class_idx.shape[0] != x.shape[0]:
            raise ValueError(
                f"class_idx must have shape (N,) or (N, K) with N = {x.shape[0]}, "
                f"got {tuple(class_idx.shape)}")
        features = self.head.calibrate(self.backbone(x))
        # Only the requested rows of the classifier are applied, so ILSVRC's
        # 1000 classes cost no more than one.
        weight = self.head.classifier.weight.flatten(1)[class_idx]
        if class_idx.dim() == 1:
            return torch.einsum("nc,nchw->nhw", weight, features)
        return torch.einsum("nkc,nchw->nkhw", weight, features)

    def param_groups(self, lr_backbone: float, lr_new: float,  # type: ignore[override]
                     weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: ``backbone`` at ``lr_backbone``, ``new`` (MoANA and
        classifier) at ``lr_new``. Only trainable parameters; empty groups are left out.
        """
        groups = [
            param_group("backbone", self.backbone.trainable_parameters(), lr_backbone,
                        weight_decay),
            param_group("new", self.head.moana_parameters() + self.head.classifier_parameters(),
                        lr_new, weight_decay),
        ]
        return [g for g in groups if g["params"]]
