"""Configuration: one YAML file per setting on top of typed defaults, plus overrides.

Every key that exists is listed in ``DEFAULTS`` below; a YAML file or a
``--set key=value`` override may only change existing keys, with a value of
the same type. Unknown keys, wrong types and impossible values are errors
that name the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, Iterable

import yaml

# The defaults are IRNet's VOC 2012 recipe (see DESIGN.md section 3); settings
# files only state what differs.
DEFAULTS: dict[str, Any] = {
    "name": "voc12",
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "run_dir": "runs/voc12",
    "data": {
        "root": "data/VOCdevkit/VOC2012",
        "train_list": "train_aug",
        "eval_list": "train",
        "val_list": "val",
        "num_workers": 4,
        "skip_corrupt": True,  # training skips (and counts) unreadable images; evaluation always fails
    },
    "cam": {
        "backbone": "resnet50",
        "weights": "imagenet",  # imagenet | none | a file; "{run_dir}" in a path is this run's directory
        "strides": [2, 2, 2, 1],
        # Under torchrun, trainable BatchNorm (freeze_bn false, and MoANA's own BNs) normalises each
        # rank's part of the batch alone, so DDP then differs from one process on the whole batch.
        "freeze_bn": True,
        "freeze_stem": True,
        "moana": True,
        "moana_calibration": "paper",
        "moana_view_conv": "dense",
        "resize_long": [320, 640],
        "crop_size": 512,
        "color_jitter": False,
        "batch_size": 16,
        "epochs": 5,
        "max_steps": 0,  # > 0 overrides epochs (the MoANA recipe counts iterations)
        "lr": 0.1,
        "classifier_lr_mult": 10.0,
        "momentum": 1e-4,  # IRNet's published numbers; see pipelines/configs/voc12.yaml
        "weight_decay": 1e-4,
        # auto (bf16 where the CPU or GPU computes it natively, else fp32 on a CPU, fp16 on a GPU)
        # | none | bf16 | fp16; see irnet_moana/precision.py
        "amp": "auto",
        "scales": [1.0, 0.5, 1.5, 2.0],
        "infer_list": "",  # images make_cams processes; empty = data.train_list
        "infer_precision": "auto",  # auto | fp32 | bf16 | fp16, chosen as amp
        "bg_threshold": 0.15,
        "sweep": [],  # background thresholds to sweep in eval_cams
    },
    "ir_label": {
        "fg_threshold": 0.30,
        "bg_threshold": 0.05,
        "crf_gt_prob": 0.7,
        "crf_iterations": 10,
        "workers": 0,  # 0 = all CPU cores
    },
    "irn": {
        "backbone": "resnet50",
        "weights": "imagenet",
        "strides": [2, 2, 2, 1],
        "resize_scale": [0.5, 1.5],
        "crop_size": 512,
        "radius": 10,
        "batch_size": 32,
        "epochs": 3,
        "lr": 0.1,
        "displacement_lr_mult": 10.0,
        "momentum": 1e-4,
        "weight_decay": 1e-4,
        "amp": "auto",
    },
    "pseudo": {
        "radius": 5,
        "beta": 10,
        "exp_times": 8,
        "bg_threshold": 0.25,
        "list": "train_aug",
        "infer_precision": "auto",  # for IRNet's boundary map; bf16 gave the same demo pseudo-mask mIoU as fp32
    },
    "instance": {
        "list": "train_aug",  # images to make instance masks for (the walk uses pseudo.radius, beta, exp_times)
        "centroid_steps": 300,  # moves of each pixel along the displacement field
        "weak_displacement": 2.5,  # |D| below this is a centroid region
        "bg_threshold": 0.25,  # walked score of "no instance"
        "min_fragment": 0.01,  # components under this fraction of the image score 0
        "infer_precision": "auto",  # for IRNet's boundary map and displacement field
    },
    "deeplab": {
        "depth": 101,
        "weights": "imagenet",
        "freeze_bn": True,  # DeepLab's recipe; false only for random initial weights (the demo)
        "labels": "",  # empty = this run's pseudo masks
        "train_list": "train_aug",
        "eval_list": "val",
        "scales": [1.0, 0.75, 0.5],
        "scale_range": [0.5, 1.5],
        "crop_size": 321,
        "batch_size": 10,
        "iterations": 20000,
        "checkpoint_every": 1000,
        "lr": 2.5e-4,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "poly_power": 0.9,
        "amp": "auto",
        "eval_scales": [0.5, 0.75, 1.0, 1.25, 1.5],
        "crf": True,
        "crf_workers": 0,  # CRF processes; 0 = all CPU cores
    },
    "wsol": {
        "dataset": "cub",
        "metadata_root": "data/wsol/metadata/CUB",
        "image_root": "data/wsol/CUB_200_2011/images",
        "num_classes": 200,
        "backbone": "resnet50",
        "weights": "imagenet",
        "moana": True,
        "moana_calibration": "paper",
        "moana_view_conv": "dense",
        "strides": [2, 2, 1, 1],  # (conv1, layer2, layer3, layer4): layer3 and layer4 at stride 1
        "resize_size": 256,  # training: square resize, then a random crop_size crop and h-flip
        "crop_size": 224,
        "test_size": 224,  # evaluation: square resize of the whole image
        "batch_size": 32,
        "epochs": 45,
        "lr": 0.01,  # backbone; MoANA and the classifier get lr * new_lr_mult
        "new_lr_mult": 1.0,
        "lr_decay_every": 10,  # epochs
        "lr_decay": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "amp": "auto",
        "checkpoint_every": 0,  # steps; 0 = at the end of every epoch
        "eval_batch_size": 32,
        "infer_precision": "auto",  # for the score maps
        "threshold_split": "val",  # chosen here when <metadata_root>/<threshold_split> exists, else on eval_split
        "eval_split": "test",
        "num_examples": 8,  # test images in the figure
    },
    # Optional stage train_maskrcnn: torchvision's Mask R-CNN (ResNet-50 FPN) on the instance pseudo labels
    # (<run_dir>/instance_masks_coco.json), then mAP^r of its predictions on eval_list.
    "maskrcnn": {
        "enabled": False,  # part of `run_all.sh <setting>`; pipelines/train_maskrcnn.py runs it either way
        "weights": "imagenet",  # ResNet-50: imagenet | none (random, trainable BatchNorm) | a file; "{run_dir}" allowed
        "trainable_backbone_layers": 3,  # ResNet stages trained from the top, 0-5 (torchvision's 3); weights none: all
        "min_size": 800,  # Mask R-CNN resizes each image's shorter side to this (torchvision's default) ...
        "max_size": 1333,  # ... unless that makes its longer side exceed this
        "batch_size": 2,  # images per step
        "iterations": 137566,  # steps: torchvision's 26 epochs, here of VOC train_aug (10582 images) at batch 2
        "checkpoint_every": 1000,  # steps between checkpoints (there is also one at the end of every epoch)
        "lr": 0.0025,  # 0.02 x batch_size / 16, torchvision's reference recipe: scale it with batch_size
        "momentum": 0.9,  # SGD momentum
        "weight_decay": 1e-4,  # on every trained parameter, as torchvision's reference
        "schedule": "step",  # step (x step_factor at each step_at) | poly (power 0.9)
        "step_at": [0.615, 0.846],  # fractions of iterations: torchvision's reference steps at epochs 16 and 22 of 26
        "step_factor": 0.1,  # LR multiplier at each step_at
        "warmup_iterations": 1000,  # linear warm-up from lr / 1000 over these steps (torchvision's reference); 0 = none
        "amp": "auto",  # training precision, as cam.amp
        "infer_precision": "auto",  # prediction precision, as cam.infer_precision
        "eval_list": "val",  # images predicted and scored (mAP^r) after training
        "min_score": 0.05,  # detections scoring below this are not kept (torchvision's box_score_thresh)
        "mask_threshold": 0.5,  # a pixel belongs to a detection where its mask probability exceeds this
    },
}

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
INFER_CHOICES = ("auto", "fp32", "bf16", "fp16")
CHOICES: dict[str, tuple[str, ...]] = {
    **{f"{section}.amp": AMP_CHOICES for section in ("cam", "irn", "deeplab", "wsol", "maskrcnn")},
    **{f"{section}.infer_precision": INFER_CHOICES for section in ("cam", "pseudo", "instance", "wsol", "maskrcnn")},
    "cam.moana_calibration": ("paper", "wsss_code"),
    "wsol.moana_calibration": ("paper", "wsss_code"),
    "cam.moana_view_conv": ("dense", "depthwise"),
    "wsol.moana_view_conv": ("dense", "depthwise"),
    "cam.backbone": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "irn.backbone": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "wsol.backbone": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "wsol.dataset": ("cub", "ilsvrc"),
    "maskrcnn.schedule": ("step", "poly"),
}
POSITIVE = {
    "cam.crop_size", "cam.batch_size", "cam.lr", "irn.crop_size", "irn.batch_size", "irn.lr", "irn.radius",
    "pseudo.radius", "pseudo.beta", "deeplab.crop_size", "deeplab.batch_size", "deeplab.iterations", "deeplab.lr",
    "deeplab.checkpoint_every", "deeplab.depth", "wsol.crop_size", "wsol.resize_size", "wsol.batch_size", "wsol.lr",
    "wsol.num_classes", "wsol.lr_decay_every", "wsol.test_size", "wsol.eval_batch_size", "wsol.new_lr_mult",
    "wsol.lr_decay", "instance.weak_displacement",
    "maskrcnn.min_size", "maskrcnn.max_size", "maskrcnn.batch_size", "maskrcnn.iterations", "maskrcnn.lr",
    "maskrcnn.checkpoint_every", "maskrcnn.step_factor",
}
NON_NEGATIVE = {
    "seed", "data.num_workers", "cam.epochs", "cam.max_steps", "cam.momentum", "cam.weight_decay", "irn.epochs",
    "irn.momentum", "irn.weight_decay", "pseudo.exp_times", "deeplab.momentum", "deeplab.weight_decay",
    "wsol.epochs", "wsol.momentum", "wsol.weight_decay", "wsol.checkpoint_every", "wsol.num_examples", "ir_label.workers", "ir_label.crf_iterations",
    "deeplab.crf_workers", "instance.centroid_steps",
    "maskrcnn.trainable_backbone_layers", "maskrcnn.momentum", "maskrcnn.weight_decay", "maskrcnn.warmup_iterations",
}
UNIT_INTERVAL = {
    "cam.bg_threshold", "ir_label.fg_threshold", "ir_label.bg_threshold", "ir_label.crf_gt_prob",
    "pseudo.bg_threshold", "instance.bg_threshold", "instance.min_fragment",
    "maskrcnn.min_score", "maskrcnn.mask_threshold", "maskrcnn.step_factor",
}


class ConfigError(ValueError):
    """A configuration file or override that cannot be used as given."""


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _exponent_float(text: str) -> float | str:
    """``1e-4`` as a float: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _merge(base: dict, update: dict, source: str, prefix: str = "") -> None:
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {update!r}")
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"{source}: unknown key '{dotted}' (known keys here: {known})")
        if isinstance(base[key], dict):
            _merge(base[key], value, source, dotted + ".")
            continue
        if isinstance(base[key], float) and isinstance(value, str):
            value = _exponent_float(value)
        if not _type_ok(base[key], value):
            raise ConfigError(
                f"{source}: key '{dotted}' must be {type(base[key]).__name__} (like {base[key]!r}), got {value!r}")
        base[key] = float(value) if isinstance(base[key], float) else value


