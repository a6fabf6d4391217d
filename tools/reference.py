"""Reference implementations the pipeline's fast code is compared against, written like IRNet's original code.

* IRNet's dense random walk (``misc/indexing.py``'s ``propagate_to_edge``,
  called by ``step/make_sem_seg_labels.py``, in the original code):
  :func:`dense_affinity_matrix` builds the ``HW x HW`` affinity matrix,
  :func:`dense_transition_matrix` normalises it and
  :func:`dense_propagate_reference` walks with it. The tests compare
  :func:`irnet_moana.random_walk.propagate_to_edge`, the sparse walk the
  pipeline runs, with it; ``bench_random_walk.py`` times both on the same
  inputs.
* IRNet's per-scale CAM loop (``step/make_cam.py`` of the original code):
  :func:`reference_style_cams`. The tests check that
  :func:`irnet_moana.stages.make_cams.image_cams` (folded BatchNorm,
  channels-last, reduced precision) gives its maps; ``benchmark.py`` times it as
  make_cams' baseline.

Neither is used by the pipeline: they trade speed and memory for being easy
to check line by line against the original. Imported by the scripts in this
folder and by the tests (pytest.ini's ``pythonpath`` puts this folder on ``sys.path``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from irnet_moana.models.cam_net import CAMNet
from irnet_moana.relations import PathIndex
from irnet_moana.stages.make_cams import max_normalize, strided_size, strided_up_size


def dense_affinity_matrix(edge: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """IRNet's dense symmetric affinity matrix ``A`` (``HW x HW``, unit diagonal) of an ``(H, W)`` map."""
    height, width = edge.shape
    padded_h, padded_w = height + radius, width + 2 * radius
    index = PathIndex(radius)
    padded = F.pad(edge[None, None], (radius, radius, 0, radius), value=1.0)
    affinity = index.edge_to_affinity(padded)[0]
    source_h, source_w = affinity.shape[-2:]

    flat = torch.arange(padded_h * padded_w).view(padded_h, padded_w)
    source = flat[:source_h, index.margin:index.margin + source_w].reshape(-1)
    dense = torch.zeros(padded_h * padded_w, padded_h * padded_w, dtype=edge.dtype)
    for d, (dy, dx) in enumerate(index.directions.tolist()):
        left = index.margin + dx
        target = flat[dy:dy + source_h, left:left + source_w].reshape(-1)
        dense[source, target] = affinity[d].reshape(-1)
        dense[target, source] = affinity[d].reshape(-1)
    dense.fill_diagonal_(1.0)

    dense = dense.view(padded_h, padded_w, padded_h, padded_w)
    dense = dense[:-radius, radius:-radius, :-radius, radius:-radius]
    return dense.reshape(height * width, height * width)


def dense_transition_matrix(edge: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """IRNet's transition matrix ``T``: ``A**beta`` divided by its column sums (diagonal included)."""
    scaled = dense_affinity_matrix(edge, radius) ** beta
    return scaled / scaled.sum(dim=0, keepdim=True)


def dense_propagate_reference(
    cams: torch.Tensor,
    edge: torch.Tensor,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
) -> torch.Tensor:
    """IRNet's dense random walk, ``(C, H, W)`` in, ``(C, H, W)`` out, on the CPU.

    Follows the original step by step: pad, path affinities on the padded
    grid, dense symmetric matrix with unit diagonal, crop to the image, column
    normalisation, ``exp_times`` squarings. Same interface as
    :func:`irnet_moana.random_walk.propagate_to_edge`; the computation dtype
    is ``cams``'s (use float64 for a tight reference). Needs ``(HW)^2`` memory.
    """
    channels, height, width = cams.shape
    edge = edge.reshape(height, width).to(cams.dtype).cpu()
    transition = dense_transition_matrix(edge, radius=radius, beta=beta)
    for _ in range(exp_times):
        transition = transition @ transition
    walked = (cams.cpu() * (1.0 - edge)).reshape(channels, -1) @ transition
    return walked.reshape(channels, height, width)


@torch.no_grad()
def reference_style_cams(model: CAMNet, pyramid: Sequence[torch.Tensor], size: Sequence[int],
                         keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IRNet's per-scale CAM loop: make_cams' (cam, high_res) computed the straightforward way.

    One fp32 forward per scale of the image and its flip as a batch of two
    (as IRNet's make_cam does), in the model's default memory layout, then the
    same resizing, summing and max normalisation as
    :func:`irnet_moana.stages.make_cams.image_cams`.
    """
    keys_t = torch.from_numpy(keys)
    low_size, up_size = strided_size(size, 4), strided_up_size(size, model.output_stride)
    low = torch.zeros((len(keys), *low_size))
    high = torch.zeros((len(keys), *up_size))
    for images in pyramid:
        maps = model.cams(images.contiguous())
        merged = (maps[0] + maps[1].flip(-1))[keys_t].unsqueeze(0)
        low += F.interpolate(merged, low_size, mode="bilinear", align_corners=False)[0]
        high += F.interpolate(merged, up_size, mode="bilinear", align_corners=False)[0]
    return max_normalize(low).numpy(), max_normalize(high[:, :size[0], :size[1]]).numpy()
