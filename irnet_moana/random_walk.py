"""Random walk of CAMs over IRNet's boundary affinities, with a sparse transition matrix.

IRNet (``propagate_to_edge``) builds the dense ``HW x HW`` affinity matrix
``A`` of all pixel pairs within the radius (unit diagonal, symmetric), takes
``T = A**beta`` divided by its column sums (the diagonal included), squares it
``exp_times`` times and returns ``x @ T**(2**exp_times)`` for the row vectors
``x = cams * (1 - edge)``. Transposed, each step is ``v <- P v`` with
``P = T.T = D^-1 A**beta`` (``D`` the diagonal of degrees): every pixel takes
the affinity-weighted average of its neighbours. We keep ``P`` sparse (one
entry per pixel within the radius, 69 per row at radius 5) and apply it
``2**exp_times`` times, which equals the dense repeated squaring up to float
rounding, in ``O(HW)`` memory and ``O(HW * 2**exp_times)`` time instead of
``O((HW)**2)`` and ``O((HW)**3 * exp_times)``.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .relations import PathIndex


def _boundary_2d(edge: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``edge`` given as ``(H, W)`` or ``(1, H, W)``, checked against the CAM size."""
    if edge.dim() == 3 and edge.shape[0] == 1:
        edge = edge[0]
    if tuple(edge.shape) != (height, width):
        raise ValueError(f"edge must be ({height}, {width}) or (1, {height}, {width}), "
                         f"got {tuple(edge.shape)}")
    return edge


@torch.no_grad()
def transition_operator(edge: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """The row-stochastic walk operator ``P = D^-1 A**beta`` as an ``(HW, HW)`` sparse CSR tensor.

    ``edge`` is an ``(H, W)`` boundary map in ``[0, 1]``; pixels are numbered
    row-major. ``A`` holds ``1 - max(edge along the path)`` for every pair of
    pixels of the image at a half-disc offset within ``radius`` (both orders)
    and 1 on the diagonal. ``P`` is the transpose of IRNet's transition matrix.
    Built on ``edge``'s device, in ``edge``'s dtype.
    """
    height, width = edge.shape
    device = edge.device
    index = PathIndex(radius)
    margin = index.margin
    # Padding below and on both sides makes every image pixel a source of the
    # path index; pairs reaching into the padding are masked out, and a path
    # between two image pixels stays in their bounding box, inside the image.
    padded = F.pad(edge[None, None], (margin, margin, 0, margin), value=1.0)
    forward = index.edge_to_affinity(padded)[0] ** beta

    # Row p of A has one entry per offset o with p + o inside the image. Taking
    # the offsets in lexicographic (dy, dx) order, i.e. the mirrored directions
    # reversed, zero, then the directions, makes the columns of each row come
    # out sorted, as CSR requires, without a sort.
    directions = torch.as_tensor(index.directions, device=device)
    offsets = torch.cat([-directions.flip(0), directions.new_zeros(1, 2), directions])
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    dst_rows = rows + offsets[:, 0].view(-1, 1, 1)
    dst_cols = cols + offsets[:, 1].view(-1, 1, 1)
    valid = (dst_rows >= 0) & (dst_rows < height) & (dst_cols >= 0) & (dst_cols < width)

    num_directions = len(directions)
    forward = torch.where(valid[num_directions + 1:], forward, 0.0)
    # The entry of offset -d at p is the pair (p - d, p), stored at source p - d.
    shifted = F.pad(forward, (margin, margin, margin, 0))
    backward = torch.stack([
        shifted[d, margin - dy:margin - dy + height, margin - dx:margin - dx + width]
        for d, (dy, dx) in enumerate(index.directions.tolist())
    ])
    weights = torch.cat([backward.flip(0), torch.ones_like(forward[:1]), forward])
    # A is symmetric, so IRNet's column sums are our row sums.
    weights = weights / weights.sum(0, keepdim=True)

    # CSR wants entries grouped by row: move the offset axis last.
    num_pixels = height * width
    valid = valid.permute(1, 2, 0).reshape(num_pixels, -1)
    kept = valid.flatten().nonzero().squeeze(1)
    values = weights.permute(1, 2, 0).flatten()[kept]
    col_ids = (dst_rows * width + dst_cols).permute(1, 2, 0).flatten()[kept]
    crow = torch.zeros(num_pixels + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(valid.sum(1), 0)
    # int32 indices: the CPU (MKL) kernel runs about 1.5x faster than with int64.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow.to(torch.int32), col_ids.to(torch.int32), values,
            size=(num_pixels, num_pixels), check_invariants=False,
        )


@torch.no_grad()
def propagate_to_edge(
    cams: torch.Tensor,
    edge: torch.Tensor,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
) -> torch.Tensor:
    """IRNet's random walk: ``cams * (1 - edge)`` propagated ``2**exp_times`` steps.

    ``cams`` is ``(C, H, W)``, ``edge`` the boundary map ``(H, W)`` or
    ``(1, H, W)`` at the same resolution. Returns ``(C, H, W)`` on ``cams``'s
    device, in float32 (float64 if ``cams`` is float64). Each step keeps the
    degree-weighted sum of each channel, ``sum_i d_i v_i`` with ``d_i`` the
    row sum of ``A**beta``.
    """
    if cams.dim() != 3:
        raise ValueError(f"cams must be (C, H, W), got {tuple(cams.shape)}")
    if exp_times < 0:
        raise ValueError(f"exp_times must be >= 0, got {exp_times}")
    channels, height, width = cams.shape
    dtype = torch.promote_types(cams.dtype, torch.float32)
    edge = _boundary_2d(edge, height, width).to(device=cams.device, dtype=dtype)

    operator = transition_operator(edge, radius=radius, beta=beta)
    state = (cams.to(dtype) * (1.0 - edge)).reshape(channels, -1).t().contiguous()
    for _ in range(2 ** exp_times):
        state = operator @ state
    return state.t().reshape(channels, height, width)
