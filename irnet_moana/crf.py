"""Fully connected CRF (Krähenbühl & Koltun) refinement through pydensecrf.

Two stages use it with different settings:

* ``make_ir_labels`` refines hard CAM label maps (IRNet's
  ``crf_inference_label``): :func:`crf_labels` with :data:`IRN_LABELS`;
* ``eval_deeplab`` refines DeepLab's softmax output at test time
  (deeplab-pytorch's ``DenseCRF``): :func:`dense_crf` with
  :data:`DEEPLAB_TEST`.

Both settings are one :class:`CRFParams` object each, e.g.
``dense_crf(image, probs, DEEPLAB_TEST)``; vary one value with
``dataclasses.replace(IRN_LABELS, iterations=5)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

# The unary is -log(p); clipping keeps it finite where a class has p = 0
# (same floor as pydensecrf's unary_from_softmax default).
PROB_CLIP = 1e-5


@dataclass(frozen=True)
class CRFParams:
    """Kernel parameters of a dense CRF with one Gaussian and one bilateral kernel.

    ``*_sxy`` are spatial standard deviations in pixels, ``bilateral_srgb`` the
    colour standard deviation in intensity units, ``*_compat`` the Potts
    weights of each kernel.
    """

    iterations: int
    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float

    def as_dict(self) -> dict[str, Any]:
        """The parameters by name, e.g. to record them with a result."""
        return asdict(self)


# IRNet's make_ir_labels (misc/imutils.py crf_inference_label).
IRN_LABELS = CRFParams(
    iterations=10, gaussian_sxy=3, gaussian_compat=3,
    bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10,
)
IRN_LABELS_GT_PROB = 0.7

# DeepLab v2 test-time post-processing (deeplab-pytorch's VOC config).
DEEPLAB_TEST = CRFParams(
    iterations=10, gaussian_sxy=1, gaussian_compat=3,
    bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4,
)


def _check_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Validate an RGB image against the label grid; return it C-contiguous.

    pydensecrf's bilateral kernel reads the raw uint8 buffer row-major, so a
    transposed or sliced view would silently feed it the wrong colours.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    if image.shape[:2] != (height, width):
        raise ValueError(
            f"image is {image.shape[0]}x{image.shape[1]} but the scores/labels are {height}x{width}"
        )
    return np.ascontiguousarray(image)


def _mean_field(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    """Run mean-field inference from a (C, H*W) unary; return the (C, H, W) posterior."""
    if params.iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {params.iterations}")
    height, width = image.shape[:2]
    n_labels = unary.shape[0]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=image, compat=params.bilateral_compat
    )
    posterior = crf.inference(params.iterations)
    return np.asarray(posterior, dtype=np.float32).reshape(n_labels, height, width)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = DEEPLAB_TEST) -> np.ndarray:
    """Refine class probabilities with a dense CRF.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        probs: class probabilities, shape (C, H, W) (e.g. a softmax); the
            unary is ``-log(probs)`` with probabilities clipped to
            :data:`PROB_CLIP`.
        params: iterations (0 returns the normalised input) and kernel
            parameters; default :data:`DEEPLAB_TEST`.

    Returns:
        float32 posterior, shape (C, H, W), summing to 1 over C at each pixel.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must have shape (C, H, W), got {probs.shape}")
    image = _check_image(image, probs.shape[1], probs.shape[2])
    unary = unary_from_softmax(probs.astype(np.float32), clip=PROB_CLIP)
    return _mean_field(image, unary, params)


def crf_labels(
    image: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    gt_prob: float = IRN_LABELS_GT_PROB,
    params: CRFParams = IRN_LABELS,
) -> np.ndarray:
    """Refine a hard label map with a dense CRF (IRNet's ``crf_inference_label``).

    Each pixel's unary gives its label probability ``gt_prob`` and every
    other label ``(1 - gt_prob) / (n_labels - 1)``; label 0 is an ordinary
    label (pydensecrf's ``zero_unsure=False``).

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        labels: integer label map, shape (H, W), values in ``0..n_labels-1``.
        n_labels: number of labels (at least 2).
        gt_prob: confidence in the given labels, in (0, 1).
        params: iterations and kernel parameters; default :data:`IRN_LABELS`.

    Returns:
        int64 label map, shape (H, W): the argmax of the CRF posterior.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if n_labels < 2:
        raise ValueError(f"n_labels must be >= 2, got {n_labels}")
    if not 0.0 < gt_prob < 1.0:
        raise ValueError(f"gt_prob must be in (0, 1), got {gt_prob}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(
            f"labels must lie in 0..{n_labels - 1}, got range {labels.min()}..{labels.max()}"
        )
    image = _check_image(image, labels.shape[0], labels.shape[1])
    unary = unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False)
    posterior = _mean_field(image, unary, params)
    return np.argmax(posterior, axis=0)
