"""Side-by-side CPU timings of the pipeline's hot spots, on the same inputs in one run.

    python tools/benchmark.py SETTING [--set KEY=VALUE ...] [--run-dir DIR] [--only PART ...] [--out FILE]
    python tools/benchmark.py demo --run-dir runs/demo --only random_walk --walk-repeats 1

Four parts (``--only``; default all), each a function returning a dict of
absolute figures and ratios:

* ``make_cams`` (``bench_make_cams``): CAM inference (all scales, each
  with its flip) in fp32 and in the precision ``auto`` picks on this CPU, as
  the make_cams stage runs it, against ``reference.reference_style_cams``,
  IRNet's per-scale loop (fp32, default memory layout, unfolded BatchNorm,
  image and flip as one batch of two). Uses the CAM model of ``--run-dir``
  (<run_dir>/cam/model.pth) when there is one, else random weights (the
  output says which), on images of the setting's ``data.root``;
* ``random_walk`` (``bench_random_walk``): the sparse random walk against
  the dense reference (``bench_random_walk.benchmark_random_walk``);
* ``crf`` (``bench_crf``): make_ir_labels' per-image work (two dense CRF
  passes) in a process pool of 1 and of all cores, on ``data.root``'s images;
* ``deeplab`` (``bench_deeplab``): multi-scale DeepLab v2 inference in
  fp32 (default layout and channels-last) and channels-last in the ``auto``
  precision.

Methods that are compared are run in turn on each input (round robin), so a
change in the load of a shared machine shifts all of them alike;
``machine_info`` records what the figures were measured on (CPU model,
its instruction kind: AVX2, AVX-512, AVX-512 bf16 or AMX; the load average
included). The defaults take a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from deeplab.model import deeplab_v2
from irnet_moana import io
from irnet_moana.cli import add_config_arguments, load, main_guard
from irnet_moana.data.cams import label_keys
from irnet_moana.data.datasets import InferenceDataset
from irnet_moana.data.voc import DatasetError, VOCData
from irnet_moana.metrics import ConfusionMatrix
from irnet_moana.models.build import cam_net
from irnet_moana.models.cam_net import CAMNet
from irnet_moana.outputs import CAM, MODEL
from irnet_moana.precision import Precision, choose, cpu_kind, cpu_model
from irnet_moana.stages import make_ir_labels
from irnet_moana.stages.eval_cams import seed_labels
from irnet_moana.stages.make_cams import image_cams, inference_model
from irnet_moana.training import autocast, load_weights

from bench_random_walk import benchmark_random_walk, call_times
from reference import reference_style_cams

PARTS = ("make_cams", "random_walk", "crf", "deeplab")
FP32 = Precision("fp32", "the benchmark's fp32 reference")


@dataclass
class BenchmarkSizes:
    """How much work each part times; the defaults take a few minutes on 2 cores."""

    cam_images: int = 4
    walk_shapes: tuple[tuple[int, int], ...] = ((32, 32), (48, 64), (64, 64))
    walk_classes: tuple[int, ...] = (3, 20)
    walk_large: tuple[int, int] = (128, 128)
    walk_repeats: int = 3
    crf_images: int = 48
    deeplab_depths: tuple[int, ...] = (18,)
    deeplab_size: int = 256
    deeplab_images: int = 3
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)


ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def allocator_setting() -> str:
    """The environment variables that change how freed memory is kept, or "default".

    They move the figures: by glibc's default every tensor above its mmap
    threshold (32 MiB at most) is a fresh mapping whose pages fault on first
    touch, which costs fp32 (twice the bytes) more than bf16.
    """
    chosen = [f"{name}={os.environ[name]}" for name in ALLOCATOR_VARIABLES if os.environ.get(name)]
    return " ".join(chosen) or "default"


def machine_info() -> dict:
    """CPU model and instruction kind, torch's kernels, oneDNN's cap, the precision ``auto`` picks here, core
    count, torch version and threads, allocator setting, load average (1, 5, 15 min)."""
    return {"cpu": cpu_model(), "cpu_kind": cpu_kind(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset"),
            "auto_precision": auto_precision().as_dict(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "allocator": allocator_setting(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def auto_precision() -> Precision:
    """What ``auto`` resolves to on this CPU: the precision timed beside fp32."""
    return choose("auto", torch.device("cpu"), "auto")


@torch.no_grad()
def conv_peak_gflops(dtype: torch.dtype, repeats: int = 10) -> float:
    """GFLOP/s of one large channels-last 3x3 convolution (256 -> 256 channels, 2 x 64 x 64): the
    rate the CPU's convolutions reach at best, against which the CAM methods' rates can be read."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 64, 64, generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(256, 256, 3, 3, generator=generator).to(dtype).contiguous(
        memory_format=torch.channels_last)
    F.conv2d(x, weight, padding=1)
    best = min(call_times(lambda: F.conv2d(x, weight, padding=1), repeats, min_seconds=0.0))
    return 2 * weight.numel() * 2 * 64 * 64 / best / 1e9


