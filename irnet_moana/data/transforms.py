"""Image and label-map augmentations on numpy arrays, driven by an explicit RNG.

Passing the generator in (rather than using global state) is what makes a
sample's augmentation a function of (seed, epoch, index) alone, so resumed and
distributed runs see exactly the same crops as uninterrupted ones.

Two resizing conventions, each that of the code a stage reproduces: IRNet
(the CAM, relation and IRNet stages) resizes the uint8 image with PIL bicubic
and label maps with PIL nearest, before normalising (:func:`pil_resize`);
deeplab-pytorch resizes with OpenCV, linear for images and nearest for labels
(:func:`resize`).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from PIL import Image

Resize = Callable[..., np.ndarray]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (H, W, 3) with ImageNet statistics."""
    return (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def to_chw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def resize(array: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize an image (bilinear) or a label map (nearest) to (height, width)."""
    height, width = size_hw
    if array.shape[:2] == (height, width):
        return array
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=interpolation)


def pil_resize(array: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a uint8 image (PIL bicubic) or a label map (PIL nearest) to (height, width), as IRNet does."""
    height, width = size_hw
    if array.shape[:2] == (height, width):
        return array
    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def irnet_rescale(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """IRNet's inference input at one scale: the uint8 image resized (PIL bicubic), then normalised."""
    return normalize(pil_resize(image, size_hw))


def linear_rescale(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """deeplab-pytorch's inference input at one scale: the float image resized (OpenCV linear), normalised."""
    return resize(normalize(image), size_hw)


def scaled_size(shape_hw: tuple[int, ...], scale: float) -> tuple[int, int]:
    return max(1, int(round(shape_hw[0] * scale))), max(1, int(round(shape_hw[1] * scale)))


def random_resize_long(image: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Resize so that the long side is a uniform integer in [low, high], PIL bicubic (IRNet's CAM recipe)."""
    target = int(rng.integers(low, high + 1))
    scale = target / max(image.shape[:2])
    return pil_resize(image, scaled_size(image.shape, scale))


def random_scale(arrays: list[np.ndarray], low: float, high: float, rng: np.random.Generator,
                 nearest: tuple[bool, ...], resizer: Resize = resize) -> list[np.ndarray]:
    """Rescale image and label maps together by one factor drawn from [low, high]."""
    scale = float(rng.uniform(low, high))
    size = scaled_size(arrays[0].shape, scale)
    return [resizer(a, size, nearest=n) for a, n in zip(arrays, nearest)]


def random_hflip(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    if rng.random() < 0.5:
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    return arrays


def random_crop(arrays: list[np.ndarray], crop: int, fill: list, rng: np.random.Generator) -> list[np.ndarray]:
    """A crop x crop window at a random place, padding with ``fill`` where the image is smaller.

    As in IRNet, a dimension larger than the crop is cut at a random offset and
    a smaller one is placed at a random offset inside the padded window.
    """
    height, width = arrays[0].shape[:2]

    def offsets(size: int) -> tuple[int, int, int]:
        # (source start, destination start, length)
        if size > crop:
            return int(rng.integers(0, size - crop + 1)), 0, crop
        return 0, int(rng.integers(0, crop - size + 1)), size

    sy, dy, ly = offsets(height)
    sx, dx, lx = offsets(width)
    out = []
    for array, value in zip(arrays, fill):
        window = np.empty((crop, crop) + array.shape[2:], dtype=array.dtype)
        window[...] = value
        window[dy:dy + ly, dx:dx + lx] = array[sy:sy + ly, sx:sx + lx]
        out.append(window)
    return out


def top_left_crop(image: np.ndarray, crop: int, fill: float = 0.0) -> np.ndarray:
    """A crop x crop window holding the image at its top-left corner, cut or padded with ``fill`` (IRNet's)."""
    window = np.full((crop, crop) + image.shape[2:], fill, dtype=image.dtype)
    height, width = min(crop, image.shape[0]), min(crop, image.shape[1])
    window[:height, :width] = image[:height, :width]
    return window


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Brightness, contrast and saturation jitter on a uint8 RGB image (the MoANA WSSS recipe adds it)."""
    img = image.astype(np.float32)
    img *= rng.uniform(1 - strength, 1 + strength)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    grey = img.mean(axis=2, keepdims=True)
    img = (img - grey) * rng.uniform(1 - strength, 1 + strength) + grey
    return np.clip(img, 0, 255).astype(np.uint8)

