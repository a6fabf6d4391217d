"""DeepLab's test-time predictions of one image: single scale, or averaged over scales and flips."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from deeplab.model import MultiScale
from irnet_moana.precision import FP32, Precision
from irnet_moana.training import autocast


def _upsampled_probs(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) logits -> (N, C, H, W) float32 softmax after bilinear upsampling."""
    logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


@torch.no_grad()
def predict_single_scale(model: MultiScale, image: torch.Tensor, precision: Precision = FP32) -> torch.Tensor:
    """Class probabilities (C, H, W) of one normalised (3, H, W) image from the fused eval forward."""
    with autocast(image.device, precision):
        logits = model(image[None])
    return _upsampled_probs(logits, image.shape[-2:])[0]


@torch.no_grad()
def predict_multi_scale_flip(model: MultiScale, pyramid: Sequence[torch.Tensor], size: Sequence[int],
                             precision: Precision = FP32) -> torch.Tensor:
    """Class probabilities (C, H, W) averaged over scales and flips.

    ``pyramid`` holds one (2, 3, h, w) tensor per scale: the resized image
    and its mirror (as :class:`InferenceDataset` builds it).
    """
    total = None
    for images in pyramid:
        with autocast(images.device, precision):
            logits = model.base(images)
        probs = _upsampled_probs(logits, size)
        pair = probs[0] + probs[1].flip(-1)
        total = pair if total is None else total + pair
    return total / (2 * len(pyramid))
