"""Optional stage: Mask R-CNN trained on the instance pseudo labels, scored with the project's mAP^r.

IRNet's paper trains no detector on its instance masks; weakly supervised
instance segmentation work that follows it commonly does (a Mask R-CNN on the
pseudo labels). This stage does that with torchvision's ``maskrcnn_resnet50_fpn``:

* data: ``<run_dir>/instance_masks_coco.json`` (written by ``make_instance_masks``)
  read with ``torchvision.datasets.CocoDetection`` wrapped for transforms v2
  (boxes, labels, masks); images as float in [0, 1] (Mask R-CNN normalises and
  resizes to ``min_size`` / ``max_size`` itself), a random horizontal flip seeded
  per (seed, epoch, index) as every training set here; images without any
  annotation are left out of training;
* model: ``maskrcnn.weights`` = ``imagenet`` (torchvision's ResNet-50 file, from
  torch's hub cache or downloaded into it), a ResNet-50 state dict file, or
  ``none``. With backbone weights the model is torchvision's pretrained-backbone
  one (frozen BatchNorm, ``trainable_backbone_layers`` stages trained); with
  ``none`` it is torchvision's ``weights_backbone=None`` one (trainable BatchNorm,
  every stage trained, ``trainable_backbone_layers`` ignored as torchvision does);
* training: :func:`irnet_moana.training.fit` (SGD, checkpoints, exact resume,
  AMP, TensorBoard, NaN detection) with torchvision's reference recipe: a linear
  warm-up from lr / 1000, then x0.1 steps (or poly). Mask R-CNN samples its
  RPN and RoI training boxes from torch's global generator, so each step seeds
  it from that step's samples: a resumed run draws what an uninterrupted one does;
* evaluation: predictions on ``maskrcnn.eval_list`` above ``maskrcnn.min_score``,
  made non-overlapping (a pixel goes to the highest-scoring instance whose
  mask probability exceeds ``maskrcnn.mask_threshold``), saved with
  :func:`io.save_instances` under ``<run_dir>/maskrcnn/pred`` and scored with
  :func:`score_instance_folder` where the dataset has ``SegmentationObject/``.
"""
from __future__ import annotations

import contextlib
import io as std_io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.transforms.functional import pil_to_tensor

from .. import distributed, io
from ..config import ConfigError
from ..data.datasets import TrainingDataset
from ..data.voc import OBJECT_DIR, DatasetError, VOCData
from ..instance_eval import format_ap_table, format_map_line, score_instance_folder
from ..models.backbone import resnet_weights, state_mismatch
from ..outputs import EVAL_MASKRCNN, INSTANCE_COCO, MASKRCNN, MASKRCNN_PRED, METRICS
from ..precision import choose
from ..run import pending, progress, resolve_weights, start_run
from ..training import TrainSpec, autocast, fit

OUTPUTS = (MASKRCNN, f"{METRICS}/{EVAL_MASKRCNN}")
IMAGE_DIR = "JPEGImages"
ARCH = "resnet50"
WARMUP_START = 1e-3  # torchvision's reference: the warm-up starts at lr / 1000


# ----------------------------------------------------------------------------- model

def backbone_state(weights: str) -> dict[str, torch.Tensor]:
    """The ResNet-50 state dict ``maskrcnn.weights`` names (``imagenet`` or a file), without ``fc.*``."""
    try:
        return resnet_weights(ARCH, weights)
    except RuntimeError as err:
        # imagenet out of reach: the backbone's message names the URL and where the cached file must go
        raise ConfigError(f"maskrcnn.weights=imagenet: {err} (here: maskrcnn.weights=/path/to/file.pth)") from err
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"maskrcnn.weights: {err}") from err