def round_robin(methods: dict[str, Callable[[int], object]], count: int, warmup: int = 1) -> dict[str, float]:
    """Seconds each method spends on inputs 0..count-1, taking turns on each input.

    ``warmup`` extra untimed calls on input 0 let each method set up its
    kernels (oneDNN picks and caches them on first use) before timing.
    """
    for run in methods.values():
        for _ in range(warmup):
            run(0)
    totals = dict.fromkeys(methods, 0.0)
    for index in range(count):
        for name, run in methods.items():
            start = time.perf_counter()
            run(index)
            totals[name] += time.perf_counter() - start
    return totals


@torch.no_grad()
def pyramid_flops(model: CAMNet, pyramid: Sequence[torch.Tensor]) -> int:
    """Floating-point operations of the network over one image's scale pyramid (torch's FLOP counter)."""
    with FlopCounterMode(display=False) as counter:
        for images in pyramid:
            model.cams(images)
    return counter.get_total_flops()


def _labelled_stems(data: VOCData, split: str, count: int) -> list[str]:
    stems = data.split(split)
    labels = data.image_labels(stems)
    chosen = [s for s in stems if labels[s].sum() > 0][:count]
    if not chosen:
        raise DatasetError(f"no image of {data.root} '{split}' has a class label to benchmark on")
    return chosen


