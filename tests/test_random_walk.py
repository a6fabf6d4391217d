"""Sparse random walk against IRNet's dense reference, hand-worked cases and invariants."""
from __future__ import annotations

import pytest
import torch

from bench_random_walk import benchmark_random_walk, synthetic_walk_inputs
from irnet_moana.random_walk import affinity_entries, chebyshev_power_series, propagate_to_edge
from reference import dense_affinity_matrix, dense_propagate_reference, dense_transition_matrix


def _assert_matches_reference(cams: torch.Tensor, edge: torch.Tensor, **kwargs) -> None:
    walked = propagate_to_edge(cams, edge, **kwargs)
    reference = dense_propagate_reference(cams.double().cpu(), edge.double().cpu(), **kwargs)
    assert walked.dtype == torch.float32
    walked = walked.cpu().double()
    assert (walked - reference).abs().max() / reference.abs().max() < 1e-4
    assert torch.equal(walked.argmax(0), reference.argmax(0))


@pytest.mark.parametrize("shape", [(7, 9), (12, 16), (16, 16), (1, 1), (1, 6), (5, 1), (5, 3), (10, 3)])
def test_matches_dense_reference_with_ring_boundaries(shape):
    cams, edge = synthetic_walk_inputs(*shape, num_classes=3, seed=sum(shape))
    _assert_matches_reference(cams, edge)


@pytest.mark.parametrize("shape", [(7, 9), (12, 16)])
def test_matches_dense_reference_with_random_boundaries(shape):
    generator = torch.Generator().manual_seed(shape[0])
    cams = torch.rand(3, *shape, generator=generator)
    # Uniform noise to the 4th power keeps many paths passable, so the walk mixes.
    edge = torch.rand(1, *shape, generator=generator) ** 4
    _assert_matches_reference(cams, edge)
    _assert_matches_reference(cams, edge, radius=3, beta=4.0, exp_times=5)


