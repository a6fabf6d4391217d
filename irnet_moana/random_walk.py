"""Random walk of CAMs over IRNet's boundary affinities: a sparse operator and a Chebyshev series.

IRNet (``propagate_to_edge``) builds the dense ``HW x HW`` affinity matrix
``A`` of all pixel pairs within the radius (unit diagonal, symmetric), takes
``T = A**beta`` divided by its column sums (the diagonal included), squares it
``exp_times`` times and returns ``x @ T**n`` (``n = 2**exp_times``) for the row
vectors ``x = cams * (1 - edge)``. Transposed, that is ``P**n v`` with
``P = T.T = D^-1 A**beta`` (``D`` the diagonal of degrees, the row sums of
``A**beta``): ``n`` steps in which every pixel takes the affinity-weighted
average of its neighbours.

We never form a dense matrix. ``A**beta`` has one entry per pixel within the
radius (69 per row at radius 5) and is kept in CSR form: ``O(HW)`` memory
against IRNet's ``O((HW)**2)``. Rather than ``n`` sparse products with ``P``
we use ``P = D^-1/2 S D^1/2`` with ``S = D^-1/2 A**beta D^-1/2``, symmetric
and similar to the stochastic ``P``, so its spectrum lies in ``[-1, 1]``, and
expand ``x**n`` in Chebyshev polynomials::

    x**n = sum_k c_k T_k(x),   c_k = 2**(1-n) binom(n, (n-k)/2)   (k = n, n-2, ...; c_0 halved)

The ``c_k`` are non-negative, sum to 1 and fall off like ``exp(-k**2 / 2n)``,
so the series cut at degree ``K`` errs by at most ``sum_{k>K} c_k`` anywhere
on ``[-1, 1]``, hence in the 2-norm of ``S**n``. ``K`` is chosen per call so
that this bound, carried back through ``D^-1/2``, stays below ``rtol`` times
each channel's output scale. For ``n = 256`` that takes 80 to 110 products
instead of 256, and the three-term recurrence is at least as accurate in
float32 as the repeated product.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .relations import PathIndex

# Truncation tolerance relative to each channel's output scale, per dtype. In
# float32 the walk's rounding alone moves each channel by about 1e-4 of its
# maximum (either method, against a float64 run), ten times this bound.
_DEFAULT_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _boundary_2d(edge: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``edge`` given as ``(H, W)`` or ``(1, H, W)``, checked against the CAM size."""
    if edge.dim() == 3 and edge.shape[0] == 1:
        edge = edge[0]
    if tuple(edge.shape) != (height, width):
        raise ValueError(f"edge must be ({height}, {width}) or (1, {height}, {width}), "
                         f"got {tuple(edge.shape)}")
    return edge


@functools.lru_cache(maxsize=8)
def _path_index(radius: int) -> PathIndex:
    return PathIndex(radius)


class AffinityEntries(NamedTuple):
    """The non-zero pattern of ``A**beta`` in CSR order, with each entry's row and column.

    ``rows``, ``cols`` and ``crow`` are shared with the per-size cache: do not
    modify them in place.
    """

    values: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    crow: torch.Tensor
    degree: torch.Tensor

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """An ``(HW, HW)`` CSR tensor with this pattern and ``values``."""
        num_pixels = self.degree.numel()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            warnings.filterwarnings("ignore", message="Sparse invariant checks")
            return torch.sparse_csr_tensor(
                self.crow, self.cols, values, size=(num_pixels, num_pixels), check_invariants=False,
            )


class _Pattern(NamedTuple):
    """Where the entries of ``A`` are for one image size; depends on nothing else."""

    inside: torch.Tensor
    backward_reads: torch.Tensor
    padding: tuple[int, int]
    kept: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    crow: torch.Tensor


def clear_caches() -> None:
    """Forget the per-size index patterns and path indices (for cold timings, or to free their memory)."""
    _pattern.cache_clear()
    _path_index.cache_clear()


