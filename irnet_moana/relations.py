"""Pixel pairs within a radius: IRNet's path index, path affinities and pair labels.

A *direction* is an offset ``(dy, dx)`` from a source pixel to a destination
pixel. Only half of the disc of radius ``r`` is enumerated (``dy > 0``, or
``dy == 0`` and ``dx > 0``) because an affinity is symmetric: the pair
``(p, p - d)`` is the pair ``(p - d, p)`` seen from the other end.

Direction order (fixed, the channel order of every per-direction output here)::

    (0, 1), (0, 2), ..., (0, r - 1),
    then for dy = 1 .. r - 1, for dx = -(r - 1) .. r - 1: (dy, dx) if dy² + dx² < r².

This is the order in which IRNet enumerates its search directions. IRNet's own
tensors then regroup the channels by path length; we keep the enumeration
order, which only matters when comparing channel by channel with IRNet output.

Source convention (IRNet's crop): with ``margin = r - 1`` a map of size
``(H, W)`` has sources at rows ``0 .. H - margin - 1`` and columns
``margin .. W - margin - 1``, i.e. a ``(H - margin, W - 2 * margin)`` window, so
that every destination ``(y + dy, x + dx)`` of every direction lies inside the
map. Output element ``[d, i, j]`` is the pair from ``(i, j + margin)`` to
``(i + dy, j + margin + dx)`` in map coordinates. Pairs whose source lies in
the last ``margin`` rows or the outer ``margin`` columns are not represented.
"""
from __future__ import annotations

from typing import NamedTuple, TypeVar

import numpy as np
import torch

from .io import IGNORE

Maps = TypeVar("Maps", np.ndarray, torch.Tensor)