def test_affinity_entries_match_dense_affinities():
    edge = torch.rand(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    entries = affinity_entries(edge, radius=5, beta=10.0)
    scaled = dense_affinity_matrix(edge, radius=5) ** 10
    torch.testing.assert_close(entries.csr(entries.values).to_dense(), scaled)
    torch.testing.assert_close(entries.degree, scaled.sum(1))
    # Row p's entries divided by its degree are IRNet's transition matrix, transposed.
    walk = entries.csr(entries.values / entries.degree[entries.rows]).to_dense()
    torch.testing.assert_close(walk, dense_transition_matrix(edge, radius=5, beta=10.0).t())
    assert torch.equal(entries.rows, torch.repeat_interleave(torch.arange(48), entries.crow.diff()))


def test_affinity_pattern_satisfies_csr_invariants():
    # Sorted, distinct columns per row; torch checks this on request.
    entries = affinity_entries(torch.rand(9, 13))
    torch.sparse_csr_tensor(entries.crow, entries.cols, entries.values, size=(117, 117),
                            check_invariants=True)
    # Each row: itself plus its neighbours within radius 5 inside the image.
    interior = 4 * 13 + 6
    assert entries.crow[interior + 1] - entries.crow[interior] == 69


@pytest.mark.parametrize("power", [1, 2, 3, 8, 256])
def test_chebyshev_series_of_a_power(power):
    coefficients, tails = chebyshev_power_series(power)
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    # T_k(x) = cos(k arccos x)
    series = sum(c * torch.cos(k * torch.arccos(x)) for k, c in enumerate(coefficients))
    torch.testing.assert_close(series, x ** power, atol=1e-12, rtol=0)
    assert sum(coefficients) == pytest.approx(1.0)
    assert all(c >= 0 for c in coefficients) and all(c == 0 for c in coefficients[1 - power % 2::2])
    assert tails[-1] == 0 and tails[0] == pytest.approx(1 - coefficients[0])
    with pytest.raises(ValueError):
        chebyshev_power_series(0)


@pytest.mark.parametrize("rtol", [1e-2, 1e-4])
def test_truncation_error_stays_within_rtol_of_each_channel(rtol):
    # In float64 the rounding is negligible: what is left is the truncation,
    # bounded per pixel by rtol times the channel's largest output.
    cams, edge = synthetic_walk_inputs(16, 20, num_classes=4, seed=6)
    cams, edge = cams.double(), edge.double()
    reference = dense_propagate_reference(cams, edge)
    walked = propagate_to_edge(cams, edge, rtol=rtol)
    error = (walked - reference).abs().amax((1, 2))
    assert (error <= rtol * reference.abs().amax((1, 2))).all()
    exact = propagate_to_edge(cams, edge)
    assert ((exact - reference).abs().amax((1, 2)) < 1e-10 * reference.abs().amax((1, 2))).all()


def test_zero_cams_walk_to_zero():
    edge = torch.rand(6, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(propagate_to_edge(torch.zeros(2, 6, 7), edge), torch.zeros(2, 6, 7))


def test_two_pixel_image_by_hand():
    # One pair, affinity a = 1 - max(0, 0.5) = 0.5, a^2 = 0.25: P = [[.8, .2], [.2, .8]].
    cams = torch.tensor([[[1.0, 4.0]]], dtype=torch.float64)
    edge = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    # Start: cams * (1 - edge) = (1, 2).
    one_step = propagate_to_edge(cams, edge, radius=2, beta=2.0, exp_times=0)
    torch.testing.assert_close(one_step, torch.tensor([[[1.2, 1.8]]], dtype=torch.float64))
    two_steps = propagate_to_edge(cams, edge, radius=2, beta=2.0, exp_times=1)
    torch.testing.assert_close(two_steps, torch.tensor([[[1.32, 1.68]]], dtype=torch.float64))


def test_edge_layouts_and_output_shape():
    cams, edge = synthetic_walk_inputs(9, 11, num_classes=2, seed=3)
    flat = propagate_to_edge(cams, edge, exp_times=3)
    assert flat.shape == (2, 9, 11)
    assert torch.equal(flat, propagate_to_edge(cams, edge[None], exp_times=3))
    with pytest.raises(ValueError):
        propagate_to_edge(cams, edge[:, :-1])


def _neighbour_count_plus_one(height: int, width: int, radius: int) -> torch.Tensor:
    """Degree of each pixel when every affinity is 1: itself and all pixels within the radius."""
    degree = torch.zeros(height, width, dtype=torch.float64)
    for y in range(height):
        for x in range(width):
            degree[y, x] = sum(
                1
                for v in range(height)
                for u in range(width)
                if (v - y) ** 2 + (u - x) ** 2 < radius ** 2
            )
    return degree


def test_zero_boundary_converges_to_degree_weighted_mean():
    # P = D^-1 A with A symmetric keeps sum_i d_i v_i, and 256 steps on a
    # small connected grid reach the fixed point: a constant per channel,
    # which must then equal sum_i d_i v_i / sum_i d_i.
    cams = torch.rand(2, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    walked = propagate_to_edge(cams, torch.zeros(8, 10))
    degree = _neighbour_count_plus_one(8, 10, 5)
    expected = (cams * degree).sum((1, 2)) / degree.sum()
    torch.testing.assert_close(walked, expected.view(2, 1, 1).expand_as(walked))


def test_degree_weighted_mass_is_kept_with_boundaries():
    cams, edge = synthetic_walk_inputs(10, 12, num_classes=3, seed=4)
    cams, edge = cams.double(), edge.double()
    walked = propagate_to_edge(cams, edge, exp_times=4)
    start = cams * (1 - edge)
    degree = (dense_affinity_matrix(edge) ** 10).sum(0).view(10, 12)
    torch.testing.assert_close((walked * degree).sum((1, 2)), (start * degree).sum((1, 2)))
    # Each step is a weighted average, so values stay within the start's range.
    assert walked.min() >= start.min() - 1e-12 and walked.max() <= start.max() + 1e-12


def test_dense_affinity_matrix_entries_by_hand():
    # 1x3 image, radius 2: only the direction (0, 1) fits; pairs (0,1) and (1,2).
    edge = torch.tensor([[0.25, 0.0, 0.5]], dtype=torch.float64)
    expected = torch.tensor([
        [1.0, 0.75, 0.0],
        [0.75, 1.0, 0.5],
        [0.0, 0.5, 1.0],
    ], dtype=torch.float64)
    torch.testing.assert_close(dense_affinity_matrix(edge, radius=2), expected)


def test_benchmark_rows():
    rows = benchmark_random_walk(shapes=((8, 8),), num_classes=(2,), large=(12, 12),
                                 repeats=2, min_seconds=0.0, threads=1)
    assert [(r["height"], r["width"], r["num_classes"]) for r in rows] == [(8, 8, 2), (12, 12, 2)]
    small, large = rows
    assert small["argmax_equal"] is True and small["max_rel_error"] < 1e-4
    assert small["speedup"] == pytest.approx(small["dense_s"] / small["sparse_s"])
    assert small["dense_matrix_bytes"] == 64 * 64 * 4
    assert large["dense_s"] is None and large["argmax_equal"] is None
    assert large["dense_matrix_bytes"] == 144 * 144 * 4
    assert large["sparse_s"] > 0 and large["sparse_matrix_bytes"] > 0
    assert small["sparse_calls"] == small["dense_calls"] == large["sparse_calls"] == 2
    assert small["sparse_cold_s"] > 0 and small["sparse_median_s"] >= small["sparse_s"]
    assert small["speedup_cold"] == pytest.approx(small["dense_s"] / small["sparse_cold_s"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_dense_reference():
    cams, edge = synthetic_walk_inputs(12, 16, num_classes=3, seed=5)
    walked = propagate_to_edge(cams.cuda(), edge.cuda())
    assert walked.device.type == "cuda"
    _assert_matches_reference(cams.cuda(), edge.cuda())
