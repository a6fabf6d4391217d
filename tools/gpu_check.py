"""A few-minute check of the pipeline on a CUDA GPU: throughput and peak memory per stage and precision.

    python tools/gpu_check.py [--steps 30] [--images 64] [--work-dir DIR]
    bash tools/gpu_check.sh [same options]   # the same, with the repository's .venv when there is one

On a small synthetic VOC-layout set (generated in the work folder), with the
``demo`` setting, it runs, in this process, through the stages' own ``run``
functions:

* train_cam for ``--steps`` optimizer steps at fp32 (amp none) and at the
  automatic precision (amp auto: bf16, or fp16 on a GPU without native bf16);
* make_cams at fp32 and auto on the fp32 model; make_ir_labels and a short
  train_irn (not timed as checks: they make make_pseudo_masks' inputs);
* make_pseudo_masks;
* train_deeplab for ``--steps`` iterations at fp32 and auto on those
  pseudo masks.

Each check prints images/s (wall time of the whole stage, set-up included)
and ``torch.cuda.max_memory_allocated``. A failing check is reported and the
others still run. Exit status: 0 all checks passed, 1 a check failed,
3 (``NO_GPU_EXIT``) without a CUDA GPU (nothing is run).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import torch

from deeplab import train as deeplab_train
from irnet_moana.config import load_config
from irnet_moana.data.synthetic import generate_voc_demo
from irnet_moana.outputs import CAM, PSEUDO_MASKS
from irnet_moana.stages import make_cams, make_ir_labels, make_pseudo_masks, train_cam, train_irn

NO_GPU_EXIT = 3
AMPS = ("none", "auto")  # fp32 against what the GPU gets by default (bf16, or fp16 without native bf16)


def gpu_description() -> str | None:
    """'<name>, <memory> GiB, CUDA <version>' of GPU 0, or None without a usable CUDA GPU."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def measure(name: str, images: int, action: Callable[[], object]) -> dict:
    """Run ``action`` once; its wall time, images/s and peak GPU memory, or the error it raised."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        action()
        torch.cuda.synchronize()
    except Exception as exc:  # a check's failure is reported, not fatal: the others still tell something
        traceback.print_exc()
        return {"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    seconds = time.perf_counter() - start
    return {"check": name, "ok": True, "seconds": seconds, "images": images, "images_per_s": images / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def format_row(row: dict) -> str:
    if not row["ok"]:
        return f"{row['check']:<34} FAILED  {row['error']}"
    return (f"{row['check']:<34} {row['images_per_s']:9.1f} img/s  {row['peak_gib']:7.2f} GiB peak  "
            f"({row['images']} images in {row['seconds']:.1f} s)")


def run_checks(work: Path, steps: int, data_size: int, log: Callable[[str], None] = print) -> list[dict]:
    """All checks in ``work`` (data and one run folder per check); returns one row per check."""
    root = work / "data"
    if not (root / "ImageSets").is_dir():
        generate_voc_demo(root, num_train=data_size, num_train_aug_extra=data_size, num_val=8)
    num_images = 2 * data_size  # train_aug: every stage's list here

    def config(run_dir: Path, *overrides: str) -> dict:
        return load_config("demo", [f"data.root={root}", f"run_dir={run_dir}", "data.num_workers=4",
                                    "device=auto", f"cam.max_steps={steps}", "irn.epochs=1",
                                    f"deeplab.iterations={steps}", f"deeplab.checkpoint_every={steps}",
                                    *overrides])

    rows = []

    def check(name: str, images: int, action: Callable[[], object]) -> dict:
        log(f"[gpu_check] {name} ...")
        row = measure(name, images, action)
        log(format_row(row))
        rows.append(row)
        return row

    base = work / "run_none"
    for amp in AMPS:
        cfg = config(work / f"run_{amp}", f"cam.amp={amp}")
        check(f"train_cam amp={amp}", steps * cfg["cam"]["batch_size"], lambda: train_cam.run(cfg))
    if not rows[0]["ok"]:
        log("[gpu_check] the fp32 CAM model is needed by the later checks; stopping")
        return rows
    for precision in ("fp32", "auto"):
        run_dir = work / f"cams_{precision}"
        if not (run_dir / CAM).is_dir():
            shutil.copytree(base / CAM, run_dir / CAM)
        cfg = config(run_dir, f"cam.infer_precision={precision}")
        check(f"make_cams {precision}", num_images, lambda: make_cams.run(cfg))
    cfg = config(base, "cam.infer_precision=fp32")
    # the pseudo masks need the CAMs of the run folder, relation labels and a trained IRNet
    for name, stage in (("make_cams", make_cams), ("make_ir_labels", make_ir_labels), ("train_irn", train_irn)):
        log(f"[gpu_check] {name} (input of make_pseudo_masks) ...")
        stage.run(cfg)
    masks = check("make_pseudo_masks", num_images, lambda: make_pseudo_masks.run(cfg))
    if not masks["ok"]:
        log("[gpu_check] DeepLab trains on the pseudo masks; skipping train_deeplab")
        return rows
    for amp in AMPS:
        run_dir = work / f"deeplab_{amp}"
        if not (run_dir / CAM).is_dir():  # deeplab.weights is the CAM backbone in the demo setting
            shutil.copytree(base / CAM, run_dir / CAM)
        cfg = config(run_dir, f"deeplab.amp={amp}", f"deeplab.labels={base / PSEUDO_MASKS}")
        check(f"train_deeplab amp={amp}", steps * cfg["deeplab"]["batch_size"], lambda: deeplab_train.run(cfg))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of each training check")
    parser.add_argument("--images", type=int, default=64,
                        help="synthetic train images (train_aug holds twice as many)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where data and runs go (default: a temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    gpu = gpu_description()
    if gpu is None:
        print(f"gpu_check: no CUDA GPU available (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); nothing checked", file=sys.stderr)
        return NO_GPU_EXIT
    print(f"gpu_check: {gpu}, torch {torch.__version__}")
    if args.work_dir is None:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
            rows = run_checks(Path(work), args.steps, args.images)
    else:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        rows = run_checks(args.work_dir, args.steps, args.images)
    print(f"\ngpu_check summary ({gpu}):")
    for row in rows:
        print(format_row(row))
    failed = [row["check"] for row in rows if not row["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} checks passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
