"""MoANA: Module of Axis-based Nexus Attention (Sohn et al.).

The module pools a feature map along three axes (channel, height, width),
turns each pooled view into an attention vector with a 1-D convolution,
BatchNorm and a sigmoid, combines the three vectors into a C x H x W map by
an outer sum and uses that map to re-weight the input.

Facts taken from the authors' code (ku-milab/MoANA) and kept here:

* the channel view convolves along the channel axis with a single input and
  output channel (as ECA-Net does);
* the height and width views convolve along H (resp. W) with C input and C
  output channels ("dense", about 25 M parameters at C = 2048); a depthwise
  variant (``groups = C``, a few thousand parameters) is offered as a lighter
  documented alternative;
* every convolution has no bias and zero padding ``k // 2``;
* the paper calibrates with ``X + X * M``; the authors' segmentation code uses
  ``X * (0.35 + 0.65 * M)`` instead (``calibration="wsss_code"``).

Unlike the authors' CAM network, nothing here overrides ``train()``: the three
BatchNorms use batch statistics in training mode and running statistics in
evaluation mode, as any BatchNorm does.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

CALIBRATIONS: dict[str, tuple[float, float]] = {
    "paper": (1.0, 1.0),
    "wsss_code": (0.35, 0.65),
}
"""Calibration name -> (offset, scale); the output is ``X * (offset + scale * M)``."""

VIEW_CONVS: tuple[str, ...] = ("dense", "depthwise")


class MoANA(nn.Module):
    """Axis-based nexus attention over a (N, C, H, W) feature map.

    Args:
        channels: number of input channels C.
        kernel_size: odd length of the three 1-D convolution kernels.
        calibration: ``"paper"`` for ``X * (1 + M)`` or ``"wsss_code"`` for
            ``X * (0.35 + 0.65 * M)``.
        view_conv: ``"dense"`` (C -> C convolutions along H and W, the
            authors' choice) or ``"depthwise"`` (one kernel per channel).

    In training mode the channel-view BatchNorm normalises over the batch
    only (its input is N x C x 1 x 1), so training needs batches of at least
    two samples; evaluation works for any batch size.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        calibration: str = "paper",
        view_conv: str = "dense",
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if (isinstance(kernel_size, bool) or not isinstance(kernel_size, int)
                or kernel_size < 1 or kernel_size % 2 == 0):
            # An even kernel with padding k // 2 would change the length of the view.
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(
                f"calibration must be one of {sorted(CALIBRATIONS)}, got {calibration!r}")
        if view_conv not in VIEW_CONVS:
            raise ValueError(f"view_conv must be one of {list(VIEW_CONVS)}, got {view_conv!r}")

        self.channels = channels
        self.kernel_size = kernel_size
        self.calibration = calibration
        self.view_conv = view_conv
        padding = kernel_size // 2
        groups = 1 if view_conv == "dense" else channels

        self.conv_c = nn.Conv1d(1, 1, kernel_size, padding=padding, bias=False)
        self.conv_h = nn.Conv1d(channels, channels, kernel_size, padding=padding,
                                groups=groups, bias=False)
        self.conv_w = nn.Conv1d(channels, channels, kernel_size, padding=padding,
                                groups=groups, bias=False)
        self.bn_c = nn.BatchNorm2d(channels)
        self.bn_h = nn.BatchNorm2d(channels)
        self.bn_w = nn.BatchNorm2d(channels)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, "
                f"calibration={self.calibration!r}, view_conv={self.view_conv!r}")

    def attention(self, x: Tensor) -> dict[str, Tensor]:
        """The three view attentions and their outer sum.

        Args:
            x: features of shape (N, C, H, W).

        Returns:
            ``z_c`` (N, C), ``z_h`` (N, C, H), ``z_w`` (N, C, W), each in (0, 1),
            and ``M`` (N, C, H, W) with ``M[n, i, j, k] = z_c[n, i] + z_h[n, i, j]
            + z_w[n, i, k]``, in (0, 3).
        """
        z_c, z_h, z_w = self.view_attentions(x)
        m = z_c[:, :, None, None] + z_h[:, :, :, None] + z_w[:, :, None, :]
        return {"z_c": z_c, "z_h": z_h, "z_w": z_w, "M": m}

    def view_attentions(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z_c, z_h, z_w)`` of :meth:`attention`, without forming ``M``."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected input of shape (N, {self.channels}, H, W), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        if _channels_last(x):
            # Reduced over its dense (N, H, W, C) view, a channels-last map pools 25x faster
            # than through x.mean(3) / x.mean(2) (1.6 against 40 ms for a bf16 2 x 2048 x 36 x 63
            # map on a 2-core EPYC). A bf16 sum is 8x faster than a bf16 mean there because it
            # rounds to bf16 before the division (one more rounding than the NCHW means).
            nhwc = x.permute(0, 2, 3, 1)
            pooled_h = nhwc.sum(2).transpose(1, 2) / w
            pooled_w = nhwc.sum(1).transpose(1, 2) / h
            pooled_c = nhwc.sum((1, 2)) / (h * w)
        else:
            pooled_h, pooled_w, pooled_c = x.mean(3), x.mean(2), x.mean((2, 3))

        # The channel view is a length-C signal with one "channel" for Conv1d.
        z_c = self.conv_c(pooled_c.unsqueeze(1)).view(n, c, 1, 1)
        z_c = torch.sigmoid(self.bn_c(z_c)).view(n, c)

        # BatchNorm2d on (N, C, L, 1) normalises each channel over N and L,
        # the statistics the authors' code uses for the spatial views.
        z_h = self.conv_h(pooled_h).unsqueeze(3)
        z_h = torch.sigmoid(self.bn_h(z_h)).squeeze(3)
        z_w = self.conv_w(pooled_w).unsqueeze(3)
        z_w = torch.sigmoid(self.bn_w(z_w)).squeeze(3)
        return z_c, z_h, z_w

    def forward(self, x: Tensor) -> Tensor:
        """Calibrated features ``X * (offset + scale * M)``, same shape and memory layout as ``x``."""
        offset, scale = CALIBRATIONS[self.calibration]
        z_c, z_h, z_w = self.view_attentions(x)
        # offset and scale go into the (N, C, H) and (N, C, W) terms, so only one sum and
        # one product run over all C x H x W elements.
        rows = offset + scale * (z_c[:, :, None] + z_h)
        cols = scale * z_w
        if _channels_last(x):
            # Channel-fastest terms make the broadcast sum channels-last like x: a product of
            # the two layouts ran 8x slower (19.6 against 2.4 ms, bf16, as above).
            rows = rows.transpose(1, 2).contiguous().transpose(1, 2)
            cols = cols.transpose(1, 2).contiguous().transpose(1, 2)
        return x * (rows[:, :, :, None] + cols[:, :, None, :])


def _channels_last(x: Tensor) -> bool:
    """Whether ``x`` is stored channels-last (a map that is dense both ways counts as NCHW)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
