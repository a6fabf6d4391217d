"""Tolerances for float32 comparisons that follow from the arithmetic, not from one machine's kernels."""
from __future__ import annotations

import math

import numpy as np
import torch

UNIT_ROUNDOFF = 2.0 ** -24  # float32


def network_tolerance(layers: int, fan_in: int) -> float:
    """Largest difference, relative to the output's largest magnitude, between two float32 evaluations of one
    network whose kernels differ (BatchNorm folded into the convolution or applied after it; another summation
    order or vector width: AVX2, AVX-512, AMX and oneDNN's blockings all differ).

    Each layer rounds a fan_in-term sum: reordered, its rounding error changes by about sqrt(fan_in) unit
    roundoffs of the activations' scale (random-signed errors); BatchNorm's scale-and-shift, folded or not, adds
    a few more (hence the factor 4). BatchNorm keeps the activations' scale from layer to layer, so the layers'
    differences add up.
    """
    return 4 * layers * math.sqrt(fan_in) * UNIT_ROUNDOFF


def assert_close_to_scale(actual, expected, layers: int, fan_in: int) -> None:
    """max |actual - expected| <= network_tolerance(...) * max |expected|.

    An element-wise relative check would be meaningless where a sum cancels to nearly zero, so the bound is
    on the largest difference against the largest magnitude.
    """
    actual, expected = (np.asarray(t.detach().double() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
                        for t in (actual, expected))
    assert actual.shape == expected.shape
    bound = network_tolerance(layers, fan_in) * np.abs(expected).max()
    difference = np.abs(actual - expected).max()
    assert difference <= bound, f"max difference {difference:.3g} exceeds {bound:.3g}"
