"""Drawing primitives of every figure: text, display sizes, colour maps, grids, legends, line plots, saving.

Drawn with PIL and OpenCV (no matplotlib).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .. import io
from ..io import IGNORE

# Layout, in pixels.
PAD = 8
TITLE_H = 30
HEADER_H = 22  # column titles
CAPTION_H = 18  # one line above each row
LEGEND_LINE_H = 22
SWATCH = 14
SMALL_SIDE = 128  # images up to this long side are shown twice as large
MAX_SIDE = 256  # larger ones are shrunk to this long side
MIN_FONT = 8

WHITE = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (120, 120, 120)
NA_FILL = (236, 236, 236)
GRID = (222, 222, 222)
OUTLINE = (150, 150, 150)
SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))

_HERSHEY = cv2.FONT_HERSHEY_SIMPLEX

Colour = tuple[int, int, int]
LegendEntry = tuple[Colour, str]


# ---------------------------------------------------------------- text

@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int = 13,
              max_width: float | None = None, fill: Colour = TEXT, anchor: str = "la") -> None:
    """Draw ``text``; when ``max_width`` is given it is shrunk (down to 8 px), then shortened with '...' to fit."""
    if max_width is not None:
        while size > MIN_FONT and draw.textlength(text, font=_font(size)) > max_width:
            size -= 1
        if draw.textlength(text, font=_font(size)) > max_width:
            while text and draw.textlength(text + "...", font=_font(size)) > max_width:
                text = text[:-1]
            text += "..."
    draw.text(xy, text, font=_font(size), fill=fill, anchor=anchor)


def put_text(canvas: np.ndarray, text: str, origin: tuple[int, int], max_width: int) -> None:
    """Write ``text`` on an RGB array in OpenCV's Hershey font, baseline at ``origin``, shrunk to ``max_width``."""
    (width, _), _ = cv2.getTextSize(text, _HERSHEY, 1.0, 1)
    scale = min(0.5, max_width / max(width, 1))
    cv2.putText(canvas, text, origin, _HERSHEY, scale, TEXT, 1, cv2.LINE_AA)


# ---------------------------------------------------------------- pictures

def display_size(height: int, width: int) -> tuple[int, int]:
    """Size an image is shown at: doubled up to a 128-pixel long side, shrunk to a 256-pixel one above."""
    long_side = max(height, width)
    if long_side <= SMALL_SIDE:
        scale = 2.0
    elif long_side > MAX_SIDE:
        scale = MAX_SIDE / long_side
    else:
        scale = 1.0
    return max(1, round(height * scale)), max(1, round(width * scale))


