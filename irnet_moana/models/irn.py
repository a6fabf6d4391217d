"""IRNet: class-boundary and displacement-field branches over a frozen ResNet.

Both branches read the five stage outputs of a plain ResNet (no MoANA, as in
the original IRNet). The backbone is frozen entirely: its features are
computed without gradients, so only the branches train. The boundary map
comes out at stride 4; the displacement field at stride 4 too.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..relations import PathIndex
from .backbone import Backbone


def _unit(in_channels: int, out_channels: int, groups: int, upsample: int = 1) -> nn.Sequential:
    """1x1 conv + GroupNorm (+ bilinear upsampling) + ReLU, IRNet's branch unit."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.GroupNorm(groups, out_channels)]
    if upsample > 1:
        layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _crop_to(x: Tensor, ref: Tensor) -> Tensor:
    return x[..., :ref.shape[-2], :ref.shape[-1]]


class IRNet(nn.Module):
    """Boundary branch (5 x 32 channels -> 1) and displacement branch (-> 2) on a frozen ResNet."""

    def __init__(self, backbone: str = "resnet50", weights: str | os.PathLike[str] = "imagenet",
                 strides: Sequence[int] = (2, 2, 2, 1)) -> None:
        super().__init__()
        self.backbone = Backbone(backbone, weights=weights, strides=strides, freeze_bn=True, freeze_stem=True)
        self.backbone.requires_grad_(False)
        channels = self.backbone.out_channels
        # upsampling factors that bring each stage to stride 4 (edge) or stride 8 (displacement)
        factors = [s // self.backbone.stage_strides[1] for s in self.backbone.stage_strides]
        self.edge_units = nn.ModuleList(_unit(c, 32, 4, f) for c, f in zip(channels, factors))
        self.edge_out = nn.Conv2d(32 * 5, 1, 1, bias=True)
        dp_widths = (64, 128, 256, 256, 256)
        dp_groups = (8, 16, 16, 16, 16)
        to_stride8 = [max(1, f // 2) for f in factors]
        self.dp_units = nn.ModuleList(
            _unit(c, w, g, u) for c, w, g, u in zip(channels, dp_widths, dp_groups, to_stride8))
        self.dp_fuse = _unit(256 * 3, 256, 16, 2)
        self.dp_out = nn.Sequential(nn.Conv2d(64 + 128 + 256, 256, 1, bias=False), nn.GroupNorm(16, 256),
                                    nn.ReLU(inplace=True), nn.Conv2d(256, 2, 1, bias=False))
        # IRNet's mean shift: the mean displacement over training images, measured once training
        # ends (train_irn) and subtracted from the field at inference
        self.register_buffer("displacement_mean", torch.zeros(2))

    def train(self, mode: bool = True) -> "IRNet":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(boundary logits (N, 1, h, w), displacement (N, 2, h, w)), both at stride 4.

        In eval mode the displacement has ``displacement_mean`` subtracted, as IRNet's MeanShift does.
        """
        with torch.no_grad():
            feats = self.backbone.forward_stages(x)
        edges = [unit(f) for unit, f in zip(self.edge_units, feats)]
        edge = self.edge_out(torch.cat([edges[0], *[_crop_to(e, edges[1]) for e in edges[1:]]], 1))
        dps = [unit(f) for unit, f in zip(self.dp_units, feats)]
        fused = self.dp_fuse(torch.cat([dps[2], _crop_to(dps[3], dps[2]), _crop_to(dps[4], dps[2])], 1))
        displacement = self.dp_out(torch.cat([dps[0], dps[1], _crop_to(fused, dps[1])], 1))
        if not self.training:
            displacement = displacement - self.displacement_mean.to(displacement.dtype).view(1, 2, 1, 1)
        return edge, displacement

    def branch_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(boundary branch, displacement branch) parameters: the two learning-rate groups."""
        edge = [*self.edge_units.parameters(), *self.edge_out.parameters()]
        dp = [*self.dp_units.parameters(), *self.dp_fuse.parameters(), *self.dp_out.parameters()]
        return edge, dp

    def param_groups(self, lr: float, displacement_lr_mult: float, weight_decay: float) -> list[dict]:
        edge, dp = self.branch_parameters()
        return [{"name": "boundary", "params": edge, "lr": lr, "weight_decay": weight_decay},
                {"name": "displacement", "params": dp, "lr": lr * displacement_lr_mult,
                 "weight_decay": weight_decay}]

    @torch.no_grad()
    def infer(self, image_and_flip: Tensor, pad_to: int = 0) -> tuple[Tensor, Tensor]:
        """(boundary probability (h, w), displacement (2, h, w)) at stride 4 for an image stacked with its flip.

        The input (2, 3, H, W) is zero-padded (to ``pad_to`` as IRNet pads to
        its crop size, and to a multiple of 16) so the features see
        training-like context; the maps are cropped to ceil(H/4) x ceil(W/4).
        The flip's boundary logits are un-flipped and averaged in before the
        sigmoid; the displacement comes from the unflipped image alone. Both
        as IRNet's EdgeDisplacement.
        """
        height, width = image_and_flip.shape[-2:]
        target_h = max(pad_to, -(-height // 16) * 16)
        target_w = max(pad_to, -(-width // 16) * 16)
        padded = F.pad(image_and_flip, (0, target_w - width, 0, target_h - height))
        edge, displacement = self(padded)
        crop_h, crop_w = (height - 1) // 4 + 1, (width - 1) // 4 + 1
        edge = edge[:, 0, :crop_h, :crop_w]
        return torch.sigmoid(edge[0] / 2 + edge[1].flip(-1) / 2), displacement[0, :, :crop_h, :crop_w]

def irn_losses(edge_logits: Tensor, displacement: Tensor, bg_pos: Tensor, fg_pos: Tensor, neg: Tensor,
               path_index: PathIndex) -> dict[str, Tensor]:
    """IRNet's four losses for a batch; pair masks are (N, D, H', W') floats in the path index's convention.

    Affinity a = 1 - max(boundary along the path); positive pairs -log(a)
    (background and foreground pairs averaged separately, then halved),
    negative pairs -log(1 - a); displacement: L1 between the pair difference
    and the direction on foreground pairs, and towards zero on background pairs.
    """
    eps = 1e-5
    affinity = path_index.edge_to_affinity(torch.sigmoid(edge_logits.float()))
    pos_loss = -torch.log(affinity + eps)
    neg_loss = -torch.log(1.0 + eps - affinity)
    bg_pos_loss = (bg_pos * pos_loss).sum() / (bg_pos.sum() + eps)
    fg_pos_loss = (fg_pos * pos_loss).sum() / (fg_pos.sum() + eps)
    neg_aff_loss = (neg * neg_loss).sum() / (neg.sum() + eps)
    diff = path_index.pair_differences(displacement.float())
    directions = torch.as_tensor(path_index.directions, dtype=diff.dtype, device=diff.device)
    target = directions.t()[None, :, :, None, None]
    dp_fg = ((diff - target).abs() * fg_pos[:, None]).sum() / (2 * fg_pos.sum() + eps)
    dp_bg = (diff.abs() * bg_pos[:, None]).sum() / (2 * bg_pos.sum() + eps)
    return {"pos_aff": bg_pos_loss / 2 + fg_pos_loss / 2, "neg_aff": neg_aff_loss, "dp_fg": dp_fg, "dp_bg": dp_bg}
