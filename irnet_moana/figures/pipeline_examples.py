"""The pipeline-examples figure: one row per image, one column per stage's output, under a class legend."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from deeplab.build import trained_deeplab
from deeplab.predict import predict_single_scale

from .. import io
from ..data import transforms as T
from ..data.voc import VOCData, class_names_with_background
from ..io import CorruptFileError
from ..models.build import trained_irnet
from ..models.irn import IRNet
from ..outputs import CAMS, DEEPLAB, DEEPLAB_CRF, DEEPLAB_MSF, DEEPLAB_SS, IR_LABELS, MODEL, PSEUDO_MASKS
from ..precision import choose
from .drawing import Row, boundary_picture, colour_labels, display_size, draw_grid, legend_entries, overlay
from .inputs import LazyModel, attempt, image_tensor, optional_label_png

SINGLE_SCALE = "DeepLab (single scale)"
DEEPLAB_TITLES = {DEEPLAB_CRF: "DeepLab (MSF+CRF)", DEEPLAB_MSF: "DeepLab (MSF)", DEEPLAB_SS: SINGLE_SCALE}


def cam_overlay(image: np.ndarray, cam_path: Path) -> np.ndarray | None:
    """The image under a jet overlay of the maximum of its ``high_res`` CAMs over classes."""
    if not cam_path.is_file():
        return None
    high_res = io.load_npz(cam_path, keys=("high_res",))["high_res"]
    if high_res.shape[1:] != image.shape[:2]:
        raise CorruptFileError(f"{cam_path}: high_res is {high_res.shape[1:]}, the image {image.shape[:2]}")
    heat = high_res.max(0) if len(high_res) else np.zeros(image.shape[:2], np.float32)
    return overlay(image, heat)


def boundary_map(model: IRNet, image: np.ndarray, pad_to: int, device: torch.device) -> np.ndarray:
    """IRNet's boundary probability at image size (the stride-4 map, image + flip, upsampled bilinearly)."""
    x = image_tensor(image)
    stride4 = model.infer(torch.stack([x, x.flip(-1)]).to(device), pad_to)[0].float().cpu().numpy()
    height, width = image.shape[:2]
    up = cv2.resize(stride4, (stride4.shape[1] * 4, stride4.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    return up[:height, :width]


def _deeplab_source(run_dir: Path, stems: Sequence[str]) -> tuple[str | None, str]:
    """The stored DeepLab prediction folder to show (the most refined one holding a shown image) and its title."""
    for folder in (DEEPLAB_CRF, DEEPLAB_MSF, DEEPLAB_SS):
        if any((run_dir / DEEPLAB / folder / f"{s}.png").is_file() for s in stems):
            return folder, DEEPLAB_TITLES[folder]
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
    irn = LazyModel("IRNet boundary map", lambda: trained_irnet(cfg, run_dir, device), log)
    deeplab_precision = choose(cfg["deeplab"]["amp"], device, "deeplab.amp")
    deeplab = LazyModel("DeepLab prediction", lambda: trained_deeplab(cfg, data.num_classes, device), log)
    deeplab_weights = run_dir / DEEPLAB / MODEL
    folder, deeplab_title = _deeplab_source(run_dir, stems)
    if folder is None and deeplab_weights.is_file():
        deeplab_title = SINGLE_SCALE

    def boundary(stem: str, image: np.ndarray) -> np.ndarray | None:
        return None if irn.model is None else boundary_map(irn.model, image, cfg["irn"]["crop_size"], device)

    def deeplab_pred(stem: str, image: np.ndarray) -> np.ndarray | None:
        if folder is not None:
            return optional_label_png(run_dir / DEEPLAB / folder / f"{stem}.png")
        if not deeplab_weights.is_file() or deeplab.model is None:
            return None
        # The shown images are usually not in deeplab.eval_list: predict them (single scale) here.
        probs = predict_single_scale(deeplab.model, image_tensor(image).to(device), deeplab_precision)
        return probs.argmax(0).byte().cpu().numpy()

    return [
        Column("image", "rgb", lambda stem, image: image),
        Column("CAM (max over classes)", "rgb", lambda stem, image: cam_overlay(image, run_dir / CAMS / f"{stem}.npz")),
        Column("relation labels", "labels",
               lambda stem, image: optional_label_png(run_dir / IR_LABELS / f"{stem}.png")),
        Column("boundary (IRNet)", "boundary", boundary),
        Column("pseudo mask", "labels",
               lambda stem, image: optional_label_png(run_dir / PSEUDO_MASKS / f"{stem}.png")),
        Column(deeplab_title, "labels", deeplab_pred),
        Column("ground truth", "labels", lambda stem, image: data.load_mask(stem, image.shape)),
    ]


def _class_list(labels: np.ndarray, names: Sequence[str]) -> str:
    present = [names[i + 1] for i in np.flatnonzero(labels)]
    return ", ".join(present) if present else "no class"


def pipeline_figure(cfg: dict, run_dir: Path, stems: Sequence[str], device: torch.device,
                    log: logging.Logger) -> Image.Image:
    """The grid image | CAM overlay | relation labels | IRNet boundary | pseudo mask | DeepLab | ground truth.

    One row per image, captioned with its classes; under the grid a legend of the label values shown.
    DeepLab shows the most refined stored prediction folder, else a single-scale prediction of the
    trained network.
    """
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
            array = attempt(f"{column.title} of {stem}", log, column.get, stem, image)
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
