"""The MoANA-attention figure: the attention map M over each image, the height and width views as profiles
along its sides, and the strongest channels of the channel view as bars."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import transforms as T
from ..data.voc import VOCData
from ..models.build import trained_cam_net
from ..models.cam_net import CAMNet
from ..outputs import MOANA_FIGURE
from .drawing import (CAPTION_H, GRID, HEADER_H, MIN_FONT, MUTED, OUTLINE, PAD, TITLE_H, WHITE, display_size,
                      draw_text, overlay, paste_centred)
from .inputs import attempt, image_tensor

PROFILE = 44  # band holding the z_h / z_w profiles
BARS_W = 230
TOP_CHANNELS = 10
PROFILE_COLOUR = (200, 30, 30)
BAR_COLOUR = (70, 130, 180)


@torch.no_grad()
def moana_views(model: CAMNet, image: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """MoANA's attention on one image: ``M`` and ``z_h`` / ``z_w`` averaged over channels, and ``z_c`` (C,)."""
    features = model.backbone(image_tensor(image)[None].to(device))
    views = model.head.moana.attention(features.float())
    return {"M": views["M"][0].mean(0).cpu().numpy(), "z_h": views["z_h"][0].mean(0).cpu().numpy(),
            "z_w": views["z_w"][0].mean(0).cpu().numpy(), "z_c": views["z_c"][0].cpu().numpy()}


