"""Path index, path affinities and pair labels checked against hand-worked grids and loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from irnet_moana.relations import PathIndex, path_cells, search_directions


def test_directions_radius_2_and_3_by_hand():
    assert search_directions(2).tolist() == [[0, 1], [1, -1], [1, 0], [1, 1]]
    assert search_directions(3).tolist() == [
        [0, 1], [0, 2],
        [1, -2], [1, -1], [1, 0], [1, 1], [1, 2],
        [2, -2], [2, -1], [2, 0], [2, 1], [2, 2],
    ]


def test_direction_counts_and_half_disc():
    # Counted by hand row by row: r=5: 4 + 9 + 9 + 7 + 5; r=10: 9 + 4*19 + 17 + 15 + 15 + 11 + 9.
    assert len(search_directions(5)) == 34
    assert len(search_directions(10)) == 152
    for dy, dx in search_directions(10):
        assert dy * dy + dx * dx < 100
        assert dy > 0 or (dy == 0 and dx > 0)


def test_path_cells_by_hand():
    assert path_cells(0, 3).tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]
    assert path_cells(1, 1).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # Every cell of the 2x3 box is within one cell of the line to (1, 2).
    assert path_cells(1, 2).tolist() == [[0, 0], [0, 1], [1, 0], [0, 2], [1, 1], [1, 2]]
    # (2, 3): (2x - 3y)^2 < 13 drops (0,2), (0,3), (2,0) and (2,1).
    assert path_cells(2, 3).tolist() == [
        [0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [1, 3], [2, 2], [2, 3]]


def test_path_cells_mirror_and_end_points():
    for dy, dx in search_directions(6):
        cells = path_cells(int(dy), int(dx))
        assert cells[0].tolist() == [0, 0]
        assert cells[-1].tolist() == [dy, dx]
        mirrored = {(int(y), int(-x)) for y, x in path_cells(int(dy), int(-dx))}
        assert {(int(y), int(x)) for y, x in cells} == mirrored


def test_source_shape_and_too_small_map():
    index = PathIndex(5)
    assert index.source_shape(20, 30) == (16, 22)
    with pytest.raises(ValueError):
        index.source_shape(4, 30)


def test_affinity_single_boundary_pixel_by_hand():
    # Radius 2: margin 1, sources at rows 0..2 and columns 1..3 of a 4x5 map.
    boundary = torch.zeros(1, 1, 4, 5)
    boundary[0, 0, 1, 2] = 1.0
    affinity = PathIndex(2).edge_to_affinity(boundary)
    zeros_per_direction = {
        0: [(1, 0), (1, 1)],                  # (0, 1): (i, j+1) -> (i, j+2)
        1: [(0, 1), (0, 2), (1, 1), (1, 2)],  # (1, -1): 2x2 block left-below
        2: [(0, 1), (1, 1)],                  # (1, 0)
        3: [(0, 0), (0, 1), (1, 0), (1, 1)],  # (1, 1): 2x2 block right-below
    }
    expected = torch.ones(1, 4, 3, 3)
    for d, cells in zeros_per_direction.items():
        for i, j in cells:
            expected[0, d, i, j] = 0.0
    assert torch.equal(affinity, expected)

    boundary.requires_grad_(True)
    PathIndex(2).edge_to_affinity(boundary).sum().backward()
    # The 12 pairs through the boundary pixel all take their max there; the 36
    # pairs spread a gradient of -1 each over the cells of their path.
    assert boundary.grad[0, 0, 1, 2].item() == pytest.approx(-12.0)
    assert boundary.grad.sum().item() == pytest.approx(-36.0)


def _loop_affinity(boundary: np.ndarray, radius: int) -> np.ndarray:
    margin = radius - 1
    height, width = boundary.shape
    directions = search_directions(radius)
    out = np.zeros((len(directions), height - margin, width - 2 * margin))
    for d, (dy, dx) in enumerate(directions):
        cells = path_cells(int(dy), int(dx))
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                y, x = i, j + margin
                out[d, i, j] = 1.0 - max(boundary[y + cy, x + cx] for cy, cx in cells)
    return out


@pytest.mark.parametrize("radius,shape", [(3, (6, 9)), (5, (9, 12))])
def test_affinity_matches_loop_on_random_maps(radius, shape):
    generator = torch.Generator().manual_seed(radius)
    boundary = torch.rand(2, 1, *shape, generator=generator, dtype=torch.float64)
    affinity = PathIndex(radius).edge_to_affinity(boundary)
    for n in range(2):
        np.testing.assert_allclose(affinity[n].numpy(), _loop_affinity(boundary[n, 0].numpy(), radius))


def test_affinity_gradcheck():
    boundary = torch.rand(1, 1, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PathIndex(3).edge_to_affinity, (boundary,))


def _loop_pair_labels(labels: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    margin = radius - 1
    height, width = labels.shape
    directions = search_directions(radius)
    shape = (len(directions), height - margin, width - 2 * margin)
    bg, fg, neg = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
    for d, (dy, dx) in enumerate(directions):
        for i in range(shape[1]):
            for j in range(shape[2]):
                a = labels[i, j + margin]
                b = labels[i + dy, j + margin + dx]
                if a == 255 or b == 255:
                    continue
                bg[d, i, j] = a == b == 0
                fg[d, i, j] = a == b and a > 0
                neg[d, i, j] = a != b
    return bg, fg, neg


def test_pair_labels_4x4_with_ignore_by_loop():
    labels = np.array([
        [0, 0, 1, 1],
        [0, 255, 1, 2],
        [0, 2, 2, 2],
        [255, 2, 0, 0],
    ], dtype=np.uint8)
    pairs = PathIndex(2).pair_labels(labels)
    bg, fg, neg = _loop_pair_labels(labels, 2)
    assert pairs.bg_pos.shape == (4, 3, 2)
    np.testing.assert_array_equal(pairs.bg_pos, bg)
    np.testing.assert_array_equal(pairs.fg_pos, fg)
    np.testing.assert_array_equal(pairs.neg, neg)
    # Spot checks: source (0, 1) label 0; (0, 1) -> (0, 2) is 0 vs 1: negative;
    # (0, 1) -> (1, 1) hits 255: no set; (1, 2) -> (2, 2) is 1 vs 2: negative.
    assert pairs.neg[0, 0, 0] and not pairs.bg_pos[0, 0, 0]
    assert not (pairs.bg_pos[2, 0, 0] or pairs.fg_pos[2, 0, 0] or pairs.neg[2, 0, 0])
    assert pairs.neg[2, 1, 1]


def test_pair_labels_random_radius_3_by_loop():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(7, 9))
    pairs = PathIndex(3).pair_labels(labels)
    for got, want in zip(pairs, _loop_pair_labels(labels, 3)):
        np.testing.assert_array_equal(got, want)
    # The three sets are disjoint.
    assert not (pairs.bg_pos & pairs.fg_pos).any()
    assert not ((pairs.bg_pos | pairs.fg_pos) & pairs.neg).any()


def test_pair_differences_of_coordinates_are_minus_directions():
    index = PathIndex(3)
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    coordinates = torch.stack([ys, xs])[None]
    differences = index.pair_differences(coordinates)
    assert differences.shape == (1, 2, index.num_directions, 4, 4)
    expected = -torch.as_tensor(index.directions, dtype=torch.float32).t()[None, :, :, None, None]
    assert torch.equal(differences, expected.expand_as(differences))
