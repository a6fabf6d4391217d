"""tools/displacement_field.py: the field against the directions to object centroids and to the image centre."""
from __future__ import annotations

import numpy as np
import pytest

import displacement_field as df
from irnet_moana import io


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def towards(point: tuple[float, float], size: int, scale: float = 1.0) -> np.ndarray:
    """The field (2, size, size) of ``scale`` times the vector from each pixel to ``point``."""
    grid = np.mgrid[:size, :size].astype(np.float64)
    return scale * (np.array(point)[:, None, None] - grid)


def test_a_field_onto_the_centroid_agrees_fully():
    mask = square(9, 1, 2, 5)  # centroid (3, 4)
    cosine, ratio = df.object_agreement(towards((3, 4), 9), mask[None], min_distance=1.0)
    # the 5 x 5 square less its centre and the centre's 4 neighbours, which lie within one pixel of it
    assert len(cosine) == len(ratio) == 20
    np.testing.assert_allclose(cosine, 1.0)
    np.testing.assert_allclose(ratio, 1.0)


def test_half_length_and_reversed_fields():
    mask = square(9, 1, 2, 5)
    cosine, ratio = df.object_agreement(towards((3, 4), 9, scale=0.5), mask[None], min_distance=1.0)
    np.testing.assert_allclose(cosine, 1.0)
    np.testing.assert_allclose(ratio, 0.5)
    cosine, _ = df.object_agreement(towards((3, 4), 9, scale=-2.0), mask[None], min_distance=1.0)
    np.testing.assert_allclose(cosine, -1.0)


def test_each_object_is_judged_by_its_own_centroid():
    masks = np.stack([square(12, 0, 0, 3), square(12, 6, 6, 5)])  # centroids (1, 1) and (8, 8)
    field = np.where(masks[0], towards((1, 1), 12), towards((8, 8), 12))
    cosine, ratio = df.object_agreement(field, masks, min_distance=0.5)
    assert len(cosine) == 8 + 24  # each square less its centre pixel
    np.testing.assert_allclose(cosine, 1.0)
    # a field onto one point for both: the small square's pixels point away from their own centroid's direction
    cosine, _ = df.object_agreement(towards((8, 8), 12), masks, min_distance=0.5)
    assert cosine[:8].mean() < 0.9 and np.allclose(cosine[8:], 1.0)


def test_background_pull_towards_the_image_centre():
    background = ~square(5, 0, 0, 2)
    lengths, cosines = df.background_field(towards((2, 2), 5, scale=0.5), background)
    assert len(lengths) == 21
    # the centre pixel has no direction to the centre: its cosine counts as 0
    assert np.count_nonzero(cosines == 0) == 1 and np.allclose(cosines[cosines != 0], 1.0)
    grid = np.mgrid[:5, :5][:, background]
    np.testing.assert_allclose(lengths, 0.5 * np.hypot(grid[0] - 2, grid[1] - 2))
    lengths, cosines = df.background_field(np.zeros((2, 5, 5)), background)
    assert not lengths.any() and not cosines.any()


def test_cli_on_a_trained_run(tiny_demo_run, tmp_path, capsys):
    out = tmp_path / "field.json"
    result = df.main([str(tiny_demo_run), "--list", "train", "--json", str(out)])
    assert io.read_json(out) == result
    assert result["num_images"] == 6 and result["weak_displacement"] == 2.5
    assert -1.0 <= result["object_cosine"] <= 1.0 and -1.0 <= result["background_cosine_to_centre"] <= 1.0
    assert result["object_length_ratio"] >= 0.0 and result["background_length"] >= 0.0
    assert "6 train images" in capsys.readouterr().out


def test_run_without_irnet_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no trained IRNet"):
        df.main([str(tmp_path)])