def cam_model(cfg: dict, num_classes: int, run_dir: Path | None) -> tuple[CAMNet, str]:
    """The CAM network of ``cfg`` with ``run_dir``'s trained weights when present, else random ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])  # random weights repeat from run to run
        model = cam_net(cfg, num_classes, weights="none")
    weights = run_dir / CAM / MODEL if run_dir is not None else None
    if weights is not None and weights.is_file():
        load_weights(weights, model)
        return model.eval(), f"trained ({weights})"
    return model.eval(), "random (no trained CAM model given or found)"


def bench_make_cams(cfg: dict, sizes: BenchmarkSizes, run_dir: Path | None = None) -> dict:
    """Images/s of CAM inference as make_cams runs it, in fp32 and in the precision ``auto`` picks (timed once
    when that is fp32), against the reference-style loop."""
    data = VOCData(cfg["data"]["root"])
    stems = _labelled_stems(data, cfg["data"]["train_list"], sizes.cam_images)
    labels = data.image_labels(stems)
    dataset = InferenceDataset(data, stems, cfg["cam"]["scales"], labels)
    samples = [dataset[i] for i in range(len(stems))]  # decoded and resized before timing
    model, weights = cam_model(cfg, data.num_classes, run_dir)
    auto = auto_precision()
    models = {"fp32": inference_model(copy.deepcopy(model), FP32)}
    if auto.reduced:
        models["auto"] = inference_model(copy.deepcopy(model), auto)
    device = torch.device("cpu")
    outputs: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {"reference_loop_fp32": {},
                                                                     **{k: {} for k in models}}

    def method(name: str, compute: Callable[[dict], tuple[np.ndarray, np.ndarray]]) -> Callable[[int], None]:
        def run(index: int) -> None:
            outputs[name][index] = compute(samples[index])
        return run

    def keys_of(sample: dict) -> np.ndarray:
        return label_keys(sample["label"])

    def make_cams_method(name: str) -> Callable[[int], None]:
        return method(name, lambda s: image_cams(models[name], s["pyramid"], s["size"], keys_of(s), device))

    totals = round_robin({
        "reference_loop_fp32": method("reference_loop_fp32", lambda s: reference_style_cams(
            model, s["pyramid"], s["size"], keys_of(s))),
        **{name: make_cams_method(name) for name in models},
    }, len(samples))
    if not auto.reduced:
        outputs["auto"], totals["auto"] = outputs["fp32"], totals["fp32"]
    threshold = cfg["cam"]["bg_threshold"]
    seeds = {name: [seed_labels(outputs[name][i][1], keys_of(s), threshold) for i, s in enumerate(samples)]
             for name in ("fp32", "auto")}
    agreement = np.mean([(auto == fp32).mean() for auto, fp32 in zip(seeds["auto"], seeds["fp32"])])
    mious = {name: seed_miou(data, stems, seeds[name]) for name in seeds}
    loop_vs_fp32 = max(float(np.abs(outputs["reference_loop_fp32"][i][1] - outputs["fp32"][i][1]).max())
                       for i in range(len(samples)))
    rate = {name: len(samples) / seconds for name, seconds in totals.items()}
    # Dividing by the FLOPs shows how close each method runs to the machine's peak.
    flops: dict[tuple, int] = {}
    total_flops = 0
    for sample in samples:
        shapes = tuple(tuple(images.shape) for images in sample["pyramid"])
        if shapes not in flops:
            flops[shapes] = pyramid_flops(model, sample["pyramid"])
        total_flops += flops[shapes]
    peak_dtypes = {"fp32": torch.float32, **({"auto": auto.dtype} if auto.reduced else {})}
    return {
        "weights": weights, "backbone": cfg["cam"]["backbone"], "moana": cfg["cam"]["moana"],
        "auto_precision": auto.name,
        "images": len(samples), "image_size": list(samples[0]["size"]), "scales": cfg["cam"]["scales"],
        "images_per_s": {k: round(v, 3) for k, v in rate.items()},
        "gflop_per_image": round(total_flops / len(samples) / 1e9, 2),
        "network_gflops_per_s": {k: round(total_flops / seconds / 1e9, 1) for k, seconds in totals.items()},
        "conv_peak_gflops_per_s": {name: round(conv_peak_gflops(dtype), 1) for name, dtype in peak_dtypes.items()},
        "speedup_auto_vs_reference_loop": round(rate["auto"] / rate["reference_loop_fp32"], 2),
        "speedup_fp32_vs_reference_loop": round(rate["fp32"] / rate["reference_loop_fp32"], 2),
        "speedup_auto_vs_fp32": round(rate["auto"] / rate["fp32"], 2),
        "max_abs_diff_reference_loop_vs_fp32_high_res": loop_vs_fp32,
        "seed_pixel_agreement_auto_vs_fp32": round(float(agreement), 5),
        "seed_miou": mious,
        "seed_miou_auto_minus_fp32": round(mious["auto"] - mious["fp32"], 2) if None not in mious.values() else None,
    }


def seed_miou(data: VOCData, stems: Sequence[str], seeds: Sequence[np.ndarray]) -> float | None:
    """mIoU of seed label maps over the images that have a ground-truth mask; None when none has."""
    matrix = ConfusionMatrix(data.num_classes + 1)
    scored = 0
    for stem, seed in zip(stems, seeds):
        if data.mask_path(stem).is_file():
            matrix.update(seed, data.load_mask(stem, seed.shape))
            scored += 1
    return round(100.0 * matrix.miou(), 2) if scored else None


# The shape of the random-walk part's headline figures, fixed so that runs
# with other shape lists stay comparable: a mid-sized map that the dense
# reference still times in seconds (its HW x HW matrix is 36 MiB there).
WALK_HEADLINE_SHAPE = (48, 64)


def _mebibytes(count: int | None) -> float | None:
    return None if count is None else round(count / 2 ** 20, 2)


def bench_random_walk(sizes: BenchmarkSizes) -> dict:
    """Sparse random walk vs the dense reference per shape and class count, and the sparse one at a large size.

    The headline ``speedup_sparse_vs_dense`` (index pattern cached, as over a
    dataset; ``speedup_cold_sparse_vs_dense`` from scratch) and
    ``argmax_equal`` are the worst over the class counts at
    :data:`WALK_HEADLINE_SHAPE`, ``None`` when that shape is not among
    ``sizes.walk_shapes``.
    """
    rows = benchmark_random_walk(shapes=tuple(tuple(shape) for shape in sizes.walk_shapes),
                                 num_classes=tuple(sizes.walk_classes),
                                 large=tuple(sizes.walk_large) if sizes.walk_large else None,
                                 repeats=sizes.walk_repeats, threads=sizes.threads)
    return summarize_walk_rows(rows)


def summarize_walk_rows(rows: Sequence[dict]) -> dict:
    """The random-walk part's figures from :func:`benchmark_random_walk`'s rows."""
    out: dict = {}
    cases: dict = {}
    for row in rows:
        case = {"sparse_s": round(row["sparse_s"], 4), "sparse_median_s": round(row["sparse_median_s"], 4),
                "sparse_calls": row["sparse_calls"], "sparse_cold_s": round(row["sparse_cold_s"], 4),
                "sparse_peak_rss_mib": _mebibytes(row["sparse_peak_rss_bytes"]),
                "sparse_matrix_mib": _mebibytes(row["sparse_matrix_bytes"]),
                "dense_matrix_mib": _mebibytes(row["dense_matrix_bytes"])}
        name = f"{row['height']}x{row['width']}_{row['num_classes']}cls"
        if row["dense_s"] is not None:
            case.update(dense_s=round(row["dense_s"], 4), dense_median_s=round(row["dense_median_s"], 4),
                        dense_calls=row["dense_calls"],
                        dense_peak_rss_mib=_mebibytes(row["dense_peak_rss_bytes"]),
                        speedup=round(row["speedup"], 1), speedup_cold=round(row["speedup_cold"], 1),
                        argmax_equal=row["argmax_equal"],
                        max_rel_error=row["max_rel_error"])
        else:
            name += "_sparse_only"
            out.update(large_shape=[row["height"], row["width"]], large_num_classes=row["num_classes"],
                       large_sparse_s=case["sparse_s"])
        cases[name] = case
    headline = [row for row in rows if (row["height"], row["width"]) == WALK_HEADLINE_SHAPE
                and row["dense_s"] is not None]
    out.update(headline_shape=list(WALK_HEADLINE_SHAPE),
               speedup_sparse_vs_dense=round(min(r["speedup"] for r in headline), 1) if headline else None,
               speedup_cold_sparse_vs_dense=(round(min(r["speedup_cold"] for r in headline), 1)
                                             if headline else None),
               argmax_equal=all(r["argmax_equal"] for r in headline) if headline else None)
    out["cases"] = cases
    return out


def synthetic_cams(mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """CAM-like maps for CRF timing: each class's ground-truth region blurred and max-normalised.

    The CRF's cost depends on the image size and label count, not on where
    the CAMs came from; this keeps the CRF part independent of a CAM model.
    """
    sigma = max(mask.shape) / 16
    maps = [cv2.GaussianBlur((mask == k + 1).astype(np.float32), (0, 0), sigma) for k in keys]
    stacked = np.stack(maps)
    return stacked / (stacked.reshape(len(keys), -1).max(1)[:, None, None] + 1e-5)


def bench_crf(cfg: dict, sizes: BenchmarkSizes) -> dict:
    """make_ir_labels' per-image work (two CRF passes) over N images with 1 process vs all cores."""
    data = VOCData(cfg["data"]["root"])
    stems = _labelled_stems(data, cfg["data"]["train_list"], sizes.crf_images)
    labels = data.image_labels(stems)
    c = cfg["ir_label"]
    params = (c["fg_threshold"], c["bg_threshold"], c["crf_gt_prob"], c["crf_iterations"])
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench_crf_") as scratch:
        scratch_dir = Path(scratch)
        tasks = []
        for stem in stems:
            keys = label_keys(labels[stem])
            mask = data.load_mask(stem)
            high_res = synthetic_cams(mask, keys)
            cam_path = scratch_dir / f"{stem}.npz"
            io.save_npz(cam_path, {"keys": keys, "cam": high_res[:, ::4, ::4], "high_res": high_res})
            tasks.append((str(data.root), str(cam_path), str(scratch_dir / f"{stem}.png"), stem, keys, params))

        def pool_seconds(workers: int) -> float:
            start = time.perf_counter()
            # as make_ir_labels runs its workers
            with get_context("fork").Pool(workers) as pool:
                for _ in pool.imap_unordered(make_ir_labels._work, tasks, chunksize=4):
                    pass
            return time.perf_counter() - start

        pool_seconds(cores)  # warm-up: page cache and pydensecrf's import in the parent
        seconds = {1: 0.0, cores: 0.0}
        # alternate, twice each, so a change in the machine's load hits both alike
        for _ in range(2):
            for workers in seconds:
                seconds[workers] += pool_seconds(workers) / 2
    per_image = {w: s / len(tasks) for w, s in seconds.items()}
    return {
        "images": len(tasks), "image_size": list(data.load_image(stems[0]).shape[:2]), "cores": cores,
        "seconds_per_image": {f"{w}_process{'es' if w > 1 else ''}": round(v, 4) for w, v in per_image.items()},
        "images_per_s": {f"{w}_process{'es' if w > 1 else ''}": round(1 / v, 2) for w, v in per_image.items()},
        "speedup_all_cores_vs_1": round(seconds[1] / seconds[cores], 2),
    }