def build_model(cfg: dict, num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision's Mask R-CNN (ResNet-50 FPN) for ``num_classes`` foreground classes plus background.

    ``weights`` overrides ``maskrcnn.weights`` (``"none"`` before loading trained weights would give
    another architecture with trainable BatchNorm, so pass the setting the model was trained with).
    """
    m = cfg["maskrcnn"]
    value = resolve_weights(m["weights"] if weights is None else weights, Path(cfg["run_dir"]))
    options = dict(num_classes=num_classes + 1, min_size=m["min_size"], max_size=m["max_size"],
                   box_score_thresh=m["min_score"])
    if value == "none":
        # torchvision's model without pretrained weights: BatchNorm2d, all five stages trained
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **options)
    layers = m["trainable_backbone_layers"]
    if not 0 <= layers <= 5:
        raise ConfigError(f"key 'maskrcnn.trainable_backbone_layers' must lie in 0..5, got {layers}")
    state = backbone_state(value)
    # what maskrcnn_resnet50_fpn builds with weights_backbone set: frozen BatchNorm, top `layers` stages trained
    fpn = resnet_fpn_backbone(backbone_name=ARCH, weights=None, trainable_layers=layers)
    own = fpn.body.state_dict()
    mismatch = state_mismatch(own, state)
    if mismatch:
        raise ConfigError(f"maskrcnn.weights {value} is not a torchvision ResNet-50 state dict: {mismatch}")
    fpn.body.load_state_dict({k: v for k, v in state.items() if k in own})
    return MaskRCNN(fpn, **options)


# ----------------------------------------------------------------------------- data

def _quiet_coco(image_dir: Path, coco_path: Path):
    with contextlib.redirect_stdout(std_io.StringIO()):  # pycocotools prints its loading steps
        return CocoDetection(str(image_dir), str(coco_path))


class CocoInstances(TrainingDataset):
    """The annotated images of a COCO instance file as Mask R-CNN training samples.

    Indexed by ``(index, epoch)`` from :class:`irnet_moana.data.datasets.EpochSampler`;
    sample ``index`` is flipped (or not) by the generator of (seed, epoch, index)
    and carries a ``seed`` from it for the step's box sampling. An unreadable
    image is skipped as :class:`TrainingDataset` does: the next one takes its slot.
    """

    def __init__(self, image_dir: Path, coco_path: Path, seed: int, flip: bool = True,
                 skip_corrupt: bool = True) -> None:
        coco = _quiet_coco(image_dir, coco_path)
        self.source = wrap_dataset_for_transforms_v2(coco, target_keys={"boxes", "labels", "masks"})
        self.indices = [i for i, image_id in enumerate(coco.ids) if coco.coco.getAnnIds(imgIds=image_id)]
        stems = [Path(coco.coco.imgs[coco.ids[i]]["file_name"]).stem for i in self.indices]
        super().__init__(None, stems, seed, skip_corrupt)
        self.num_images, self.flip = len(coco.ids), flip
        absent = [coco.coco.imgs[coco.ids[i]]["file_name"] for i in self.indices
                  if not (Path(image_dir) / coco.coco.imgs[coco.ids[i]]["file_name"]).is_file()]
        if absent:
            raise DatasetError(f"{coco_path}: {len(absent)} image(s) absent from {image_dir} "
                               f"(first: {', '.join(absent[:5])}); the COCO file belongs to another data.root")

    def load(self, position: int) -> tuple[Any, dict]:
        try:
            return self.source[self.indices[position]]
        except OSError as exc:  # PIL's unreadable / truncated image
            raise io.CorruptFileError(f"training image {self.stems[position]}: {exc}") from exc

    def make_sample(self, stem: str, loaded: tuple[Any, dict], rng: np.random.Generator) -> dict[str, Any]:
        image, target = loaded
        image = pil_to_tensor(image).float().div_(255)
        boxes = target["boxes"].as_subclass(torch.Tensor).float()
        masks = target["masks"].as_subclass(torch.Tensor).to(torch.uint8)
        labels = target["labels"].as_subclass(torch.Tensor).to(torch.int64)
        if masks.shape[-2:] != image.shape[-2:]:
            raise DatasetError(f"the COCO masks of {stem} are {masks.shape[-1]}x{masks.shape[-2]} but the image is "
                               f"{image.shape[-1]}x{image.shape[-2]}; the COCO file belongs to other images")
        seed = int(rng.integers(2**31))
        if self.flip and rng.random() < 0.5:
            width = image.shape[-1]
            image, masks = image.flip(-1), masks.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return {"image": image, "target": {"boxes": boxes, "labels": labels, "masks": masks}, "seed": seed}


def collate_detection(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Lists, not stacks: Mask R-CNN takes images of any size and per-image targets."""
    return {"images": [b["image"] for b in batch], "targets": [b["target"] for b in batch],
            "seeds": [b["seed"] for b in batch], "name": [b["name"] for b in batch],
            "skipped": [stem for b in batch for stem in b.get("skipped", ())]}


# ----------------------------------------------------------------------------- training

def step_seed(seeds: Sequence[int]) -> int:
    """One seed for a step from its samples' seeds (the same whatever the rank count or resume point)."""
    return int(np.random.default_rng(list(seeds)).integers(2**63))


def training_loss(model: nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """Mask R-CNN's summed training losses and each one, with the step's box sampling seeded from its samples."""
    images = [image.to(device, non_blocking=True) for image in batch["images"]]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["targets"]]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(step_seed(batch["seeds"]))
        losses = model(images, targets)
    total = sum(value.float() for value in losses.values())
    return total, {name: value.item() for name, value in losses.items()}


def lr_lambda(total: int, schedule: str, warmup: int, step_at: Sequence[float], factor: float,
              power: float = 0.9) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up from WARMUP_START over ``warmup`` steps, times step or poly decay."""
    milestones = [round(f * total) for f in step_at]

    def multiplier(step: int) -> float:
        warm = 1.0 if step >= warmup else WARMUP_START + (1 - WARMUP_START) * step / warmup
        if schedule == "poly":
            decay = (1 - min(step, total) / total) ** power
        else:
            decay = factor ** sum(step >= m for m in milestones)
        return warm * decay

    return multiplier


def _check_settings(m: dict) -> None:
    if any(not 0 < f < 1 for f in m["step_at"]) or list(m["step_at"]) != sorted(m["step_at"]):
        raise ConfigError(f"key 'maskrcnn.step_at' must be increasing fractions of the iterations in (0, 1), "
                          f"got {m['step_at']!r}")


# ----------------------------------------------------------------------------- prediction

def to_instances(prediction: dict[str, torch.Tensor], size: tuple[int, int], min_score: float,
                 mask_threshold: float) -> io.Instances:
    """Non-overlapping instances from Mask R-CNN's output for one image.

    Detections scoring below ``min_score`` are dropped; each pixel whose mask
    probability exceeds ``mask_threshold`` in several detections goes to the
    highest-scoring one (the earlier one on a tie); detections left without a
    pixel are dropped.
    """
    scores = prediction["scores"].detach().float().cpu().numpy()
    labels = prediction["labels"].detach().cpu().numpy().astype(np.int64)
    probs = prediction["masks"].detach().float().cpu().numpy().reshape(len(scores), *size)
    order = np.argsort(-scores, kind="stable")
    taken = np.zeros(size, dtype=bool)
    masks, kept_labels, kept_scores = [], [], []
    for k in order:
        if scores[k] < min_score:
            continue
        mask = (probs[k] > mask_threshold) & ~taken
        if not mask.any():
            continue
        taken |= mask
        masks.append(mask)
        kept_labels.append(labels[k])
        kept_scores.append(float(scores[k]))
    return io.Instances(np.array(masks, dtype=bool).reshape(len(masks), *size),
                        np.array(kept_labels, dtype=np.int64), np.array(kept_scores, dtype=np.float64))


@torch.no_grad()
def predict(model: nn.Module, data: VOCData, stems: Sequence[str], out_dir: Path, device: torch.device,
            precision, min_score: float, mask_threshold: float) -> None:
    """Save each image's non-overlapping instances as ``out_dir/<stem>.{png,json}``."""
    model.eval()
    for stem in progress(stems, len(stems), "maskrcnn predict"):
        image = data.load_image(stem)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255).to(device)
        with autocast(device, precision):
            (prediction,) = model([tensor])
        io.save_instances(out_dir / stem, to_instances(prediction, image.shape[:2], min_score, mask_threshold))


