"""Time the sparse random walk against IRNet's dense reference, on the same inputs, side by side.

:func:`benchmark_random_walk` runs
:func:`irnet_moana.random_walk.propagate_to_edge` (the walk make_pseudo_masks
runs) and :func:`reference.dense_propagate_reference` on synthetic CAMs and
boundary maps (:func:`synthetic_walk_inputs`, also used by the tests) and
returns one row of times, memory and agreement per shape and class count.
``benchmark.py``'s ``random_walk`` part runs it and summarises the rows:

    python tools/benchmark.py demo --only random_walk

Peak memory is reported two ways:

* ``*_peak_rss_bytes``: growth of the process's peak resident set during one
  call, measured by resetting the kernel's peak counter (write ``5`` to
  ``/proc/self/clear_refs``, Linux >= 4.0) and reading ``VmHWM`` afterwards.
  It sees every allocation (torch's included) at page granularity. Free heap
  memory is returned to the kernel first (glibc ``malloc_trim``) so that
  buffers recycled from earlier frees are counted; what the allocator keeps
  anyway makes it a lower bound for small buffers, while large buffers (the
  dense matrices) are fresh mappings and counted in full. ``None`` where the
  counter cannot be reset.
* ``dense_matrix_bytes`` / ``sparse_matrix_bytes``: the analytic size of one
  ``HW x HW`` float32 matrix (the squaring keeps at least two alive) and the
  size of the CSR operator (values + column indices + row pointers).
"""
from __future__ import annotations

import ctypes
import statistics
import time
from typing import Callable, NamedTuple

import torch

from irnet_moana.random_walk import affinity_entries, clear_caches, propagate_to_edge

from reference import dense_propagate_reference

_FLOAT32_BYTES = 4