def _normalised(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.full(values.shape, 0.5) if high - low < 1e-12 else (values - low) / (high - low)


def draw_profile(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], values: np.ndarray,
                 vertical: bool) -> None:
    """A step plot of ``values`` (min-max scaled) in ``box``: along y when ``vertical``, else along x."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=GRID)
    scaled, count, points = _normalised(values), len(values), []
    for index, value in enumerate(scaled):
        if vertical:
            x = x0 + value * (x1 - x0)
            points += [(x, y0 + index * (y1 - y0) / count), (x, y0 + (index + 1) * (y1 - y0) / count)]
        else:
            y = y1 - value * (y1 - y0)
            points += [(x0 + index * (x1 - x0) / count, y), (x0 + (index + 1) * (x1 - x0) / count, y)]
    draw.line(points, fill=PROFILE_COLOUR, width=2)


def draw_channel_bars(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], z_c: np.ndarray,
                      top: int = TOP_CHANNELS) -> None:
    """Horizontal bars (0..1) of the ``top`` largest z_c channels, with the mean over all channels dashed."""
    x0, y0, x1, y1 = box
    order = np.argsort(-z_c, kind="stable")[:top]
    row_h = (y1 - y0) / len(order)
    size = int(max(MIN_FONT, min(12, row_h * 0.75)))
    bar_left, bar_right = x0 + 48, x1 - 36
    for index, channel in enumerate(order):
        centre = y0 + (index + 0.5) * row_h
        half = max(1.0, row_h * 0.32)
        draw_text(draw, (x0, centre), f"#{channel}", size, max_width=46, anchor="lm")
        draw.rectangle([bar_left, centre - half, bar_left + float(z_c[channel]) * (bar_right - bar_left),
                        centre + half], fill=BAR_COLOUR)
        draw_text(draw, (bar_right + 4, centre), f"{z_c[channel]:.2f}", size, anchor="lm")
    draw.line([(bar_left, y0), (bar_left, y1)], fill=OUTLINE)
    mean_x = bar_left + float(z_c.mean()) * (bar_right - bar_left)
    for y in np.arange(y0, y1, 6):
        draw.line([(mean_x, y), (mean_x, min(y + 3, y1))], fill=PROFILE_COLOUR)
    draw_text(draw, (bar_left, y1 + 3), "0", 10, fill=MUTED, anchor="mt")
    draw_text(draw, (bar_right, y1 + 3), "1", 10, fill=MUTED, anchor="mt")
    draw_text(draw, (x0, y1 + 17), f"dashed: mean over {len(z_c)} channels ({z_c.mean():.2f})", 10,
              max_width=x1 - x0, fill=MUTED)


def moana_size(row_heights: Sequence[int], cell_w: int) -> tuple[int, int]:
    """(width, height) of the MoANA figure whose rows show images of the given heights."""
    width = PAD + cell_w + PAD + cell_w + PROFILE + PAD + BARS_W + PAD
    return width, TITLE_H + HEADER_H + sum(CAPTION_H + h + PROFILE + PAD for h in row_heights)


def moana_figure(cfg: dict, run_dir: Path, stems: Sequence[str], device: torch.device,
                 log: logging.Logger) -> Image.Image | None:
    """Image | channel mean of M over the image with z_h (right) and z_w (below) | top z_c channels.

    None, with a log line, when ``cam.moana`` is off or the trained CAM network is missing.
    """
    if not cfg["cam"]["moana"]:
        log.info("figures: %s skipped: cam.moana is false", MOANA_FIGURE)
        return None
    data = VOCData(cfg["data"]["root"])
    model = attempt("MoANA attention (trained CAM network)", log, trained_cam_net, cfg, data.num_classes, run_dir,
                    device)
    if model is None:
        return None
    images = [data.load_image(stem) for stem in stems]
    sizes = [display_size(*image.shape[:2]) for image in images]
    cell_w = max(s[1] for s in sizes)
    canvas = Image.new("RGB", moana_size([s[0] for s in sizes], cell_w), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_text(draw, (PAD, TITLE_H / 2), f"{Path(run_dir).name}: MoANA attention after layer4 "
              f"(first {len(stems)} images of '{cfg['data']['eval_list']}')", 16, max_width=canvas.width - 2 * PAD,
              anchor="lm")
    column_x = (PAD, 2 * PAD + cell_w, 3 * PAD + 2 * cell_w + PROFILE)
    headers = (("image", cell_w), ("M (mean over channels), z_h, z_w", cell_w + PROFILE),
               (f"z_c: top {TOP_CHANNELS} channels", BARS_W))
    for x, (name, span) in zip(column_x, headers):
        draw_text(draw, (x + span / 2, TITLE_H + HEADER_H / 2), name, 13, max_width=span, anchor="mm")
    top = TITLE_H + HEADER_H
    for stem, image, size in zip(stems, images, sizes):
        views = moana_views(model, image, device)
        mean_m = views["M"]
        draw_text(draw, (PAD, top + CAPTION_H / 2),
                  f"{stem}: mean M {mean_m.min():.3f}-{mean_m.max():.3f} (colours span this range), "
                  f"z_h {views['z_h'].min():.3f}-{views['z_h'].max():.3f}, "
                  f"z_w {views['z_w'].min():.3f}-{views['z_w'].max():.3f}",
                  12, max_width=canvas.width - 2 * PAD, fill=MUTED, anchor="lm")
        top += CAPTION_H
        paste_centred(canvas, T.resize(image, size), size, (column_x[0], top, column_x[0] + cell_w, top + size[0]))
        heat = T.resize(_normalised(mean_m).astype(np.float32), image.shape[:2])
        left, image_top = paste_centred(canvas, T.resize(overlay(image, heat), size), size,
                                        (column_x[1], top, column_x[1] + cell_w, top + size[0]))
        right, bottom = left + size[1], image_top + size[0]
        draw_profile(draw, (right + 4, image_top, right + PROFILE - 6, bottom - 1), views["z_h"], vertical=True)
        draw_profile(draw, (left, bottom + 4, right - 1, bottom + PROFILE - 6), views["z_w"], vertical=False)
        draw_text(draw, (right + PROFILE / 2 - 1, bottom + 4), "z_h", 11, fill=PROFILE_COLOUR, anchor="mt")
        draw_text(draw, (right + 4, bottom + PROFILE / 2 + 6), "z_w", 11, fill=PROFILE_COLOUR, anchor="lm")
        draw_channel_bars(draw, (column_x[2], image_top, column_x[2] + BARS_W, bottom), views["z_c"])
        top += size[0] + PROFILE + PAD
    return canvas