def bench_deeplab(sizes: BenchmarkSizes, num_classes: int = 21) -> dict:
    """Multi-scale DeepLab v2 inference (random weights) per depth: fp32, fp32 channels-last, and channels-last
    under autocast to the precision ``auto`` picks (timed only when that is not fp32)."""
    out = {}
    auto = auto_precision()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(sizes.deeplab_images, 1, 3, sizes.deeplab_size, sizes.deeplab_size, generator=generator)
    for depth in sizes.deeplab_depths:
        model = deeplab_v2(num_classes, depth=depth, weights="none").eval()
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        logits: dict[str, dict[int, torch.Tensor]] = {}

        def method(name: str, net: torch.nn.Module, layout: torch.memory_format,
                   precision: Precision) -> Callable[[int], None]:
            logits[name] = {}

            @torch.no_grad()
            def run(index: int) -> None:
                with autocast(torch.device("cpu"), precision):
                    logits[name][index] = net(images[index].contiguous(memory_format=layout)).float()
            return run

        methods = {"fp32": method("fp32", model, torch.contiguous_format, FP32),
                   "fp32_channels_last": method("fp32_channels_last", last, torch.channels_last, FP32)}
        if auto.reduced:
            methods["auto_channels_last"] = method("auto_channels_last", last, torch.channels_last, auto)
        totals = round_robin(methods, len(images))
        if not auto.reduced:
            logits["auto_channels_last"], totals["auto_channels_last"] = logits["fp32_channels_last"], \
                totals["fp32_channels_last"]
        rate = {name: len(images) / seconds for name, seconds in totals.items()}
        reference, reduced = logits["fp32"], logits["auto_channels_last"]
        agreement = float(np.mean([(reference[i].argmax(1) == reduced[i].argmax(1)).float().mean().item()
                                   for i in reference]))
        out[f"resnet{depth}"] = {
            "auto_precision": auto.name,
            "images": len(images), "image_size": [sizes.deeplab_size] * 2, "scales": [1.0, 0.75, 0.5],
            "images_per_s": {k: round(v, 3) for k, v in rate.items()},
            "speedup_auto_channels_last_vs_fp32": round(rate["auto_channels_last"] / rate["fp32"], 2),
            "speedup_fp32_channels_last_vs_fp32": round(rate["fp32_channels_last"] / rate["fp32"], 2),
            "argmax_agreement_auto_vs_fp32": round(agreement, 5),
        }
    return out


