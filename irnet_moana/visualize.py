"""Figures of a WSSS run, drawn with PIL and OpenCV (no matplotlib).

Three PNGs under ``<run_dir>/figures/``:

* ``pipeline_examples.png``: one row per image (the first ``num_images`` ids
  of ``data.eval_list``, so the choice is fixed and reproducible), one column
  per stage: image | CAM overlay | relation labels | boundary map | pseudo
  mask | DeepLab | ground truth, under a legend of the classes shown;
* ``moana_attention.png``: for the same images, the channel mean of MoANA's
  attention map M over the image, the channel means of the height and width
  views z_h and z_w as profiles along its sides, and the strongest channels
  of the channel view z_c as bars;
* ``instance_examples.png``: for images with several objects of one class
  where the dataset has SegmentationObject (else the same images as above):
  image | IRNet's displacement field (hue: direction, brightness: length) |
  the centroid groups (pixels coloured by the region their centroid reaches,
  landing points black) | IRNet's instances | the semantic-component baseline
  | ground-truth objects;
* ``training_curves.png``: ``train/loss`` and ``train/lr`` of every training
  stage, read from its TensorBoard event files.

Whatever a figure needs and the run does not have yet becomes an "n/a" cell
or a skipped figure with a log line, so :func:`run` works after any stage.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import io
from .data import transforms as T
from .data.voc import OBJECT_DIR, DatasetError, VOCData
from .io import IGNORE, CorruptFileError
from .models.cam_net import CAMNet
from .models.irn import IRNet
from .precision import choose
from .run import start_run
from .instances import cluster_centroids, refine_centroids
from .stages import make_cams, make_instance_masks, make_ir_labels, make_pseudo_masks, train_cam, train_irn, train_wsol
from .stages.common import class_names_with_background
from .training import TrainingError
from .wsol.visualize import overlay, save_figure

FIGURES = "figures"
PIPELINE_FIGURE = "pipeline_examples.png"
MOANA_FIGURE = "moana_attention.png"
INSTANCE_FIGURE = "instance_examples.png"
CURVES_FIGURE = "training_curves.png"
NUM_IMAGES = 6

# Layout, in pixels.
PAD = 8
TITLE_H = 30
HEADER_H = 22  # column titles
CAPTION_H = 18  # one line above each row
LEGEND_LINE_H = 22
SWATCH = 14
SMALL_SIDE = 128  # images up to this long side are shown twice as large
MAX_SIDE = 256  # larger ones are shrunk to this long side
PROFILE = 44  # band holding the z_h / z_w profiles
BARS_W = 230
TOP_CHANNELS = 10
PANEL_W, PANEL_H = 460, 250
MIN_FONT = 8

WHITE = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (120, 120, 120)
NA_FILL = (236, 236, 236)
GRID = (222, 222, 222)
OUTLINE = (150, 150, 150)
PROFILE_COLOUR = (200, 30, 30)
BAR_COLOUR = (70, 130, 180)
SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))

# Errors that mean "this input is not there (or not usable) yet", as opposed to bugs.
UNAVAILABLE = (OSError, CorruptFileError, DatasetError, TrainingError)


# ---------------------------------------------------------------- drawing primitives

@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int = 13,
              max_width: float | None = None, fill: tuple[int, int, int] = TEXT, anchor: str = "la") -> None:
    """Draw ``text``; when ``max_width`` is given it is shrunk (down to 8 px), then shortened with '...' to fit."""
    if max_width is not None:
        while size > MIN_FONT and draw.textlength(text, font=_font(size)) > max_width:
            size -= 1
        if draw.textlength(text, font=_font(size)) > max_width:
            while text and draw.textlength(text + "...", font=_font(size)) > max_width:
                text = text[:-1]
            text += "..."
    draw.text(xy, text, font=_font(size), fill=fill, anchor=anchor)


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


def colour_labels(label: np.ndarray) -> np.ndarray:
    """RGB picture of a label map in the VOC palette (255, ignore, comes out light beige)."""
    return io.voc_palette()[label]


def boundary_picture(boundary: np.ndarray) -> np.ndarray:
    """Boundary probabilities in [0, 1] as dark lines on white."""
    grey = np.round(255 * (1 - np.clip(boundary, 0, 1))).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


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

def legend_entries(values: set[int], names: Sequence[str]) -> list[tuple[tuple[int, int, int], str]]:
    """(colour, name) for each label value present: classes in order, then ignore."""
    palette = io.voc_palette()
    entries = [(tuple(int(c) for c in palette[v]), names[v]) for v in sorted(values) if v < len(names)]
    if IGNORE in values:
        entries.append((tuple(int(c) for c in palette[IGNORE]), "ignore / void (255)"))
    return entries


def _legend_items(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> list[tuple[int, int]]:
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


def legend_height(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> int:
    """Height of the legend band under a grid ``width`` pixels wide (0 without entries)."""
    items = _legend_items(entries, width)
    return 0 if not items else (items[-1][1] + 1) * LEGEND_LINE_H + PAD


def draw_legend(canvas: Image.Image, entries: Sequence[tuple[tuple[int, int, int], str]], top: int) -> None:
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
              legend: Sequence[tuple[tuple[int, int, int], str]] = ()) -> Image.Image:
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


# ---------------------------------------------------------------- pipeline examples

def example_stems(cfg: dict, num_images: int = NUM_IMAGES) -> list[str]:
    """The images every figure shows: the first ``num_images`` ids of ``data.eval_list``, in list order."""
    return VOCData(cfg["data"]["root"]).split(cfg["data"]["eval_list"])[:num_images]


def _attempt(what: str, log: logging.Logger, fn: Callable, *args):
    """``fn(*args)``, or None with a log line when its input is missing or unreadable."""
    try:
        return fn(*args)
    except UNAVAILABLE as exc:
        log.info("figures: %s unavailable (%s)", what, exc)
        return None


def _label_png(path: Path) -> np.ndarray | None:
    return io.load_label_png(path) if path.is_file() else None


def cam_overlay(image: np.ndarray, cam_path: Path) -> np.ndarray | None:
    """The image under a jet overlay of the maximum of its ``high_res`` CAMs over classes."""
    if not cam_path.is_file():
        return None
    high_res = io.load_npz(cam_path, keys=("high_res",))["high_res"]
    if high_res.shape[1:] != image.shape[:2]:
        raise CorruptFileError(f"{cam_path}: high_res is {high_res.shape[1:]}, the image {image.shape[:2]}")
    heat = high_res.max(0) if len(high_res) else np.zeros(image.shape[:2], np.float32)
    return overlay(image, heat)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(T.to_chw(T.normalize(image)))


def boundary_map(model: IRNet, image: np.ndarray, pad_to: int, device: torch.device) -> np.ndarray:
    """IRNet's boundary probability at image size (the stride-4 map, image + flip, upsampled bilinearly)."""
    x = _image_tensor(image)
    stride4 = model.infer(torch.stack([x, x.flip(-1)]).to(device), pad_to)[0].float().cpu().numpy()
    height, width = image.shape[:2]
    up = cv2.resize(stride4, (stride4.shape[1] * 4, stride4.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    return up[:height, :width]


class _LazyModel:
    """A stage's trained model, loaded on first use; None (logged once) when its weights are missing."""

    def __init__(self, what: str, load: Callable[[], torch.nn.Module], log: logging.Logger) -> None:
        self.what, self.load, self.log = what, load, log

    @functools.cached_property
    def model(self) -> torch.nn.Module | None:
        return _attempt(self.what, self.log, self.load)


SINGLE_SCALE = "DeepLab (single scale)"


def _deeplab_source(run_dir: Path, stems: Sequence[str]) -> tuple[str | None, str]:
    """The stored DeepLab prediction folder to show (the most refined one holding a shown image) and its title."""
    from deeplab import evaluate, train

    titles = {evaluate.CRF: "DeepLab (MSF+CRF)", evaluate.MSF: "DeepLab (MSF)", evaluate.SS: SINGLE_SCALE}
    for folder in (evaluate.CRF, evaluate.MSF, evaluate.SS):
        if any((run_dir / train.OUT / folder / f"{s}.png").is_file() for s in stems):
            return folder, titles[folder]
    return None, "DeepLab"


@dataclass
class Column:
    """A column of the pipeline grid: how to get its picture of an image, and how to resize it."""

    title: str
    kind: str  # rgb | labels | boundary
    get: Callable[[str, np.ndarray], np.ndarray | None]  # (image id, image) -> array at image size


def pipeline_columns(cfg: dict, run_dir: Path, data: VOCData, stems: Sequence[str], device: torch.device,
                     log: logging.Logger) -> list[Column]:
    """The seven columns, reading stage outputs and running the trained IRNet / DeepLab when needed."""
    from deeplab import evaluate, train

    irn = _LazyModel("IRNet boundary map", lambda: train_irn.load_trained(cfg, run_dir, device), log)
    deeplab_precision = choose(cfg["deeplab"]["amp"], device, "deeplab.amp")
    deeplab = _LazyModel("DeepLab prediction", lambda: evaluate.load_model(cfg, data.num_classes, device), log)
    folder, deeplab_title = _deeplab_source(run_dir, stems)
    if folder is None and (run_dir / train.OUT / "model.pth").is_file():
        deeplab_title = SINGLE_SCALE

    def boundary(stem: str, image: np.ndarray) -> np.ndarray | None:
        return None if irn.model is None else boundary_map(irn.model, image, cfg["irn"]["crop_size"], device)

    def deeplab_pred(stem: str, image: np.ndarray) -> np.ndarray | None:
        if folder is not None:
            return _label_png(run_dir / train.OUT / folder / f"{stem}.png")
        if not (run_dir / train.OUT / "model.pth").is_file() or deeplab.model is None:
            return None
        # The shown images are usually not in deeplab.eval_list: predict them (single scale) here.
        probs = evaluate.predict_single_scale(deeplab.model, _image_tensor(image).to(device), deeplab_precision)
        return probs.argmax(0).byte().cpu().numpy()

    return [
        Column("image", "rgb", lambda stem, image: image),
        Column("CAM (max over classes)", "rgb", lambda stem, image: cam_overlay(
            image, run_dir / make_cams.OUT / f"{stem}.npz")),
        Column("relation labels", "labels",
               lambda stem, image: _label_png(run_dir / make_ir_labels.OUT / f"{stem}.png")),
        Column("boundary (IRNet)", "boundary", boundary),
        Column("pseudo mask", "labels",
               lambda stem, image: _label_png(run_dir / make_pseudo_masks.OUT / f"{stem}.png")),
        Column(deeplab_title, "labels", deeplab_pred),
        Column("ground truth", "labels", lambda stem, image: data.load_mask(stem, image.shape)),
    ]


def _class_list(labels: np.ndarray, names: Sequence[str]) -> str:
    present = [names[i + 1] for i in np.flatnonzero(labels)]
    return ", ".join(present) if present else "no class"


def pipeline_figure(cfg: dict, run_dir: Path, stems: Sequence[str], device: torch.device,
                    log: logging.Logger) -> Image.Image:
    """The grid image | CAM | relation labels | boundary | pseudo mask | DeepLab | ground truth."""
    data = VOCData(cfg["data"]["root"])
    names = class_names_with_background(data)
    image_labels = data.image_labels(list(stems))
    columns = pipeline_columns(cfg, run_dir, data, stems, device, log)
    rows, shown_values = [], set()
    for stem in stems:
        image = data.load_image(stem)
        size = display_size(*image.shape[:2])
        cells = []
        for column in columns:
            array = _attempt(f"{column.title} of {stem}", log, column.get, stem, image)
            if array is not None and array.shape[:2] != image.shape[:2]:
                log.info("figures: %s of %s has size %s, not the image's %s; shown as n/a", column.title, stem,
                         array.shape[:2], image.shape[:2])
                array = None
            if array is not None and column.kind == "labels":
                shown_values.update(np.unique(array).tolist())
                array = colour_labels(array)
            elif array is not None and column.kind == "boundary":
                array = boundary_picture(array)
            cells.append(None if array is None else T.resize(array, size, nearest=column.kind == "labels"))
        rows.append(Row(f"{stem}: {_class_list(image_labels[stem], names)}", size, cells))
    title = f"{Path(run_dir).name}: first {len(stems)} images of '{cfg['data']['eval_list']}'"
    return draw_grid(title, [c.title for c in columns], rows, legend_entries(shown_values, names))


# ---------------------------------------------------------------- instances

def displacement_picture(displacement: np.ndarray) -> np.ndarray:
    """A (2, h, w) field (dy, dx) as RGB: hue the direction, brightness the length relative to the longest."""
    dy, dx = displacement.astype(np.float32)
    hue = (np.degrees(np.arctan2(dy, dx)) % 360) / 2  # OpenCV's hue runs 0..180
    length = np.hypot(dy, dx)
    value = 255 * length / max(float(length.max()), 1e-6)
    hsv = np.stack([hue, np.full_like(hue, 255), value], -1).round().astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def centroid_groups(displacement: np.ndarray, cfg: dict) -> np.ndarray:
    """(h, w) group ids (1..) of the clustered centroids, 0 where a centroid lands."""
    centroids = refine_centroids(displacement, cfg["instance"]["centroid_steps"])
    groups = cluster_centroids(centroids, displacement, cfg["instance"]["weak_displacement"]).argmax(0) + 1
    groups[centroids[0], centroids[1]] = 0
    return groups.astype(np.uint8)


def instance_stems(cfg: dict, num_images: int = NUM_IMAGES) -> list[str]:
    """Images of ``data.eval_list`` with two or more objects of one class (ground truth), else the first ones."""
    data = VOCData(cfg["data"]["root"])
    stems = data.split(cfg["data"]["eval_list"])
    objects, classes = data.root / OBJECT_DIR, data.root / "SegmentationClass"
    if not objects.is_dir():
        return stems[:num_images]
    chosen = []
    for stem in stems:
        ids = _label_png(objects / f"{stem}.png")
        if ids is None:
            continue
        labels = io.load_label_png(classes / f"{stem}.png")
        per_class = [labels[ids == k][0] for k in set(np.unique(ids).tolist()) - {0, IGNORE}]
        if len(per_class) > len(set(per_class)):
            chosen.append(stem)
        if len(chosen) == num_images:
            break
    return chosen or stems[:num_images]


def instance_figure(cfg: dict, run_dir: Path, stems: Sequence[str], device: torch.device,
                    log: logging.Logger) -> Image.Image | None:
    """The grid image | displacement | centroid groups | IRNet instances | baseline | ground-truth objects."""
    model = _LazyModel("IRNet displacement field", lambda: train_irn.load_trained(cfg, run_dir, device), log).model
    if model is None:
        return None
    data = VOCData(cfg["data"]["root"])
    titles = ["image", "displacement", "centroid groups", "IRNet instances", "semantic components",
              "ground-truth objects"]
    rows = []
    for stem in stems:
        image = data.load_image(stem)
        height, width = image.shape[:2]
        size = display_size(height, width)
        x = _image_tensor(image)
        with torch.no_grad():
            displacement = model.infer(torch.stack([x, x.flip(-1)]).to(device), cfg["irn"]["crop_size"])[1]
        displacement = displacement.float().cpu().numpy()

        def full(stride4: np.ndarray) -> np.ndarray:
            return np.repeat(np.repeat(stride4, 4, 0), 4, 1)[:height, :width]

        found = [_attempt(f"{folder} of {stem}", log, io.load_instances, run_dir / folder / stem)
                 for folder in (make_instance_masks.OUT, make_instance_masks.BASELINE_OUT)]
        objects = _label_png(data.root / OBJECT_DIR / f"{stem}.png")
        pictures = [image, full(displacement_picture(displacement)),
                    full(colour_labels(centroid_groups(displacement, cfg))),
                    *[None if f is None else colour_labels(io.instance_id_map(f.masks)) for f in found],
                    None if objects is None else colour_labels(objects)]
        cells = [None if p is None else T.resize(p, size, nearest=index > 0) for index, p in enumerate(pictures)]
        rows.append(Row(stem, size, cells))
    title = f"{Path(run_dir).name}: instances (colours are instance numbers, not classes)"
    return draw_grid(title, titles, rows)


# ---------------------------------------------------------------- MoANA attention

@torch.no_grad()
def moana_views(model: CAMNet, image: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """MoANA's attention on one image: ``M`` and ``z_h`` / ``z_w`` averaged over channels, and ``z_c`` (C,)."""
    features = model.backbone(_image_tensor(image)[None].to(device))
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
    """Image | channel mean of M over the image with z_h (right) and z_w (below) | top z_c channels."""
    if not cfg["cam"]["moana"]:
        log.info("figures: %s skipped: cam.moana is false", MOANA_FIGURE)
        return None
    data = VOCData(cfg["data"]["root"])
    model = _attempt("MoANA attention (trained CAM network)", log, make_cams.load_cam_model, cfg,
                     data.num_classes, run_dir, device)
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


# ---------------------------------------------------------------- training curves

@dataclass
class Series:
    """One scalar over training steps."""

    name: str
    steps: np.ndarray
    values: np.ndarray


def read_scalars(log_dir: Path,
                 tags: Sequence[str] = ("train/loss", "train/lr")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of each tag found in a TensorBoard folder.

    A step logged twice (a run resumed from an earlier checkpoint) keeps its latest value.
    """
    if not any(Path(log_dir).glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
    from deeplab import train as deeplab_train

    from .pipeline import BASELINE_DIR

    run_dir, base = Path(run_dir), Path(run_dir) / BASELINE_DIR
    cam_name = "MoANA" if cfg["cam"]["moana"] else "CAM"
    wsol_name = "MoANA" if cfg["wsol"]["moana"] else "CAM"
    board = "tensorboard"
    return [
        ("CAM classifier", [(cam_name, run_dir / train_cam.OUT / board), ("plain CAM", base / train_cam.OUT / board)]),
        ("IRNet", [("IRNet", run_dir / train_irn.OUT / board)]),
        ("DeepLab", [("DeepLab", run_dir / deeplab_train.OUT / board)]),
        ("WSOL classifier", [(wsol_name, run_dir / train_wsol.OUT / board),
                             ("plain CAM", base / train_wsol.OUT / board)]),
    ]


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


def _tint(colour: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(int(round(c + (255 - c) * amount)) for c in colour)


def smoothing_weight(num_points: int) -> float:
    """Moving-average weight for a series of ``num_points``: a window of about 3 % of it, none below 60 points."""
    return 0.0 if num_points <= 60 else min(0.95, 1 - 30 / num_points)


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


# ---------------------------------------------------------------- entry point

def run(cfg: dict, num_images: int = NUM_IMAGES) -> list[Path]:
    """Write every figure whose inputs exist under ``<run_dir>/figures/``; returns the paths written.

    Missing stage outputs leave "n/a" cells or skip a figure with a log line; nothing here fails
    because a stage has not run yet.
    """
    run_ = start_run(cfg, "visualize")
    figures: dict[str, Image.Image | None] = {}
    stems = _attempt("example images", run_.log, example_stems, cfg, num_images) or []
    if stems:
        figures[PIPELINE_FIGURE] = _attempt(PIPELINE_FIGURE, run_.log, pipeline_figure, cfg, run_.dir, stems,
                                            run_.device, run_.log)
        figures[MOANA_FIGURE] = _attempt(MOANA_FIGURE, run_.log, moana_figure, cfg, run_.dir, stems, run_.device,
                                         run_.log)
    instance_examples = _attempt("instance images", run_.log, instance_stems, cfg, num_images) or []
    if instance_examples:
        figures[INSTANCE_FIGURE] = _attempt(INSTANCE_FIGURE, run_.log, instance_figure, cfg, run_.dir,
                                            instance_examples, run_.device, run_.log)
    figures[CURVES_FIGURE] = curves_figure(cfg, run_.dir, run_.log)
    written = []
    for name, figure in figures.items():
        if figure is not None:
            written.append(save_figure(run_.path(FIGURES, name), np.asarray(figure)))
            run_.log.info("figure: %s", written[-1])
    run_.finish(f"{len(written)} figure(s) written", run_.path(FIGURES))
    return written
