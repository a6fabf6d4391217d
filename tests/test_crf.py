"""Dense CRF wrappers: shapes, reference agreement, smoothing behaviour, errors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest

from irnet_moana.crf import (
    DEEPLAB_TEST,
    IRN_LABELS,
    IRN_LABELS_GT_PROB,
    CRFParams,
    crf_labels,
    dense_crf,
)


def _random_probs(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    scores = rng.normal(size=shape).astype(np.float32) * 3
    exp = np.exp(scores - scores.max(axis=0))
    return exp / exp.sum(axis=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_parameter_sets() -> None:
    assert IRN_LABELS == CRFParams(10, 3, 3, 50, 5, 10)
    assert IRN_LABELS_GT_PROB == 0.7
    assert DEEPLAB_TEST == CRFParams(10, 1, 3, 67, 3, 4)
    assert DEEPLAB_TEST.as_dict() == {
        "iterations": 10, "gaussian_sxy": 1, "gaussian_compat": 3,
        "bilateral_sxy": 67, "bilateral_srgb": 3, "bilateral_compat": 4,
    }


def test_dense_crf_shape_dtype_and_normalisation(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
    posterior = dense_crf(image, _random_probs(rng, (4, 12, 17)))
    assert posterior.shape == (4, 12, 17) and posterior.dtype == np.float32
    np.testing.assert_allclose(posterior.sum(axis=0), 1.0, atol=1e-5)
    assert posterior.min() >= 0.0


def test_dense_crf_without_iterations_returns_the_clipped_input(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    probs = _random_probs(rng, (3, 6, 5))
    probs[0, 0, 0], probs[1, 0, 0], probs[2, 0, 0] = 0.0, 0.25, 0.75
    # exp(-unary) normalised: probabilities clipped at 1e-5 then renormalised.
    expected = np.clip(probs, 1e-5, 1.0)
    expected /= expected.sum(axis=0)
    without_iterations = replace(DEEPLAB_TEST, iterations=0)
    np.testing.assert_allclose(dense_crf(image, probs, without_iterations), expected, rtol=1e-5, atol=1e-7)


def _reference_posterior(image, unary, params: CRFParams) -> np.ndarray:
    """Direct pydensecrf calls in the order deeplab-pytorch and IRNet make them."""
    height, width = image.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, unary.shape[0])
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(image), compat=params.bilateral_compat,
    )
    return np.array(crf.inference(params.iterations)).reshape(unary.shape[0], height, width)


def test_dense_crf_matches_direct_pydensecrf_with_deeplab_settings(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(20, 23, 3), dtype=np.uint8)
    probs = _random_probs(rng, (5, 20, 23))
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(5, -1)
    np.testing.assert_allclose(
        dense_crf(image, probs), _reference_posterior(image, unary, DEEPLAB_TEST), atol=1e-6
    )


def test_crf_labels_matches_direct_pydensecrf_with_irn_settings(rng: np.random.Generator) -> None:
    # Four colour regions with their true labels, then 35% of the labels randomised.
    truth = np.zeros((24, 28), dtype=np.int64)
    truth[:, 10:] = 1
    truth[12:, 18:] = 2
    truth[3:9, 3:8] = 3
    colours = np.array([[20, 20, 20], [200, 40, 40], [40, 200, 40], [40, 40, 200]])
    image = np.clip(colours[truth] + rng.normal(0, 8, size=(24, 28, 3)), 0, 255).astype(np.uint8)
    labels = truth.copy()
    noisy = rng.random(truth.shape) < 0.35
    labels[noisy] = rng.integers(0, 4, size=noisy.sum())
    # unary_from_labels(zero_unsure=False): -log 0.7 on the label, -log(0.3 / 3) elsewhere.
    unary = np.full((4, labels.size), -np.log(0.3 / 3), dtype=np.float32)
    unary[labels.ravel(), np.arange(labels.size)] = -np.log(0.7)
    expected = _reference_posterior(image, unary, IRN_LABELS).argmax(axis=0)
    result = crf_labels(image, labels, n_labels=4)
    assert result.shape == truth.shape and np.issubdtype(result.dtype, np.integer)
    assert np.array_equal(result, expected)
    assert (result != truth).sum() * 10 < (labels != truth).sum()


def test_confident_unary_on_flat_image_is_kept() -> None:
    image = np.full((16, 20, 3), 120, dtype=np.uint8)
    probs = np.full((2, 16, 20), 0.01, dtype=np.float32)
    probs[0, :, :10] = 0.99
    probs[1, :, 10:] = 0.99
    posterior = dense_crf(image, probs)
    assert np.array_equal(posterior.argmax(axis=0), probs.argmax(axis=0))
    assert posterior.max(axis=0).min() > 0.99

    uniform = np.zeros((3, 16, 20), dtype=np.float32)
    uniform[1] = 0.9
    uniform[[0, 2]] = 0.05
    posterior = dense_crf(image, uniform)
    assert np.all(posterior.argmax(axis=0) == 1)
    assert posterior[1].min() >= 0.9


def test_crf_labels_removes_a_single_mislabelled_pixel() -> None:
    image = np.full((20, 24, 3), 200, dtype=np.uint8)
    image[:, 16:] = 30
    clean = np.ones((20, 24), dtype=np.int64)
    clean[:, 16:] = 0
    noisy = clean.copy()
    noisy[7, 5] = 2
    assert np.array_equal(crf_labels(image, noisy, n_labels=3), clean)


def test_results_are_deterministic(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(15, 14, 3), dtype=np.uint8)
    probs = _random_probs(rng, (3, 15, 14))
    labels = probs.argmax(axis=0)
    assert np.array_equal(dense_crf(image, probs), dense_crf(image, probs))
    assert np.array_equal(crf_labels(image, labels, 3), crf_labels(image, labels, 3))


def test_non_contiguous_image_is_read_correctly(rng: np.random.Generator) -> None:
    chw = rng.integers(0, 256, size=(3, 15, 14), dtype=np.uint8)
    view = chw.transpose(1, 2, 0)[:, ::-1]
    probs = _random_probs(rng, (3, 15, 14))
    np.testing.assert_array_equal(dense_crf(view, probs), dense_crf(np.ascontiguousarray(view), probs))


def test_shape_and_value_errors(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="8x9"):
        dense_crf(image, _random_probs(rng, (2, 9, 8)))
    with pytest.raises(ValueError, match="C, H, W"):
        dense_crf(image, np.ones((8, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="H, W, 3"):
        dense_crf(image[..., :2], _random_probs(rng, (2, 8, 9)))
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), _random_probs(rng, (2, 8, 9)))
    labels = np.zeros((8, 9), dtype=np.int64)
    with pytest.raises(ValueError, match="8x9"):
        crf_labels(image, labels.T, n_labels=2)
    with pytest.raises(ValueError, match="H, W"):
        crf_labels(image, labels[None], n_labels=2)
    with pytest.raises(ValueError, match="0..1"):
        crf_labels(image, labels + 2, n_labels=2)
    with pytest.raises(ValueError, match="integers"):
        crf_labels(image, labels.astype(np.float32), n_labels=2)
    with pytest.raises(ValueError, match="gt_prob"):
        crf_labels(image, labels, n_labels=2, gt_prob=1.0)
    with pytest.raises(ValueError, match="n_labels"):
        crf_labels(image, labels, n_labels=1)