def search_directions(radius: int) -> np.ndarray:
    """The half-disc directions of ``radius`` as an ``(D, 2)`` int64 array of ``(dy, dx)``.

    The rows are in the order documented in this module; they are also the
    displacement targets of IRNet's displacement branch (see
    :meth:`PathIndex.pair_differences`).
    """
    if radius < 2:
        raise ValueError(f"radius must be at least 2 to contain a direction, got {radius}")
    directions = [(0, dx) for dx in range(1, radius)]
    directions += [
        (dy, dx)
        for dy in range(1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    return np.asarray(directions, dtype=np.int64)


def path_cells(dy: int, dx: int) -> np.ndarray:
    """Grid cells on the straight path from ``(0, 0)`` to ``(dy, dx)`` as an ``(L, 2)`` array.

    A cell belongs to the path when it lies in the bounding box of the two end
    points and its centre is at a distance strictly below one cell from the
    line through them (IRNet's rule; it gives a path one or two cells thick).
    Cells are sorted by their L1 distance from the source, then by ``y`` and
    ``x``: the source comes first and the destination last.
    """
    if dy == 0 and dx == 0:
        raise ValueError("the zero offset has no path")
    length_sq = dy * dy + dx * dx
    cells = [
        (y, x)
        for y in range(min(0, dy), max(0, dy) + 1)
        for x in range(min(0, dx), max(0, dx) + 1)
        # Squared distance to the line times length_sq, kept in integers so the
        # strict inequality is exact.
        if (dy * x - dx * y) ** 2 < length_sq
    ]
    cells.sort(key=lambda c: (abs(c[0]) + abs(c[1]), c[0], c[1]))
    return np.asarray(cells, dtype=np.int64)


class PairLabels(NamedTuple):
    """Boolean ``(D, H', W')`` pair sets in the module's source convention."""

    bg_pos: np.ndarray
    fg_pos: np.ndarray
    neg: np.ndarray


class PathIndex:
    """Directions, paths and pair operations for one radius.

    IRNet trains its boundary branch with ``radius=10`` at stride 4 and runs
    the random walk with ``radius=5``.
    """

    def __init__(self, radius: int) -> None:
        self.radius = radius
        self.margin = radius - 1
        self.directions = search_directions(radius)
        self.paths = tuple(path_cells(int(dy), int(dx)) for dy, dx in self.directions)

        # Every distinct cell is sliced out of the boundary map once; each path
        # is then a row of indices into that stack. Paths are batched by length
        # so that one gather + max reduces a whole group without padding.
        self._cells = sorted({(int(y), int(x)) for path in self.paths for y, x in path})
        cell_id = {cell: k for k, cell in enumerate(self._cells)}
        by_length: dict[int, list[int]] = {}
        for d, path in enumerate(self.paths):
            by_length.setdefault(len(path), []).append(d)
        self._groups: list[torch.Tensor] = []
        grouped_order: list[int] = []
        for length in sorted(by_length):
            members = by_length[length]
            table = [[cell_id[(int(y), int(x))] for y, x in self.paths[d]] for d in members]
            self._groups.append(torch.tensor(table, dtype=torch.int64))
            grouped_order.extend(members)
        self._to_direction_order = torch.as_tensor(np.argsort(grouped_order), dtype=torch.int64)

    @property
    def num_directions(self) -> int:
        """Number of directions ``D``."""
        return len(self.directions)

    def source_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(H', W')`` of the source window of a ``(height, width)`` map."""
        rows, cols = height - self.margin, width - 2 * self.margin
        if rows < 1 or cols < 1:
            raise ValueError(
                f"a {height}x{width} map has no source pixel at radius {self.radius}; "
                f"it needs at least {self.margin + 1}x{2 * self.margin + 1}"
            )
        return rows, cols

    def _window(self, maps: Maps, dy: int, dx: int) -> Maps:
        """The ``(..., H', W')`` view of ``maps`` shifted by ``(dy, dx)`` from the sources."""
        rows, cols = self.source_shape(maps.shape[-2], maps.shape[-1])
        left = self.margin + dx
        return maps[..., dy:dy + rows, left:left + cols]

    def edge_to_affinity(self, boundary: torch.Tensor) -> torch.Tensor:
        """Path affinities ``1 - max(boundary along the path)`` of every pair.

        ``boundary`` is ``(N, 1, H, W)`` with values in ``[0, 1]``; the result is
        ``(N, D, H', W')``, differentiable with respect to ``boundary``. The
        path includes both end pixels. As with IRNet's max pooling, each pair
        sends its gradient to one cell holding the path maximum.
        """
        if boundary.dim() != 4 or boundary.shape[1] != 1:
            raise ValueError(f"boundary must be (N, 1, H, W), got {tuple(boundary.shape)}")
        maps = boundary[:, 0]
        shifted = torch.stack([self._window(maps, y, x) for y, x in self._cells], dim=1)
        # max(dim) rather than amax: its backward needs only the argmax, so the
        # (N, D, L, H', W') gathered paths are freed after the forward pass.
        maxima = [
            shifted[:, table.to(boundary.device)].max(dim=2).values for table in self._groups
        ]
        grouped = torch.cat(maxima, dim=1)
        return 1.0 - grouped[:, self._to_direction_order.to(boundary.device)]

    def pair_differences(self, x: torch.Tensor) -> torch.Tensor:
        """``x[source] - x[destination]`` for every pair: ``(N, C, H, W) -> (N, C, D, H', W')``.

        For IRNet's displacement field this difference should equal the
        direction ``(dy, dx)`` (channel order y, x) on foreground pairs of one
        instance and zero on background pairs, since the field points from each
        pixel to its instance centre.
        """
        source = self._window(x, 0, 0)
        destinations = torch.stack(
            [self._window(x, int(dy), int(dx)) for dy, dx in self.directions], dim=2
        )
        return source.unsqueeze(2) - destinations

    def pair_labels(self, labels: np.ndarray) -> PairLabels:
        """Training pair sets from an ``(H, W)`` label map at the feature stride.

        Labels: 0 background, 1..C classes, 255 ignore. ``bg_pos``: both ends
        0; ``fg_pos``: both ends the same class > 0; ``neg``: different labels.
        A pair with 255 at either end is in no set.
        """
        if labels.ndim != 2:
            raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
        source = self._window(labels, 0, 0)[None]
        destination = np.stack([self._window(labels, int(dy), int(dx)) for dy, dx in self.directions])
        valid = (source != IGNORE) & (destination != IGNORE)
        same = (source == destination) & valid
        return PairLabels(
            bg_pos=same & (source == 0),
            fg_pos=same & (source > 0),
            neg=valid & ~same,
        )