def run_benchmarks(cfg: dict, parts: Sequence[str] = PARTS, sizes: BenchmarkSizes | None = None,
                   run_dir: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the parts asked for and return the machine info at start and end and the figures per part."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown benchmark part(s) {unknown}; choose from {PARTS}")
    sizes = sizes or BenchmarkSizes()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(sizes.threads)
    report: dict = {"machine_start": machine_info(), "sizes": asdict(sizes)}
    try:
        for part in PARTS:
            if part not in parts:
                continue
            log(f"[benchmark] {part} ...")
            start = time.perf_counter()
            if part == "make_cams":
                report[part] = bench_make_cams(cfg, sizes, run_dir)
            elif part == "random_walk":
                report[part] = bench_random_walk(sizes)
            elif part == "crf":
                report[part] = bench_crf(cfg, sizes)
            else:
                report[part] = bench_deeplab(sizes)
            report[part]["wall_s"] = round(time.perf_counter() - start, 1)
            log(format_part(f"{part} [{machine_tag(report['machine_start'])}]", report[part]))
    finally:
        torch.set_num_threads(previous_threads)
    report["machine_end"] = machine_info()
    return report


def machine_tag(machine: dict) -> str:
    """The CPU, its instruction kind and the precision auto picks there: printed beside every part's figures."""
    return f"{machine['cpu']}, {machine['cpu_kind']}, auto precision {machine['auto_precision']['precision']}"