def synthetic_walk_inputs(
    height: int, width: int, num_classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic CAM-like blobs ``(C, H, W)`` and a boundary map ``(H, W)`` with ring edges.

    Uniform noise would make almost every path contain a high value, so the
    walk would barely move; rings of high boundary over a low background
    give regions the walk fills and edges it stops at, as in real images.
    """
    generator = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, -1)

    def random_centres(count: int) -> torch.Tensor:
        return torch.rand(count, 2, generator=generator) * torch.tensor([height, width])

    scale = min(height, width)
    cams = torch.zeros(num_classes, height, width)
    for k, (cy, cx) in enumerate(random_centres(num_classes).tolist()):
        spread = scale * (0.1 + 0.2 * torch.rand(1, generator=generator).item())
        cams[k] = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * spread ** 2))
    cams = cams / cams.amax(dim=(1, 2), keepdim=True)

    edge = 0.05 * torch.rand(height, width, generator=generator)
    for cy, cx in random_centres(3).tolist():
        ring_radius = scale * (0.15 + 0.25 * torch.rand(1, generator=generator).item())
        distance = torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
        edge = torch.maximum(edge, 0.95 * torch.exp(-((distance - ring_radius) ** 2) / 2.0))
    return cams, edge


def _read_peak_rss_kib() -> int | None:
    """``VmHWM`` of this process in KiB, or ``None`` off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> int | None:
    """Reset the peak resident set to the current one; its value in KiB, or ``None``."""
    # Hand freed heap pages back to the kernel first, so that buffers the
    # measured call gets from earlier frees are faulted in again and counted.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return None
    return _read_peak_rss_kib()


class _Timing(NamedTuple):
    result: torch.Tensor
    best_s: float
    median_s: float
    calls: int
    peak_rss_bytes: int | None


def call_times(run: Callable[[], object], repeats: int, min_seconds: float) -> list[float]:
    """Seconds of each call of ``run``, called until there are ``repeats`` calls lasting ``min_seconds`` in all.

    As ``timeit``'s autorange does: every method gets at least ``repeats``
    calls, and a fast one more, since a short call is the more exposed to a
    shared machine's hiccups.
    """
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _measure(run: Callable[[], torch.Tensor], repeats: int, min_seconds: float) -> _Timing:
    """Result and peak RSS growth (bytes) of a warm-up call; best and median time of the timed calls
    (:func:`call_times`)."""
    baseline = _reset_peak_rss()
    result = run()
    peak = _read_peak_rss_kib()
    peak_growth = None if baseline is None or peak is None else (peak - baseline) * 1024
    times = call_times(run, repeats, min_seconds)
    return _Timing(result, min(times), statistics.median(times), len(times), peak_growth)


def _cold_walk(cams: torch.Tensor, edge: torch.Tensor, **settings) -> torch.Tensor:
    """The sparse walk from scratch, its per-size index pattern rebuilt as the dense reference rebuilds its own."""
    clear_caches()
    return propagate_to_edge(cams, edge, **settings)


def _sparse_matrix_bytes(edge: torch.Tensor, radius: int, beta: float) -> int:
    """Bytes held by the CSR operator: values, column indices and row pointers."""
    entries = affinity_entries(edge, radius=radius, beta=beta)
    return sum(t.numel() * t.element_size() for t in (entries.values, entries.cols, entries.crow))


def benchmark_random_walk(
    shapes: tuple[tuple[int, int], ...] = ((32, 32), (48, 64), (64, 64)),
    num_classes: tuple[int, ...] = (3, 20),
    large: tuple[int, int] | None = (128, 128),
    repeats: int = 3,
    min_seconds: float = 1.0,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    threads: int | None = 2,
    seed: int = 0,
) -> list[dict]:
    """Time the sparse random walk against the dense reference on the CPU, side by side.

    One row per (shape, class count): sizes; the best and median time in
    seconds of each method over at least ``repeats`` timed calls lasting
    ``min_seconds`` in all (``*_calls`` says how many), after one untimed
    warm-up call, the one whose memory is measured. ``sparse_*`` time calls
    with the per-size index pattern kept from the previous call, as
    make_pseudo_masks runs over a dataset; the dense reference rebuilds its
    indices every call, which is about 1% of its time. ``sparse_cold_*`` time
    the sparse call from scratch, pattern included. ``speedup`` and
    ``speedup_cold`` are dense over sparse (best times); ``argmax_equal`` and
    ``max_rel_error`` (max absolute difference over the max of the dense
    result) compare the results; the analytic matrix sizes and the measured
    peak RSS growth of each (see the module docstring) follow. The
    ``large`` shape runs the sparse method only, with the largest class count
    (dense fields are ``None``; ``dense_matrix_bytes`` still says what the
    dense method would need). ``threads`` sets torch's intra-op threads for
    the run and is restored afterwards.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    settings = dict(radius=radius, beta=beta, exp_times=exp_times)
    cases = [(shape, c, True) for shape in shapes for c in num_classes]
    if large is not None:
        cases.append((large, max(num_classes), False))
    rows = []
    try:
        for (height, width), classes, with_dense in cases:
            cams, edge = synthetic_walk_inputs(height, width, classes, seed=seed)
            cold = _measure(lambda: _cold_walk(cams, edge, **settings), repeats, min_seconds)
            sparse = _measure(lambda: propagate_to_edge(cams, edge, **settings), repeats, min_seconds)
            num_pixels = height * width
            row = {
                "height": height, "width": width, "num_classes": classes,
                "threads": torch.get_num_threads(),
                "sparse_s": sparse.best_s, "sparse_median_s": sparse.median_s, "sparse_calls": sparse.calls,
                "sparse_cold_s": cold.best_s, "sparse_cold_median_s": cold.median_s,
                "sparse_peak_rss_bytes": cold.peak_rss_bytes,
                "sparse_matrix_bytes": _sparse_matrix_bytes(edge, radius, beta),
                "dense_matrix_bytes": num_pixels * num_pixels * _FLOAT32_BYTES,
                "dense_s": None, "dense_median_s": None, "dense_calls": None, "dense_peak_rss_bytes": None,
                "speedup": None, "speedup_cold": None, "argmax_equal": None, "max_rel_error": None,
            }
            if with_dense:
                dense = _measure(lambda: dense_propagate_reference(cams, edge, **settings), repeats, min_seconds)
                row.update(
                    dense_s=dense.best_s, dense_median_s=dense.median_s, dense_calls=dense.calls,
                    dense_peak_rss_bytes=dense.peak_rss_bytes, speedup=dense.best_s / sparse.best_s,
                    speedup_cold=dense.best_s / cold.best_s,
                    argmax_equal=bool(torch.equal(sparse.result.argmax(0), dense.result.argmax(0))),
                    max_rel_error=float((sparse.result - dense.result).abs().max()
                                        / dense.result.abs().max()),
                )
            rows.append(row)
    finally:
        torch.set_num_threads(previous_threads)
    return rows