def overlay(image: np.ndarray, scoremap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured [0, 1] score map over an RGB uint8 image of the same size."""
    heat = cv2.applyColorMap((np.clip(scoremap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).round().astype(np.uint8)


def colour_labels(label: np.ndarray) -> np.ndarray:
    """RGB picture of a label map in the VOC palette (255, ignore, comes out light beige)."""
    return io.voc_palette()[label]


def boundary_picture(boundary: np.ndarray) -> np.ndarray:
    """Boundary probabilities in [0, 1] as dark lines on white."""
    grey = np.round(255 * (1 - np.clip(boundary, 0, 1))).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def displacement_picture(displacement: np.ndarray) -> np.ndarray:
    """A (2, h, w) field (dy, dx) as RGB: hue the direction, brightness the length relative to the longest."""
    dy, dx = displacement.astype(np.float32)
    hue = (np.degrees(np.arctan2(dy, dx)) % 360) / 2  # OpenCV's hue runs 0..180
    length = np.hypot(dy, dx)
    value = 255 * length / max(float(length.max()), 1e-6)
    hsv = np.stack([hue, np.full_like(hue, 255), value], -1).round().astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _na_cell(size_hw: tuple[int, int]) -> Image.Image:
    cell = Image.new("RGB", (size_hw[1], size_hw[0]), NA_FILL)
    draw_text(ImageDraw.Draw(cell), (size_hw[1] / 2, size_hw[0] / 2), "n/a", 14, fill=MUTED, anchor="mm")
    return cell


def paste_centred(canvas: Image.Image, picture: np.ndarray | None, size_hw: tuple[int, int],
                  box: tuple[int, int, int, int]) -> tuple[int, int]:
    """Paste ``picture`` (or an n/a patch of ``size_hw``) centred in ``box``; returns its top-left corner."""
    left = box[0] + (box[2] - box[0] - size_hw[1]) // 2
    top = box[1] + (box[3] - box[1] - size_hw[0]) // 2
    canvas.paste(_na_cell(size_hw) if picture is None else Image.fromarray(picture), (left, top))
    return left, top


# ---------------------------------------------------------------- class legend

def legend_entries(values: set[int], names: Sequence[str]) -> list[LegendEntry]:
    """(colour, name) for each label value present: classes in order, then ignore."""
    palette = io.voc_palette()
    entries = [(tuple(int(c) for c in palette[v]), names[v]) for v in sorted(values) if v < len(names)]
    if IGNORE in values:
        entries.append((tuple(int(c) for c in palette[IGNORE]), "ignore / void (255)"))
    return entries


def _legend_items(entries: Sequence[LegendEntry], width: int) -> list[tuple[int, int]]:
    """(x, line) of each legend entry, wrapped to ``width``."""
    font = _font(12)
    x, line, items = PAD, 0, []
    for _, name in entries:
        item_w = SWATCH + 5 + int(math.ceil(font.getlength(name))) + 18
        if x > PAD and x + item_w > width - PAD:
            x, line = PAD, line + 1
        items.append((x, line))
        x += item_w
    return items


def legend_height(entries: Sequence[LegendEntry], width: int) -> int:
    """Height of the legend band under a grid ``width`` pixels wide (0 without entries)."""
    items = _legend_items(entries, width)
    return 0 if not items else (items[-1][1] + 1) * LEGEND_LINE_H + PAD


def draw_legend(canvas: Image.Image, entries: Sequence[LegendEntry], top: int) -> None:
    """Colour swatches and names, wrapped to the canvas width, from ``top`` down."""
    draw = ImageDraw.Draw(canvas)
    for (colour, name), (x, line) in zip(entries, _legend_items(entries, canvas.width)):
        y = top + line * LEGEND_LINE_H + (LEGEND_LINE_H - SWATCH) // 2
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=colour, outline=OUTLINE)
        draw_text(draw, (x + SWATCH + 5, y + SWATCH / 2), name, 12, anchor="lm")


# ---------------------------------------------------------------- a grid of pictures

@dataclass
class Row:
    """One image's row: a caption and one picture (or None: n/a) per column, all of ``size`` (h, w)."""

    caption: str
    size: tuple[int, int]
    cells: list[np.ndarray | None]


def grid_size(row_heights: Sequence[int], num_columns: int, cell_w: int, legend_h: int) -> tuple[int, int]:
    """(width, height) of a grid figure whose rows hold pictures of the given heights."""
    width = PAD + num_columns * (cell_w + PAD)
    height = TITLE_H + HEADER_H + sum(CAPTION_H + h + PAD for h in row_heights) + legend_h
    return width, height


def draw_grid(title: str, column_titles: Sequence[str], rows: Sequence[Row],
              legend: Sequence[LegendEntry] = ()) -> Image.Image:
    """Rows of pictures under column titles; columns are as wide as the widest picture, rows as tall as theirs."""
    cell_w = max(r.size[1] for r in rows)
    width = grid_size([], len(column_titles), cell_w, 0)[0]
    legend_h = legend_height(legend, width)
    canvas = Image.new("RGB", grid_size([r.size[0] for r in rows], len(column_titles), cell_w, legend_h), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_text(draw, (PAD, TITLE_H / 2), title, 16, max_width=width - 2 * PAD, anchor="lm")
    for index, name in enumerate(column_titles):
        centre = PAD + index * (cell_w + PAD) + cell_w / 2
        draw_text(draw, (centre, TITLE_H + HEADER_H / 2), name, 13, max_width=cell_w, anchor="mm")
    top = TITLE_H + HEADER_H
    for row in rows:
        draw_text(draw, (PAD, top + CAPTION_H / 2), row.caption, 12, max_width=width - 2 * PAD, fill=MUTED,
                  anchor="lm")
        top += CAPTION_H
        for index, picture in enumerate(row.cells):
            left = PAD + index * (cell_w + PAD)
            paste_centred(canvas, picture, row.size, (left, top, left + cell_w, top + row.size[0]))
        top += row.size[0] + PAD
    draw_legend(canvas, legend, top)
    return canvas


# ---------------------------------------------------------------- line plots

@dataclass
class Series:
    """One scalar over training steps."""

    name: str
    steps: np.ndarray
    values: np.ndarray


def nice_ticks(low: float, high: float, target: int = 5) -> np.ndarray:
    """Round tick values (1, 2, 2.5, 5 x 10^k apart) covering [low, high]."""
    if not high > low:  # a single value: centre it
        pad = abs(low) / 2 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first = math.floor(low / step + 1e-9) * step
    count = math.ceil((high - first) / step - 1e-9)
    return first + step * np.arange(count + 1)


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with TensorBoard's start-up correction (no bias towards 0)."""
    out, accumulated = np.empty(len(values)), 0.0
    for index, value in enumerate(values):
        accumulated = weight * accumulated + (1 - weight) * value
        out[index] = accumulated / (1 - weight ** (index + 1))
    return out


def smoothing_weight(num_points: int) -> float:
    """Moving-average weight for a series of ``num_points``: a window of about 3 % of it, none below 60 points."""
    return 0.0 if num_points <= 60 else min(0.95, 1 - 30 / num_points)


def _tint(colour: Colour, amount: float) -> Colour:
    return tuple(int(round(c + (255 - c) * amount)) for c in colour)


def draw_panel(canvas: Image.Image, box: tuple[int, int, int, int], title: str, series: Sequence[Series],
               smoothed: bool = False) -> None:
    """A line plot with axes, round ticks, grid and a legend when there are several series.

    With ``smoothed``, long series are drawn raw in a light tint with their moving average on top.
    """
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=GRID)
    draw_text(draw, (x0 + 6, y0 + 5), title, 13, max_width=x1 - x0 - 12)
    left, right, top, bottom = x0 + 60, x1 - 12, y0 + 26, y1 - 38
    steps = np.concatenate([s.steps for s in series]).astype(np.float64)
    values = np.concatenate([s.values for s in series])
    y_ticks = nice_ticks(float(values.min()), float(values.max()))
    x_ticks = nice_ticks(float(steps.min()), float(steps.max()))
    x_lo, x_hi, y_lo, y_hi = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def to_px(xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
        px = left + (xs - x_lo) / (x_hi - x_lo) * (right - left)
        py = bottom - (ys - y_lo) / (y_hi - y_lo) * (bottom - top)
        return list(zip(px.tolist(), py.tolist()))

    for tick in y_ticks:
        (_, y), = to_px(np.array([x_lo]), np.array([tick]))
        draw.line([(left, y), (right, y)], fill=GRID)
        draw_text(draw, (left - 5, y), f"{tick:.3g}", 10, fill=MUTED, anchor="rm")
    for tick in x_ticks:
        (x, _), = to_px(np.array([tick]), np.array([y_lo]))
        draw.line([(x, top), (x, bottom)], fill=GRID)
        draw_text(draw, (x, bottom + 4), f"{tick:g}", 10, fill=MUTED, anchor="mt")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=OUTLINE)
    draw_text(draw, ((left + right) / 2, y1 - 6), "step", 11, fill=MUTED, anchor="mb")
    for index, s in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        points = to_px(s.steps.astype(np.float64), s.values)
        if len(points) == 1:
            points = points * 2  # a line needs two points; the marker below shows the value
        weight = smoothing_weight(len(points)) if smoothed else 0.0
        if weight > 0:
            draw.line(points, fill=_tint(colour, 0.65), width=1)
            points = to_px(s.steps.astype(np.float64), smooth(s.values, weight))
        draw.line(points, fill=colour, width=2)
        if len(points) <= 20:  # few logged steps: mark where the values are
            for x, y in points:
                draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
    if len(series) > 1:
        for index, s in enumerate(series):
            y = top + 8 + index * 16
            colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
            draw.line([(right - 110, y), (right - 90, y)], fill=colour, width=3)
            draw_text(draw, (right - 85, y), s.name, 11, max_width=85, anchor="lm")


# ---------------------------------------------------------------- saving

def save_figure(path: str | os.PathLike, figure: np.ndarray) -> Path:
    """Write an RGB uint8 array as a PNG, atomically."""
    path = Path(path)
    with io.atomic_path(path) as tmp:
        Image.fromarray(figure).save(tmp, format="PNG")
    return path
