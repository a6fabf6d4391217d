"""DeepLab v2 training on pseudo masks (or any folder of label PNGs).

The recipe is deeplab-pytorch's VOC setting: random scale (OpenCV linear for
the image, nearest for the labels, as deeplab-pytorch resizes), flip, pad
(image mean / 255) and crop through :class:`SegmentationDataset`; a cross-entropy
loss (255 ignored) on every output of :class:`deeplab.model.MultiScale` in
training mode, i.e. each input scale and the max-fused logits; SGD with the
poly schedule and the ASPP head's 10x / 20x learning rates. The loop itself
is :func:`irnet_moana.training.fit` (checkpoints, resume, AMP, TensorBoard,
DDP); ``<run_dir>/deeplab/model.pth`` marks the stage complete.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from deeplab.build import deeplab_net, describe
from deeplab.model import param_groups, resize_labels
from irnet_moana import distributed, io
from irnet_moana.data.datasets import SegmentationDataset
from irnet_moana.data.voc import DatasetError, VOCData, check_mask
from irnet_moana.io import IGNORE
from irnet_moana.outputs import DEEPLAB, DEEPLAB_TRAIN_INFO, PSEUDO_MASKS
from irnet_moana.run import progress, resolve_weights, start_run
from irnet_moana.training import TrainingError, TrainSpec, fit, poly_lambda

OUTPUTS = (DEEPLAB,)
# How many offending ids an error message lists before "...".
SHOW = 5



def label_folder(cfg: dict, labels: str | None = None) -> Path:
    """Where the training labels are: ``labels``, else ``deeplab.labels``, else ``<run_dir>/pseudo_masks``."""
    value = labels or cfg["deeplab"]["labels"]
    run_dir = Path(cfg["run_dir"])
    return Path(resolve_weights(value, run_dir)) if value else run_dir / PSEUDO_MASKS


def check_label_folder(folder: Path, stems: Sequence[str], num_classes: int) -> None:
    """Fail before training if any listed image lacks a label PNG or one holds a value that is no class.

    Every listed image must have a label: a partial pseudo-mask folder means
    an unfinished earlier stage, and silently training on the part that
    exists would change the experiment. The values are checked up front
    because a bad file would otherwise stop training only when the sampler
    first reaches it, possibly hours in.

    Raises:
        DatasetError: naming how many labels are missing and the first few,
            or the file with values outside 0..num_classes and 255.
    """
    if not folder.is_dir():
        raise DatasetError(f"label folder {folder} does not exist; run make_pseudo_masks first "
                           "or pass --labels DIR (e.g. the dataset's SegmentationClass)")
    missing = [s for s in stems if not (folder / f"{s}.png").is_file()]
    if missing:
        shown = ", ".join(missing[:SHOW]) + (" ..." if len(missing) > SHOW else "")
        raise DatasetError(f"{len(missing)} of {len(stems)} training images have no label PNG in {folder} "
                           f"(first: {shown}); finish the stage that writes them or pass another --labels folder")
    for stem in progress(stems, len(stems), "check labels"):
        path = folder / f"{stem}.png"
        check_mask(io.load_label_png(path), num_classes, path)


def segmentation_loss(outputs: Sequence[torch.Tensor], labels: torch.Tensor,
                      names: Sequence[str]) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over outputs of the pixel-mean cross entropy against labels resized to each output.

    Summed, not averaged, over the outputs, as deeplab-pytorch does (its
    loop adds one ``CrossEntropyLoss`` per logit map). Computed in float32
    whatever the autocast precision. The mean is over non-ignored pixels;
    an output whose labels are all 255 contributes 0 instead of NaN.
    Returns the total and each output's loss under ``names``.
    """
    total = torch.zeros((), device=labels.device)
    scalars = {}
    for output, name in zip(outputs, names, strict=True):
        target = resize_labels(labels, tuple(output.shape[-2:]))
        counted = (target != IGNORE).sum().clamp(min=1)
        loss = F.cross_entropy(output.float(), target, ignore_index=IGNORE, reduction="sum") / counted
        total = total + loss
        scalars[f"loss_{name}"] = loss.item()
    return total, scalars


def _check_same_labels(out_dir: Path, info: dict) -> None:
    """Refuse to continue or reuse a training made on other labels (the result would be mislabelled)."""
    path = out_dir / DEEPLAB_TRAIN_INFO
    if not io.output_is_valid(path):
        return
    before = io.read_json(path)
    if before.get("labels") != info["labels"] or before.get("train_list") != info["train_list"]:
        raise TrainingError(f"{out_dir} holds a training on labels {before.get('labels')} "
                            f"(list {before.get('train_list')}), not {info['labels']} (list {info['train_list']}); "
                            "use another --run-dir or delete that folder")


def run(cfg: dict, labels: str | None = None, resume: bool = False) -> Path:
    """Train DeepLab v2; returns ``<run_dir>/deeplab/model.pth`` (skipped when it exists).

    Args:
        cfg: resolved configuration (``deeplab`` and ``data`` sections).
        labels: label folder overriding ``deeplab.labels`` (``--labels``).
        resume: continue from ``<run_dir>/deeplab/checkpoint.pth``.
    """
    run_ = start_run(cfg, "train_deeplab", precision_key="deeplab.amp")
    d = cfg["deeplab"]
    data = VOCData(cfg["data"]["root"])
    stems = data.split(d["train_list"])
    folder = label_folder(cfg, labels)
    out_dir = run_.path(DEEPLAB)
    info = {"labels": str(folder.resolve()), "train_list": d["train_list"], "num_images": len(stems)}
    _check_same_labels(out_dir, info)
    check_label_folder(folder, stems, data.num_classes)
    if distributed.is_main():
        io.write_json(out_dir / DEEPLAB_TRAIN_INFO, info)
    dataset = SegmentationDataset(data, stems, folder, cfg["seed"], d["scale_range"], d["crop_size"],
                                  cfg["data"]["skip_corrupt"])
    model = deeplab_net(cfg, data.num_classes)
    spec = TrainSpec(batch_size=d["batch_size"], max_steps=d["iterations"],
                     checkpoint_every=d["checkpoint_every"], num_workers=cfg["data"]["num_workers"])
    names = model.output_names()
    run_.log.info("training %s (scales %s) on %d images of %s with labels from %s",
                  describe(cfg), list(model.scales), len(stems), d["train_list"], folder)
    final = fit(run_, model, param_groups(model, d["lr"], d["weight_decay"]), dataset, spec,
                lambda m, b: segmentation_loss(m(b["image"]), b["label"], names),
                momentum=d["momentum"], weight_decay=d["weight_decay"],
                schedule=lambda total, _: poly_lambda(total, d["poly_power"]), out_dir=out_dir, resume=resume)
    run_.finish(f"trained on {len(stems)} images, labels {folder}", final)
    return final
