"""The training-curves figure: ``train/loss`` and ``train/lr`` of every training stage, read from its
TensorBoard event files."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ..outputs import CAM, CURVES_FIGURE, DEEPLAB, IRN, PLAIN_CAM, TENSORBOARD, WSOL
from .drawing import PAD, TITLE_H, WHITE, Series, draw_panel, draw_text, smoothing_weight

PANEL_W, PANEL_H = 460, 250


def read_scalars(log_dir: Path,
                 tags: Sequence[str] = ("train/loss", "train/lr")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of each tag found in a TensorBoard folder.

    A step logged twice (a run resumed from an earlier checkpoint) keeps its latest value.
    """
    if not any(Path(log_dir).glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    found = {}
    for tag in tags:
        if tag not in accumulator.Tags()["scalars"]:
            continue
        latest = {}
        for event in sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time):
            latest[event.step] = event.value
        steps = np.array(sorted(latest), dtype=np.int64)
        found[tag] = (steps, np.array([latest[s] for s in steps], dtype=np.float64))
    return found


def curve_sources(cfg: dict, run_dir: Path) -> list[tuple[str, list[tuple[str, Path]]]]:
    """(stage title, [(series name, TensorBoard folder)]) for every training stage; the plain-CAM baseline
    shares its stage's panel."""
    run_dir, base = Path(run_dir), Path(run_dir) / PLAIN_CAM
    cam_name = "MoANA" if cfg["cam"]["moana"] else "CAM"
    wsol_name = "MoANA" if cfg["wsol"]["moana"] else "CAM"
    return [
        ("CAM classifier", [(cam_name, run_dir / CAM / TENSORBOARD), ("plain CAM", base / CAM / TENSORBOARD)]),
        ("IRNet", [("IRNet", run_dir / IRN / TENSORBOARD)]),
        ("DeepLab", [("DeepLab", run_dir / DEEPLAB / TENSORBOARD)]),
        ("WSOL classifier", [(wsol_name, run_dir / WSOL / TENSORBOARD), ("plain CAM", base / WSOL / TENSORBOARD)]),
    ]


def curves_size(num_rows: int) -> tuple[int, int]:
    """(width, height) of the training-curves figure: one row of (loss, lr) panels per stage."""
    return PAD + 2 * (PANEL_W + PAD), TITLE_H + num_rows * (PANEL_H + PAD)


def curves_figure(cfg: dict, run_dir: Path, log: logging.Logger) -> Image.Image | None:
    """Loss and learning rate of every stage that has TensorBoard logs; None when none has."""
    panels = []
    for stage, sources in curve_sources(cfg, run_dir):
        read = [(name, read_scalars(folder)) for name, folder in sources]
        loss = [Series(name, *tags["train/loss"]) for name, tags in read if "train/loss" in tags]
        # the baseline runs the same schedule, so one learning-rate curve per stage is enough
        lr = [Series(name, *tags["train/lr"]) for name, tags in read if "train/lr" in tags][:1]
        if loss:
            panels.append((stage, loss, lr))
    if not panels:
        log.info("figures: %s skipped: no TensorBoard logs under %s", CURVES_FIGURE, run_dir)
        return None
    canvas = Image.new("RGB", curves_size(len(panels)), WHITE)
    draw_text(ImageDraw.Draw(canvas), (PAD, TITLE_H / 2), f"{Path(run_dir).name}: training curves", 16,
              anchor="lm")
    for index, (stage, loss, lr) in enumerate(panels):
        top = TITLE_H + index * (PANEL_H + PAD)
        smoothing = " (light: raw, dark: moving average)" if smoothing_weight(max(len(s.steps) for s in loss)) else ""
        draw_panel(canvas, (PAD, top, PAD + PANEL_W, top + PANEL_H), f"{stage}: train/loss{smoothing}", loss,
                   smoothed=True)
        if lr:
            left = 2 * PAD + PANEL_W
            draw_panel(canvas, (left, top, left + PANEL_W, top + PANEL_H), f"{stage}: learning rate", lr)
    return canvas