def _flatten(cfg: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in cfg.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(cfg: dict, source: str = "config") -> None:
    """Check values that have the right type but cannot work."""
    for key, value in _flatten(cfg):
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{source}: key '{key}' must be one of {CHOICES[key]}, got {value!r}")
        if key in POSITIVE and not value > 0:
            raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}")
        if key in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{source}: key '{key}' must be >= 0, got {value!r}")
        if key in UNIT_INTERVAL and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{source}: key '{key}' must lie in [0, 1], got {value!r}")
    for key in ("cam.strides", "irn.strides", "wsol.strides"):
        section, name = key.split(".")
        strides = cfg[section][name]
        if len(strides) != 4 or any(s not in (1, 2) for s in strides):
            raise ConfigError(f"{source}: key '{key}' must be four strides of 1 or 2, got {strides!r}")
    for key in ("cam.resize_long", "irn.resize_scale", "deeplab.scale_range"):
        section, name = key.split(".")
        low_high = cfg[section][name]
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
            raise ConfigError(f"{source}: key '{key}' must be [low, high] with 0 < low <= high, got {low_high!r}")
    for key in ("cam.scales", "deeplab.scales", "deeplab.eval_scales"):
        section, name = key.split(".")
        if not cfg[section][name] or any(not s > 0 for s in cfg[section][name]):
            raise ConfigError(f"{source}: key '{key}' must be a non-empty list of positive scales")