# ----------------------------------------------------------------------------- stage

def run(cfg: dict, resume: bool = False) -> dict | None:
    """Train (``<run_dir>/maskrcnn/model.pth``, skipped when it exists), predict and score.

    Returns the metrics (also in ``<run_dir>/metrics/eval_maskrcnn.json``), or
    None when the dataset has no instance ground truth to score against.
    """
    run_ = start_run(cfg, "train_maskrcnn", precision_key="maskrcnn.amp")
    m = cfg["maskrcnn"]
    _check_settings(m)
    data = VOCData(cfg["data"]["root"])
    coco_path = run_.path(INSTANCE_COCO)
    if not coco_path.is_file():
        raise DatasetError(f"{coco_path} does not exist; run `python pipelines/make_instance_masks.py` first "
                           "(it writes the instance pseudo labels' COCO export)")
    coco = io.read_json(coco_path)
    categories = [c["name"] for c in sorted(coco.get("categories", []), key=lambda c: c["id"])]
    if categories != list(data.names):
        raise DatasetError(f"{coco_path} has the categories {categories[:6]}, not the classes of {data.root} "
                           f"{list(data.names)[:6]}; it was exported for another dataset")
    image_dir = data.root / coco.get("info", {}).get("image_dir", IMAGE_DIR)
    dataset = CocoInstances(image_dir, coco_path, cfg["seed"], skip_corrupt=cfg["data"]["skip_corrupt"])
    if not len(dataset):
        raise DatasetError(f"{coco_path}: none of its {dataset.num_images} images has an annotation; "
                           "nothing to train Mask R-CNN on")
    eval_stems = data.split(m["eval_list"])
    overlap = sorted(set(dataset.stems) & set(eval_stems))
    if overlap:
        run_.log.warning("%d of the %s images Mask R-CNN is evaluated on are in its training set (e.g. %s): "
                         "the score is not a held-out one", len(overlap), m["eval_list"], overlap[0])

    model = build_model(cfg, data.num_classes)
    if m["weights"] == "none":
        run_.log.info("maskrcnn.weights=none: trainable BatchNorm and all 5 backbone stages trained "
                      "(torchvision's rule without pretrained weights; trainable_backbone_layers is ignored)")
    params = [p for p in model.parameters() if p.requires_grad]
    spec = TrainSpec(batch_size=m["batch_size"], max_steps=m["iterations"], checkpoint_every=m["checkpoint_every"],
                     num_workers=cfg["data"]["num_workers"], collate=collate_detection)
    run_.log.info("training Mask R-CNN (ResNet-50 FPN, weights %s) on %d of the %d images of %s, %d steps of %d",
                  m["weights"], len(dataset), dataset.num_images, coco_path.name, m["iterations"], m["batch_size"])
    device = run_.device
    final = fit(run_, model, [{"params": params, "lr": m["lr"]}], dataset, spec,
                lambda model_, batch: training_loss(model_, batch, device),
                momentum=m["momentum"], weight_decay=m["weight_decay"],
                schedule=lambda total, _: lr_lambda(total, m["schedule"], m["warmup_iterations"], m["step_at"],
                                                     m["step_factor"]),
                out_dir=run_.path(MASKRCNN), resume=resume)

    pred_dir = run_.path(MASKRCNN, MASKRCNN_PRED)
    pred_dir.mkdir(parents=True, exist_ok=True)
    todo = pending(eval_stems, pred_dir, ".json", run_.log)
    if todo:
        infer = choose(m["infer_precision"], device, "maskrcnn.infer_precision")
        run_.log.info("predicting %d %s images (%s: %s)", len(todo), m["eval_list"], infer.name, infer.reason)
        predict(model.to(device), data, todo, pred_dir, device, infer, m["min_score"], m["mask_threshold"])
    distributed.barrier()  # every rank's predictions are in before they are scored
    if not distributed.is_main():
        return None
    if not (data.root / OBJECT_DIR).is_dir():
        run_.finish(f"trained; predictions of {len(eval_stems)} {m['eval_list']} images written; "
                    f"no instance ground truth ({data.root / OBJECT_DIR} absent), not scored", pred_dir)
        return None
    summary = score_instance_folder(pred_dir, data.root, eval_stems, data.names)
    run_.log.info(format_ap_table(summary, f"Mask R-CNN instances on {len(eval_stems)} {m['eval_list']} images"))
    result = {"list": m["eval_list"], "num_images": len(eval_stems), "weights": m["weights"],
              "iterations": m["iterations"], "model": str(final), "maskrcnn": summary}
    out = run_.path(METRICS, EVAL_MASKRCNN)
    io.write_json(out, result)
    run_.finish(f"Mask R-CNN {format_map_line(summary)} on {len(eval_stems)} {m['eval_list']} images", out)
    return result
