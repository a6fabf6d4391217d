"""The two resizing conventions: IRNet's (PIL, uint8, before normalising) and deeplab-pytorch's (OpenCV)."""
from __future__ import annotations

import numpy as np

from irnet_moana.data import transforms as T


def edge_image() -> np.ndarray:
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, 3:] = (200, 120, 40)
    return image


def test_sizes_round_half_to_even_as_irnet():
    # IRNet rounds with np.round: 333 * 0.5 = 166.5 -> 166, 375 * 0.5 = 187.5 -> 188
    assert T.scaled_size((333, 375), 0.5) == (166, 188)


def test_pil_nearest_keeps_label_values():
    label = np.array([[0, 255], [3, 7]], np.uint8)
    expected = np.repeat(np.repeat(label, 2, axis=0), 2, axis=1)
    assert np.array_equal(T.pil_resize(label, (4, 4), nearest=True), expected)


def test_same_size_is_returned_untouched():
    image = edge_image()
    assert T.pil_resize(image, (6, 8)) is image


def test_irnet_rescale_resizes_the_uint8_image_then_normalises():
    image = edge_image()
    out = T.irnet_rescale(image, (9, 7))
    assert out.shape == (9, 7, 3) and out.dtype == np.float32
    grey_levels = (out * T.IMAGENET_STD + T.IMAGENET_MEAN) * 255.0
    # bicubic overshoots the edge, and the uint8 result is clipped and rounded before normalising
    np.testing.assert_allclose(grey_levels, np.round(grey_levels), atol=1e-3)
    linear = (T.linear_rescale(image, (9, 7)) * T.IMAGENET_STD + T.IMAGENET_MEAN) * 255.0
    assert np.abs(linear - np.round(linear)).max() > 0.1  # OpenCV on the float image does not round


def test_constant_image_is_the_same_under_both_conventions():
    image = np.full((5, 7, 3), 90, np.uint8)
    np.testing.assert_allclose(T.irnet_rescale(image, (10, 3)), T.linear_rescale(image, (10, 3)), atol=1e-6)
