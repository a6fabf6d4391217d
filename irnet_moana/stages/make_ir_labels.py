"""Stage 4: confident inter-pixel relation labels from CAMs, refined by dense CRF.

Two passes over each image's ``high_res`` CAMs: a high background score keeps
only confident foreground, a low one only confident background. Each is
refined by a dense CRF; pixels the passes disagree on are ignored (255).
"""
from __future__ import annotations

import os
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .. import io
from ..crf import IRN_LABELS, crf_labels
from ..data.cams import label_keys, load_cam
from ..data.voc import VOCData
from ..outputs import CAMS, IR_LABELS
from ..run import pending, progress, start_run

OUTPUTS = (IR_LABELS,)


def confident_labels(image: np.ndarray, high_res: np.ndarray, keys: np.ndarray, fg_threshold: float = 0.30,
                     bg_threshold: float = 0.05, gt_prob: float = 0.7, iterations: int = 10) -> np.ndarray:
    """Class where the foreground pass says so, 0 where both passes say background, 255 elsewhere."""
    label_values = np.r_[0, keys + 1]

    def crf_pass(threshold: float) -> np.ndarray:
        scores = np.concatenate([np.full((1, *high_res.shape[1:]), threshold, np.float32), high_res])
        refined = crf_labels(image, scores.argmax(0), len(label_values), gt_prob,
                             replace(IRN_LABELS, iterations=iterations))
        return label_values[refined]

    fg = crf_pass(fg_threshold)
    bg = crf_pass(bg_threshold)
    out = fg.copy()
    out[fg == 0] = io.IGNORE
    out[(fg == 0) & (bg == 0)] = 0
    return out.astype(np.uint8)


def _work(task: tuple) -> str:
    root, cam_path, out_path, stem, expected_keys, params = task
    data = VOCData(root)
    image = data.load_image(stem)
    cam = load_cam(Path(cam_path), expected_keys)
    io.save_label_png(out_path, confident_labels(image, cam["high_res"], cam["keys"], *params))
    return stem


def run(cfg: dict) -> Path:
    """Write ``<run_dir>/ir_labels/<id>.png`` for every image of ``data.train_list`` not done yet."""
    run_ = start_run(cfg, "make_ir_labels")
    c = cfg["ir_label"]
    data = VOCData(cfg["data"]["root"])
    stems = data.split(cfg["data"]["train_list"])
    labels = data.image_labels(stems)
    out_dir, cam_dir = run_.path(IR_LABELS), run_.path(CAMS)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in pending(stems, out_dir, ".png", run_.log) if labels[s].sum() > 0]
    params = (c["fg_threshold"], c["bg_threshold"], c["crf_gt_prob"], c["crf_iterations"])
    tasks = [(str(data.root), str(cam_dir / f"{s}.npz"), str(out_dir / f"{s}.png"), s, label_keys(labels[s]), params)
             for s in todo]
    workers = min(c["workers"] or os.cpu_count() or 1, max(1, len(tasks)))
    if workers == 1:
        for task in progress(tasks, len(tasks), "make_ir_labels"):
            _work(task)
    else:
        # fork keeps start-up cheap; the workers only run numpy and pydensecrf
        with get_context("fork").Pool(workers) as pool:
            for _ in progress(pool.imap_unordered(_work, tasks, chunksize=4), len(tasks), "make_ir_labels"):
                pass
    run_.finish(f"{len(todo)} relation label maps written with {workers} worker(s)", out_dir)
    return out_dir