@functools.lru_cache(maxsize=8)
def _pattern(height: int, width: int, radius: int, device: torch.device) -> _Pattern:
    """The CSR pattern of ``A`` for an ``(height, width)`` image, cached per size.

    Like IRNet's path index for its default size, this is shared by all the
    images of one size, which are most of a dataset's.
    """
    num_pixels = height * width
    directions = torch.as_tensor(_path_index(radius).directions, device=device)
    # Row p of A has one entry per offset o with p + o inside the image. Taking
    # the offsets in lexicographic (dy, dx) order, i.e. the mirrored directions
    # reversed, zero, then the directions, makes the columns of each row come
    # out sorted, as CSR requires, without a sort.
    offsets = torch.cat([-directions.flip(0), directions.new_zeros(1, 2), directions])
    rows = torch.arange(height, device=device).view(1, height, 1) + offsets[:, 0].view(-1, 1, 1)
    cols = torch.arange(width, device=device).view(1, 1, width) + offsets[:, 1].view(-1, 1, 1)
    valid = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).reshape(len(offsets), -1)

    # The entry of offset -d at p is the pair (p - d, p), held by the forward
    # affinity of d at p - d, i.e. at flat index p - (dy * W + dx). Where
    # p - d is outside the image that flat read either falls into zero
    # padding (in front, or behind when W < radius makes dy * W + dx < 0) or
    # wraps onto a pixel whose destination p lies outside its row window,
    # whose forward entry is zero.
    flat_offsets = offsets[:, 0] * width + offsets[:, 1]
    forward_offsets = flat_offsets[len(directions) + 1:]
    lead, trail = max(0, int(forward_offsets.max())), max(0, -int(forward_offsets.min()))
    reads = torch.arange(num_pixels, device=device) + lead - forward_offsets[:, None]

    # CSR groups entries by row: offsets vary fastest.
    kept = valid.t().flatten().nonzero().squeeze(1)
    entry_rows = kept // len(offsets)
    entry_cols = entry_rows + flat_offsets[kept % len(offsets)]
    crow = torch.zeros(num_pixels + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(valid.sum(0), 0)
    # int32 indices: the CPU (MKL) kernel runs about 1.5x faster than with int64.
    return _Pattern(valid[len(directions) + 1:], reads, (lead, trail), kept, entry_rows,
                    entry_cols.int(), crow.int())


@torch.no_grad()
def affinity_entries(edge: torch.Tensor, radius: int = 5, beta: float = 10.0) -> AffinityEntries:
    """``A**beta`` of an ``(H, W)`` boundary map in CSR order, and its row sums ``degree``.

    Pixels are numbered row-major. ``A`` holds ``1 - max(edge along the path)``
    for every pair of image pixels at a half-disc offset within ``radius``
    (both orders) and 1 on the diagonal. Built on ``edge``'s device, in its dtype.
    """
    height, width = edge.shape
    index = _path_index(radius)
    margin = index.margin
    pattern = _pattern(height, width, radius, edge.device)
    # Padding below and on both sides makes every image pixel a source of the
    # path index; pairs reaching into the padding are masked out, and a path
    # between two image pixels stays in their bounding box, inside the image.
    padded = F.pad(edge[None, None], (margin, margin, 0, margin), value=1.0)
    forward = index.edge_to_affinity(padded)[0].reshape(index.num_directions, -1) ** beta
    forward = torch.where(pattern.inside, forward, 0.0)
    backward = F.pad(forward, pattern.padding).gather(1, pattern.backward_reads)
    weights = torch.cat([backward.flip(0), torch.ones_like(forward[:1]), forward])
    return AffinityEntries(weights.t().flatten()[pattern.kept], pattern.rows, pattern.cols,
                           pattern.crow, weights.sum(0))


@functools.lru_cache(maxsize=8)
def chebyshev_power_series(power: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``x**power = sum_k c_k T_k(x)``: the ``c_k`` (``k = 0 .. power``) and the tails ``sum_{j>k} c_j``."""
    if power < 1:
        raise ValueError(f"power must be at least 1, got {power}")
    coefficients = [0.0] * (power + 1)
    log_scale = math.lgamma(power + 1) + (1 - power) * math.log(2.0)
    for k in range(power % 2, power + 1, 2):
        j = (power - k) // 2
        coefficients[k] = math.exp(log_scale - math.lgamma(j + 1) - math.lgamma(power - j + 1))
    coefficients[0] /= 2.0
    tails = [0.0] * (power + 1)
    # Summed from the small end so that tiny tails keep their precision.
    for k in range(power - 1, -1, -1):
        tails[k] = tails[k + 1] + coefficients[k + 1]
    return tuple(coefficients), tuple(tails)


def _series_degree(tails: tuple[float, ...], bound: float) -> int:
    """The lowest degree whose tail is at most ``bound`` (the full degree if none is)."""
    return next((k for k, tail in enumerate(tails) if tail <= bound), len(tails) - 1)


@torch.no_grad()
def propagate_to_edge(
    cams: torch.Tensor,
    edge: torch.Tensor,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    rtol: float | None = None,
) -> torch.Tensor:
    """IRNet's random walk: ``cams * (1 - edge)`` propagated ``2**exp_times`` steps.

    ``cams`` is ``(C, H, W)``, ``edge`` the boundary map ``(H, W)`` or
    ``(1, H, W)`` at the same resolution. Returns ``(C, H, W)`` on ``cams``'s
    device, in float32 (float64 if ``cams`` is float64). ``rtol`` bounds the
    series truncation error of every pixel relative to its channel's output
    scale (default 1e-5 in float32, 1e-12 in float64). Like IRNet's walk it
    keeps each channel's degree-weighted sum ``sum_i d_i v_i``, here to within
    that tolerance.
    """
    if cams.dim() != 3:
        raise ValueError(f"cams must be (C, H, W), got {tuple(cams.shape)}")
    if exp_times < 0:
        raise ValueError(f"exp_times must be >= 0, got {exp_times}")
    channels, height, width = cams.shape
    dtype = torch.promote_types(cams.dtype, torch.float32)
    rtol = _DEFAULT_RTOL[dtype] if rtol is None else rtol
    edge = _boundary_2d(edge, height, width).to(device=cams.device, dtype=dtype)

    entries = affinity_entries(edge, radius=radius, beta=beta)
    root_degree = entries.degree.sqrt()
    symmetric = entries.csr(entries.values / (root_degree[entries.rows] * root_degree[entries.cols]))
    start = (cams.to(dtype) * (1.0 - edge)).reshape(channels, -1).t().contiguous()
    state = start * root_degree[:, None]

    # Error of pixel i <= d_i^-1/2 * tail * ||state||_2, while the conserved
    # sum_i d_i out_i = sum_i d_i start_i puts each channel's largest |out|
    # at or above |d . start| / sum(d).
    coefficients, tails = chebyshev_power_series(2 ** exp_times)
    spread = state.norm(dim=0) / entries.degree.min().sqrt()
    scale = (entries.degree @ start).abs() / entries.degree.sum()
    moving = spread > 0
    bound = (rtol * scale[moving] / spread[moving]).min().item() if moving.any() else math.inf
    degree = _series_degree(tails, bound)

    result = coefficients[0] * state
    if degree > 0:
        previous, current = state, symmetric @ state
        if coefficients[1]:
            result.add_(current, alpha=coefficients[1])
        for k in range(2, degree + 1):
            # T_k = 2 S T_{k-1} - T_{k-2}, written over T_{k-2}, which is not needed again.
            previous, current = current, torch.addmm(previous, symmetric, current,
                                                     beta=-1.0, alpha=2.0, out=previous)
            if coefficients[k]:
                result.add_(current, alpha=coefficients[k])
    result = result / root_degree[:, None]
    return result.t().reshape(channels, height, width)


def walk_to_image(cams: torch.Tensor, edge: torch.Tensor, size: tuple[int, int], radius: int = 5,
                  beta: float = 10.0, exp_times: int = 8) -> torch.Tensor:
    """IRNet's walked scores at image size: the walk, x4 bilinear upsampling, crop, division by the global max.

    ``cams`` (C, h, w) and ``edge`` at stride 4; returns (C, H, W) float32.
    """
    walked = propagate_to_edge(cams, edge, radius=radius, beta=beta, exp_times=exp_times)
    up = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :size[0], :size[1]]
    return up / up.max().clamp_min(1e-12)
