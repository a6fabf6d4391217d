"""Stage 3: seed mIoU of the CAMs (constant background score, argmax) on the evaluation list."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from ..data.cams import label_keys, load_cam
from ..data.voc import VOCData, class_names_with_background
from ..metrics import ConfusionMatrix, format_iou_table
from ..outputs import CAMS, EVAL_CAMS, METRICS
from ..run import start_run

OUTPUTS = (f"{METRICS}/{EVAL_CAMS}",)


def seed_labels(high_res: np.ndarray, keys: np.ndarray, bg_threshold: float) -> np.ndarray:
    """Label map from max-normalised CAMs: background where no class exceeds the threshold."""
    scores = np.concatenate([np.full((1, *high_res.shape[1:]), bg_threshold, np.float32), high_res])
    return np.r_[0, keys + 1][scores.argmax(0)].astype(np.uint8)


def evaluate(data: VOCData, cam_dir: Path, stems: Sequence[str], thresholds: Sequence[float]) -> list[ConfusionMatrix]:
    """One confusion matrix per background threshold, reading each CAM once."""
    labels = data.image_labels(list(stems))
    matrices = [ConfusionMatrix(data.num_classes + 1) for _ in thresholds]
    for stem in stems:
        keys = label_keys(labels[stem])
        # checked against the image, so a wrong-sized mask is not blamed on its CAM below
        gt = data.load_mask(stem, io.image_size(data.image_path(stem)))
        if keys.size == 0:
            for matrix in matrices:
                matrix.update(np.zeros_like(gt), gt)
            continue
        cam = load_cam(cam_dir / f"{stem}.npz", keys)
        if cam["high_res"].shape[1:] != gt.shape:
            raise io.CorruptFileError(f"{cam_dir / stem}.npz: CAM size {cam['high_res'].shape[1:]} differs from "
                                      f"the mask {gt.shape}; delete it and rerun make_cams")
        for matrix, threshold in zip(matrices, thresholds):
            matrix.update(seed_labels(cam["high_res"], keys, threshold), gt)
    return matrices


def run(cfg: dict) -> dict:
    """Seed mIoU at ``cam.bg_threshold`` (and over ``cam.sweep``); writes metrics/eval_cams.json."""
    run_ = start_run(cfg, "eval_cams")
    data = VOCData(cfg["data"]["root"])
    stems = data.split(cfg["data"]["eval_list"])
    threshold = cfg["cam"]["bg_threshold"]
    thresholds = [threshold, *[t for t in cfg["cam"]["sweep"] if t != threshold]]
    matrices = evaluate(data, run_.path(CAMS), stems, thresholds)
    names = class_names_with_background(data)
    result = matrices[0].summary(names)
    result.update({"bg_threshold": threshold, "list": cfg["data"]["eval_list"], "num_images": len(stems),
                   "moana": cfg["cam"]["moana"]})
    run_.log.info(format_iou_table(result, f"seed (CAM) mIoU on {cfg['data']['eval_list']}, "
                                           f"background {threshold}"))
    if len(thresholds) > 1:
        sweep = {f"{t:.2f}": round(100 * m.miou(), 2) for t, m in sorted(zip(thresholds, matrices))}
        best = max(sweep, key=sweep.get)
        result["sweep"] = sweep
        result["best_threshold"] = float(best)
        run_.log.info("threshold sweep: %s; best %s (%.2f)", " ".join(f"{k}:{v:.1f}" for k, v in sweep.items()),
                      best, sweep[best])
    out = run_.path(METRICS, EVAL_CAMS)
    io.write_json(out, result)
    run_.finish(f"seed mIoU {result['miou']:.1f} (MoANA {'on' if cfg['cam']['moana'] else 'off'})", out)
    return result