def format_part(name: str, figures: dict, indent: str = "  ") -> str:
    """A part's figures, one per line, nested dicts flattened with '.'."""
    lines = [f"{name}:"]

    def add(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else key, inner)
        else:
            shown = f"{value:.4g}" if isinstance(value, float) and not math.isnan(value) else value
            lines.append(f"{indent}{prefix}: {shown}")

    add("", figures)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse the command line, run the parts asked for, print the machine and the figures; returns the report."""
    defaults = BenchmarkSizes()
    # the raw layout keeps the docstring's usage lines and lists as written
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--only", action="append", choices=PARTS, default=None,
                        help="run only this part (repeatable; default: all)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="also write the figures to this JSON file")
    parser.add_argument("--cam-images", type=int, default=defaults.cam_images, metavar="N",
                        help="images of make_cams (default: %(default)s)")
    parser.add_argument("--walk-shape", type=int, nargs=2, action="append", default=None, metavar=("H", "W"),
                        help="a size of the sparse vs dense comparison (repeatable; default: "
                             + ", ".join(f"{h} {w}" for h, w in defaults.walk_shapes) + ")")
    parser.add_argument("--walk-classes", type=int, nargs="+", default=list(defaults.walk_classes), metavar="C",
                        help="class counts of the sparse vs dense comparison (default: %(default)s)")
    parser.add_argument("--walk-large", type=int, nargs=2, default=list(defaults.walk_large), metavar=("H", "W"),
                        help="size timed with the sparse walk only (default: %(default)s)")
    parser.add_argument("--walk-repeats", type=int, default=defaults.walk_repeats, metavar="N",
                        help="timed calls of each walk, at least (default: %(default)s)")
    parser.add_argument("--crf-images", type=int, default=defaults.crf_images, metavar="N",
                        help="images of the CRF part (default: %(default)s)")
    parser.add_argument("--deeplab-depths", type=int, nargs="+", default=list(defaults.deeplab_depths),
                        choices=(18, 34, 50, 101), metavar="DEPTH",
                        help="ResNet depths of DeepLab, of 18, 34, 50, 101 (default: %(default)s)")
    parser.add_argument("--deeplab-size", type=int, default=defaults.deeplab_size, metavar="PIXELS",
                        help="square input size of DeepLab (default: %(default)s)")
    parser.add_argument("--deeplab-images", type=int, default=defaults.deeplab_images, metavar="N",
                        help="images of the DeepLab part (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads, metavar="N",
                        help="torch intra-op threads (default: %(default)s, the core count)")
    args = parser.parse_args(argv)
    cfg = load(parser, args)
    walk_shapes = tuple(tuple(shape) for shape in args.walk_shape or defaults.walk_shapes)
    sizes = BenchmarkSizes(cam_images=args.cam_images, walk_shapes=walk_shapes,
                           walk_classes=tuple(args.walk_classes), walk_large=tuple(args.walk_large),
                           walk_repeats=args.walk_repeats, crf_images=args.crf_images,
                           deeplab_depths=tuple(args.deeplab_depths), deeplab_size=args.deeplab_size,
                           deeplab_images=args.deeplab_images, threads=args.threads)
    run_dir = Path(args.run_dir) if args.run_dir else None
    report = run_benchmarks(cfg, args.only or PARTS, sizes, run_dir)
    start, end = report["machine_start"], report["machine_end"]
    print(f"machine: {start['cpu']} ({start['cpu_kind']}, torch kernels {start['torch_cpu_capability']}, "
          f"ONEDNN_MAX_CPU_ISA {start['onednn_max_cpu_isa']}), {start['cores']} cores, torch {start['torch']}, "
          f"{start['torch_threads']} threads, allocator {start['allocator']}; "
          f"load average {start['load_average']} at start, {end['load_average']} at end")
    print(f"auto precision: {start['auto_precision']['precision']} ({start['auto_precision']['reason']})")
    if args.out:
        io.write_json(args.out, report)
        print(f"figures written to {args.out}")
    return report


if __name__ == "__main__":
    main_guard(main)