def _default(key: str) -> Any:
    node: Any = DEFAULTS
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ('a.b', value parsed as YAML, so 0.1, true, [1, 2] work).

    A key whose default is a string takes the text as written, so paths such
    as ``{run_dir}/cam/backbone.pth`` (a YAML mapping) or ``2024`` need no
    quoting; quoted text is still unquoted as YAML does.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. cam.lr=0.05)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if isinstance(_default(key), str) and not raw.startswith(("'", '"')):
        return key, raw
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from exc
    return key, value


def warn_about(cfg: dict) -> list[str]:
    """Settings that run but rarely do what was meant; each is also issued as a warning."""
    messages = []
    for section in ("cam", "deeplab"):
        if cfg[section]["weights"] == "none" and cfg[section]["freeze_bn"]:
            messages.append(
                f"{section}.weights=none with {section}.freeze_bn=true: the random network's BatchNorm keeps its "
                f"initial statistics (mean 0, variance 1), activations grow layer by layer and training can reach "
                f"a NaN loss; set {section}.freeze_bn=false")
    for message in messages:
        warnings.warn(message, stacklevel=3)
    return messages


def _nest(key: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides, validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (settings live in pipelines/configs/*.yaml)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        _merge(cfg, loaded, str(path))
    for text in overrides:
        key, value = parse_override(text)
        _merge(cfg, _nest(key, value), f"override '{text}'")
    validate(cfg, str(path) if path else "config")
    warn_about(cfg)
    return cfg


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
