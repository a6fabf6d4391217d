"""Configuration: typed defaults, then one setting (a YAML file), then ``--set`` overrides.

``SCHEMA`` below is the configuration reference: every key that exists, with
its default, its allowed values and what it does, declared in one place.
``DEFAULTS``, the checks and docs/configuration.md (written by
``tools/config_reference.py``) are all derived from it.

A setting is a YAML file that states only what differs from the defaults;
the shipped ones live in ``irnet_moana/configs`` and are chosen by name
(``demo``, ``voc12``, ...). A setting or a ``--set key=value`` override may
only change existing keys, with a value of the key's type and within its
allowed values. Anything else is an error that names the key and where the
value came from, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import yaml


class ConfigError(ValueError):
    """A configuration file or override that cannot be used as given."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Check:
    """A condition on a key's value beyond its type."""

    rule: str  # completes "key 'x' must ..." in errors
    allowed: str  # follows the type name in the reference: "int > 0"
    ok: Callable[[Any], bool]


POSITIVE = Check("be > 0", "> 0", lambda v: v > 0)
NON_NEGATIVE = Check("be >= 0", ">= 0", lambda v: v >= 0)
UNIT_INTERVAL = Check("lie in [0, 1]", "in [0, 1]", lambda v: 0 <= v <= 1)
FRACTION = Check("lie in (0, 1]", "in (0, 1]", lambda v: 0 < v <= 1)
FOUR_STRIDES = Check("be four strides of 1 or 2", "of four strides, each 1 or 2",
                     lambda v: len(v) == 4 and all(type(s) is int and s in (1, 2) for s in v))
LOW_HIGH = Check("be [low, high] with 0 < low <= high", "[low, high] with 0 < low <= high",
                 lambda v: len(v) == 2 and all(map(_is_number, v)) and 0 < v[0] <= v[1])
SEEDS = Check("be distinct seeds >= 0", "of distinct seeds >= 0",
              lambda v: all(type(x) is int and x >= 0 for x in v) and len(set(v)) == len(v))
POSITIVE_SCALES = Check("be a non-empty list of positive scales", "of scales > 0, not empty",
                        lambda v: len(v) > 0 and all(_is_number(s) and s > 0 for s in v))


@dataclass(frozen=True)
class Key:
    """One setting: its default (which also fixes its type), what it does, and what it allows."""

    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    check: Check | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this key's type; an int is a valid float, a bool is no int."""
        if self.type is float:
            return _is_number(value)
        if self.type is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, self.type)


@dataclass(frozen=True)
class Section:
    """A group of keys, ``cam.*`` for example: the settings of one stage or model."""

    doc: str
    keys: dict[str, Key]


BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
# DeepLab v2, or an architecture of segmentation_models_pytorch (tests check this list against smp's)
SEGMENTATION_ARCHS = ("v2", "DPT", "DeepLabV3", "DeepLabV3Plus", "FPN", "Linknet", "MAnet", "PAN", "PSPNet",
                      "Segformer", "UPerNet", "Unet", "UnetPlusPlus")
AMP = ("auto", "none", "bf16", "fp16")
INFER_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# irnet_moana/models/moana.py implements these (config sits below the models and cannot import them)
MOANA_CALIBRATIONS = ("paper", "wsss_code")
MOANA_VIEW_CONVS = ("dense", "depthwise")

# The defaults are IRNet's PASCAL VOC 2012 recipe (docs/design.md, CAM classifier) with MoANA after
# layer4; settings files only state what differs.
SCHEMA: dict[str, Key | Section] = {
    "name": Key("voc12", "setting name, recorded with the run's configuration"),
    "seed": Key(0, "seeds every random number generator (data order, augmentation, initial weights, "
                   "the synthetic data sets)", check=NON_NEGATIVE),
    "device": Key("auto", "auto (each process's own GPU when CUDA is available, else the CPU), cpu, cuda or cuda:N"),
    "run_dir": Key("runs/voc12", "directory of every output of the run; --run-dir overrides it"),
    "data": Section("The PASCAL VOC style data set (images, class lists, ground truth) of the WSSS stages.", {
        "root": Key("data/VOCdevkit/VOC2012", "data set root: JPEGImages, SegmentationClass(Aug), image lists"),
        "train_list": Key("train_aug", "images the CAM network and IRNet train on and make_cams, make_ir_labels "
                                       "process"),
        "eval_list": Key("train", "images the seeds, pseudo masks and instances are scored on (IRNet reports "
                                  "VOC train), also the figures' images"),
        "val_list": Key("val", "VOC's validation list; no stage reads it (DeepLab uses deeplab.eval_list)"),
        "num_workers": Key(4, "DataLoader worker processes of the training stages; 0 loads in the main process",
                           check=NON_NEGATIVE),
        "skip_corrupt": Key(True, "training skips (and counts) unreadable images; evaluation always fails on them"),
    }),
    "cam": Section("Stages train_cam, make_cams and eval_cams: the multi-label classifier whose class "
                   "activation maps (CAMs) are the seeds, with MoANA after layer4.", {
        "backbone": Key("resnet50", "torchvision ResNet of the classifier", BACKBONES),
        "weights": Key("imagenet", "initial backbone weights: imagenet, none (random) or a file; "
                                   "{run_dir} in a path is this run's directory"),
        "strides": Key([2, 2, 2, 1], "strides of (conv1, layer2, layer3, layer4); IRNet's output stride 16",
                       check=FOUR_STRIDES),
        # Under torchrun, trainable BatchNorm (freeze_bn false, and MoANA's own BNs) normalises each
        # rank's part of the batch alone, so DDP then differs from one process on the whole batch.
        "freeze_bn": Key(True, "keep the backbone's BatchNorm statistics and affine parameters fixed "
                               "(IRNet's recipe; false for random weights)"),
        "freeze_stem": Key(True, "train nothing in conv1 .. layer1, as IRNet"),
        "moana": Key(True, "MoANA attention after layer4; false gives IRNet's plain CAM network"),
        "moana_calibration": Key("paper", "MoANA's output: paper X * (1 + M) or wsss_code X * (0.35 + 0.65 M), "
                                          "the authors' segmentation code", MOANA_CALIBRATIONS),
        "moana_view_conv": Key("dense", "MoANA's height and width convolutions: dense (C to C channels, the "
                                        "authors') or depthwise (one kernel per channel)", MOANA_VIEW_CONVS),
        "resize_long": Key([320, 640], "training resizes the long side to a random length in [low, high] px",
                           check=LOW_HIGH),
        "crop_size": Key(512, "side of the random square training crop, px", check=POSITIVE),
        "color_jitter": Key(False, "random brightness, contrast and saturation in training (the MoANA recipe)"),
        "batch_size": Key(16, "images per training step (per process under torchrun)", check=POSITIVE),
        "epochs": Key(5, "training epochs over data.train_list", check=NON_NEGATIVE),
        "max_steps": Key(0, "training steps; > 0 overrides epochs (the MoANA recipe counts iterations)",
                         check=NON_NEGATIVE),
        "lr": Key(0.1, "learning rate of the backbone and MoANA, decayed by poly (power 0.9) to 0",
                  check=POSITIVE),
        "classifier_lr_mult": Key(10.0, "the 1x1 classifier learns at lr times this (IRNet: 10)"),
        "momentum": Key(1e-4, "SGD momentum; 1e-4 reproduces IRNet's published numbers (see the voc12 "
                              "setting)", check=NON_NEGATIVE),
        "weight_decay": Key(1e-4, "SGD weight decay", check=NON_NEGATIVE),
        "amp": Key("auto", "training precision: auto (bf16 where the CPU or GPU computes it natively, else "
                           "fp32 on a CPU and fp16 on a GPU), none (fp32), bf16 or fp16; see irnet_moana/precision.py",
                   AMP),
        "scales": Key([1.0, 0.5, 1.5, 2.0], "image scales whose flipped and unflipped CAMs make_cams sums",
                      check=POSITIVE_SCALES),
        "infer_list": Key("", "images make_cams processes; empty means data.train_list"),
        "infer_precision": Key("auto", "make_cams precision, chosen as amp; fp32 is full precision",
                               INFER_PRECISIONS),
        "bg_threshold": Key(0.15, "constant background score against the normalised CAMs: the seeds' "
                                  "background where no class beats it", check=UNIT_INTERVAL),
        "sweep": Key([], "extra background thresholds eval_cams scores, to choose bg_threshold"),
    }),
    "ir_label": Section("Stage make_ir_labels: confident foreground and background from the CAMs, refined "
                        "by a dense CRF, the inter-pixel relation labels IRNet trains on.", {
        "fg_threshold": Key(0.30, "background score when finding confident foreground (IRNet's "
                                  "conf_fg_thres)", check=UNIT_INTERVAL),
        "bg_threshold": Key(0.05, "background score when finding confident background (IRNet's "
                                  "conf_bg_thres); pixels between the two are ignored", check=UNIT_INTERVAL),
        "crf_gt_prob": Key(0.7, "the CRF's confidence in the thresholded labels", check=UNIT_INTERVAL),
        "crf_iterations": Key(10, "mean-field iterations of the CRF", check=NON_NEGATIVE),
        "workers": Key(0, "CRF processes; 0 means all CPU cores", check=NON_NEGATIVE),
    }),
    "irn": Section("Stage train_irn: IRNet, which learns a class boundary map and an instance displacement "
                   "field from the relation labels.", {
        "backbone": Key("resnet50", "torchvision ResNet of IRNet", BACKBONES),
        "weights": Key("imagenet", "initial backbone weights: imagenet, none (random) or a file; "
                                   "{run_dir} in a path is this run's directory"),
        "strides": Key([2, 2, 2, 1], "strides of (conv1, layer2, layer3, layer4), as cam.strides",
                       check=FOUR_STRIDES),
        "resize_scale": Key([0.5, 1.5], "training rescales each image by a random factor in [low, high]",
                            check=LOW_HIGH),
        "crop_size": Key(512, "side of the random square training crop, px", check=POSITIVE),
        "radius": Key(10, "pixel pairs within this distance (in boundary-map pixels) are relation labels",
                      check=POSITIVE),
        "batch_size": Key(32, "images per training step (per process under torchrun)", check=POSITIVE),
        "epochs": Key(3, "training epochs over data.train_list", check=NON_NEGATIVE),
        "lr": Key(0.1, "learning rate of the boundary branch (the backbone stays fixed), decayed by poly "
                       "(power 0.9) to 0", check=POSITIVE),
        "displacement_lr_mult": Key(10.0, "the displacement branch learns at lr times this"),
        "momentum": Key(1e-4, "SGD momentum; 1e-4 is IRNet's published setting, as cam.momentum",
                        check=NON_NEGATIVE),
        "weight_decay": Key(1e-4, "SGD weight decay", check=NON_NEGATIVE),
        "amp": Key("auto", "training precision, as cam.amp", AMP),
    }),
    "pseudo": Section("Stage make_pseudo_masks: the CAMs propagated by a random walk on IRNet's boundary "
                      "map, the pseudo masks DeepLab trains on.", {
        "radius": Key(5, "the walk's transitions reach pixels within this distance (boundary-map pixels)",
                      check=POSITIVE),
        "beta": Key(10, "affinities are raised to this power: larger keeps the walk inside boundaries",
                    check=POSITIVE),
        "exp_times": Key(8, "the transition matrix is squared this many times: 2**exp_times steps",
                         check=NON_NEGATIVE),
        "bg_threshold": Key(0.25, "background score of the walked maps: pixels where no class beats it",
                            check=UNIT_INTERVAL),
        "list": Key("train_aug", "images to make pseudo masks for"),
        "infer_precision": Key("auto", "precision of IRNet's boundary map, chosen as cam.amp; bf16 gave the "
                                       "same demo pseudo-mask mIoU as fp32", INFER_PRECISIONS),
    }),
    "instance": Section("Stages make_instance_masks and eval_instances: IRNet's instance masks from the "
                        "displacement field's centroids and the walk (pseudo.radius, beta, exp_times).", {
        "list": Key("train_aug", "images to make instance masks for"),
        "centroid_steps": Key(300, "moves of each pixel along the displacement field to its centroid",
                              check=NON_NEGATIVE),
        "weak_displacement": Key(2.5, "pixels whose displacement is shorter than this are centroid regions",
                                 check=POSITIVE),
        "bg_threshold": Key(0.25, "walked score of \"no instance\"", check=UNIT_INTERVAL),
        "min_fragment": Key(0.01, "connected components under this fraction of the image score 0",
                            check=UNIT_INTERVAL),
        "infer_precision": Key("auto", "precision of IRNet's boundary map and displacement field, chosen as "
                                       "cam.amp", INFER_PRECISIONS),
    }),
    "deeplab": Section("Stages train_deeplab and eval_deeplab: the final segmentation network trained on the "
                       "pseudo masks, DeepLab v2 (ResNet, ASPP) as in IRNet's evaluation or an smp architecture.", {
        "arch": Key("v2", "v2 (DeepLab v2, ResNet of deeplab.depth) or a segmentation_models_pytorch "
                          "architecture on the encoder deeplab.encoder", SEGMENTATION_ARCHS),
        "depth": Key(101, "ResNet depth of DeepLab v2 (DeepLab's paper: 101; IRNet's 63.5: 50)", check=POSITIVE),
        "encoder": Key("resnet101", "smp encoder name of the smp architectures (e.g. resnet50, resnet101)"),
        "weights": Key("imagenet", "initial backbone (encoder) weights: imagenet, none (random) or a file; "
                                   "{run_dir} in a path is this run's directory"),
        "freeze_bn": Key(True, "fixed BatchNorm, DeepLab's recipe; false only for random initial weights "
                               "(the demo)"),
        "labels": Key("", "folder of training label PNGs ({run_dir} allowed); empty means this run's "
                          "pseudo masks"),
        "train_list": Key("train_aug", "images DeepLab trains on"),
        "eval_list": Key("val", "images DeepLab is scored on"),
        "scales": Key([1.0, 0.75, 0.5], "input scales whose outputs DeepLab fuses by maximum, in training "
                                        "and prediction", check=POSITIVE_SCALES),
        "scale_range": Key([0.5, 1.5], "training rescales each image by a random factor in [low, high]",
                           check=LOW_HIGH),
        "crop_size": Key(321, "side of the random square training crop, px", check=POSITIVE),
        "batch_size": Key(10, "images per training step (per process under torchrun)", check=POSITIVE),
        "iterations": Key(20000, "training steps", check=POSITIVE),
        "checkpoint_every": Key(1000, "steps between checkpoints", check=POSITIVE),
        "lr": Key(2.5e-4, "backbone learning rate (the ASPP head learns at 10x, its biases at 20x), decayed "
                          "by poly", check=POSITIVE),
        "momentum": Key(0.9, "SGD momentum", check=NON_NEGATIVE),
        "weight_decay": Key(5e-4, "SGD weight decay", check=NON_NEGATIVE),
        "poly_power": Key(0.9, "power of the poly schedule: lr * (1 - step / iterations) ** poly_power"),
        "amp": Key("auto", "training precision, as cam.amp", AMP),
        "eval_scales": Key([0.5, 0.75, 1.0, 1.25, 1.5], "scales of the multi-scale (and flipped) prediction",
                           check=POSITIVE_SCALES),
        "crf": Key(True, "also score the multi-scale prediction refined by a dense CRF"),
        "crf_workers": Key(0, "CRF processes; 0 means all CPU cores", check=NON_NEGATIVE),
    }),
    "wsol": Section("Stages train_wsol and eval_wsol: weakly supervised object localisation on CUB-200-2011 "
                    "or ILSVRC (a classifier with MoANA whose CAM gives a box; docs/design.md, WSOL).", {
        "dataset": Key("cub", "the data set's layout and metadata", ("cub", "ilsvrc")),
        "metadata_root": Key("data/wsol/metadata/CUB", "wsolevaluation-style metadata: "
                                                       "<split>/image_ids.txt, class_labels.txt, localization.txt"),
        "image_root": Key("data/wsol/CUB_200_2011/images", "folder the metadata's image ids are relative to"),
        "num_classes": Key(200, "classes of the data set", check=POSITIVE),
        "backbone": Key("resnet50", "torchvision ResNet of the localiser", BACKBONES),
        "weights": Key("imagenet", "initial backbone weights: imagenet, none (random) or a file; "
                                   "{run_dir} in a path is this run's directory"),
        "moana": Key(True, "MoANA attention after layer4; false gives the plain CAM baseline"),
        "moana_calibration": Key("paper", "MoANA's output, as cam.moana_calibration", MOANA_CALIBRATIONS),
        "moana_view_conv": Key("dense", "MoANA's height and width convolutions, as cam.moana_view_conv",
                               MOANA_VIEW_CONVS),
        "strides": Key([2, 2, 1, 1], "strides of (conv1, layer2, layer3, layer4): layer3 and layer4 at stride 1",
                       check=FOUR_STRIDES),
        "resize_size": Key(256, "training: square resize, then a random crop_size crop and horizontal flip",
                           check=POSITIVE),
        "crop_size": Key(224, "side of the random square training crop, px", check=POSITIVE),
        "test_size": Key(224, "evaluation: square resize of the whole image, px", check=POSITIVE),
        "batch_size": Key(32, "images per training step (per process under torchrun)", check=POSITIVE),
        "epochs": Key(45, "training epochs", check=NON_NEGATIVE),
        "lr": Key(0.01, "backbone learning rate; MoANA and the classifier learn at lr * new_lr_mult",
                  check=POSITIVE),
        "new_lr_mult": Key(1.0, "learning-rate multiplier of the new layers (MoANA, classifier)", check=POSITIVE),
        "lr_decay_every": Key(10, "epochs between learning-rate decays", check=POSITIVE),
        "lr_decay": Key(0.1, "learning-rate multiplier at each decay", check=POSITIVE),
        "momentum": Key(0.9, "SGD momentum", check=NON_NEGATIVE),
        "weight_decay": Key(5e-4, "SGD weight decay", check=NON_NEGATIVE),
        "amp": Key("auto", "training precision, as cam.amp", AMP),
        "checkpoint_every": Key(0, "steps between checkpoints; 0 means at the end of every epoch",
                                check=NON_NEGATIVE),
        "eval_batch_size": Key(32, "images per step when computing score maps", check=POSITIVE),
        "infer_precision": Key("auto", "precision of the score maps, chosen as amp", INFER_PRECISIONS),
        "threshold_split": Key("val", "split the localisation threshold is chosen on when "
                                      "<metadata_root>/<threshold_split> exists, else eval_split itself"),
        "eval_split": Key("test", "split that is scored"),
        "num_examples": Key(8, "test images in the example figure; 0 draws none", check=NON_NEGATIVE),
        "seeds": Key([], "run_all.sh trains and scores each network once per seed listed, in <run_dir>/seed<N>, and "
                         "reports the mean and standard deviation; empty: one run with the top-level seed",
                     check=SEEDS),
    }),
    "maskrcnn": Section("Optional stage train_maskrcnn: torchvision's Mask R-CNN (ResNet-50 FPN) trained on "
                        "the instance pseudo labels (<run_dir>/instance_masks_coco.json), then mAP^r of its "
                        "predictions on eval_list.", {
        "enabled": Key(False, "part of run_all.sh SETTING; pipelines/train_maskrcnn.py runs it either way"),
        "weights": Key("imagenet", "ResNet-50 weights: imagenet, none (random, trainable BatchNorm) or a file; "
                                   "{run_dir} allowed"),
        "trainable_backbone_layers": Key(3, "ResNet stages trained from the top, 0-5 (torchvision's 3); "
                                            "weights none trains all", check=NON_NEGATIVE),
        "min_size": Key(800, "each image's shorter side is resized to this (torchvision's default) ...",
                        check=POSITIVE),
        "max_size": Key(1333, "... unless that makes its longer side exceed this", check=POSITIVE),
        "batch_size": Key(2, "images per step", check=POSITIVE),
        "iterations": Key(137566, "steps: torchvision's 26 epochs, here of VOC train_aug (10582 images) at "
                                  "batch 2", check=POSITIVE),
        "checkpoint_every": Key(1000, "steps between checkpoints (there is also one at the end of every epoch)",
                                check=POSITIVE),
        "lr": Key(0.0025, "0.02 x batch_size / 16, torchvision's reference recipe: scale it with batch_size",
                  check=POSITIVE),
        "momentum": Key(0.9, "SGD momentum", check=NON_NEGATIVE),
        "weight_decay": Key(1e-4, "on every trained parameter, as torchvision's reference", check=NON_NEGATIVE),
        "schedule": Key("step", "step (x step_factor at each step_at) or poly (power 0.9)", ("step", "poly")),
        "step_at": Key([0.615, 0.846], "increasing fractions of iterations, in (0, 1): torchvision's reference "
                                       "steps at epochs 16 and 22 of 26"),
        "step_factor": Key(0.1, "learning-rate multiplier at each step_at", check=FRACTION),
        "warmup_iterations": Key(1000, "linear warm-up from lr / 1000 over these steps (torchvision's "
                                       "reference); 0 means none", check=NON_NEGATIVE),
        "amp": Key("auto", "training precision, as cam.amp", AMP),
        "infer_precision": Key("auto", "prediction precision, as cam.infer_precision", INFER_PRECISIONS),
        "eval_list": Key("val", "images predicted and scored (mAP^r) after training"),
        "min_score": Key(0.05, "detections scoring below this are dropped (torchvision's box_score_thresh)",
                         check=UNIT_INTERVAL),
        "mask_threshold": Key(0.5, "a pixel belongs to a detection where its mask probability exceeds this",
                              check=UNIT_INTERVAL),
    }),
}


def _keys(schema: Mapping[str, Key | Section] = SCHEMA, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """Every key of ``schema`` with its dotted name, in declaration order."""
    for name, entry in schema.items():
        if isinstance(entry, Section):
            yield from _keys(entry.keys, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", entry


def _defaults(schema: Mapping[str, Key | Section]) -> dict[str, Any]:
    # deep copies, so that a caller changing DEFAULTS' lists cannot change the schema
    return {name: _defaults(entry.keys) if isinstance(entry, Section) else copy.deepcopy(entry.default)
            for name, entry in schema.items()}


DEFAULTS: dict[str, Any] = _defaults(SCHEMA)
_KEYS: dict[str, Key] = dict(_keys())  # by dotted name: "cam.lr"

SETTINGS_DIR = Path(__file__).parent / "configs"


def setting_names() -> list[str]:
    """The shipped settings: names of the YAML files in ``SETTINGS_DIR``, sorted."""
    return sorted(path.stem for path in SETTINGS_DIR.glob("*.yaml"))


def setting_path(name: str) -> Path:
    """The file of the shipped setting ``name``; ConfigError listing the settings if there is none."""
    if name not in setting_names():
        raise ConfigError(f"unknown setting '{name}'; settings: {', '.join(setting_names())}")
    return SETTINGS_DIR / f"{name}.yaml"


def _is_setting_name(source: str | Path) -> bool:
    """A bare word such as ``demo`` names a setting; a path or a .yaml/.yml name is a file."""
    return (isinstance(source, str) and "/" not in source and os.sep not in source
            and not source.endswith((".yaml", ".yml")))


def _exponent_float(text: str) -> float | str:
    """``1e-4`` as a float: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _check(key: Key, dotted: str, value: Any, source: str, like: Any) -> None:
    """``like``: a valid value to show in the type error, the one the value would replace."""
    if not key.accepts(value):
        raise ConfigError(f"{source}: key '{dotted}' must be {key.type.__name__} (like {like!r}), "
                          f"got {value!r}")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{source}: key '{dotted}' must be one of {key.choices}, got {value!r}")
    if key.check is not None and not key.check.ok(value):
        raise ConfigError(f"{source}: key '{dotted}' must {key.check.rule}, got {value!r}")


def _merge(cfg: dict, update: Any, source: str, schema: Mapping[str, Key | Section] = SCHEMA,
           prefix: str = "") -> None:
    """Set the keys of ``update`` in ``cfg``, each checked as it is set so that errors name ``source``."""
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {update!r}")
    for name, value in update.items():
        dotted = f"{prefix}{name}"
        entry = schema.get(name)
        if entry is None:
            raise ConfigError(f"{source}: unknown key '{dotted}' (known keys here: {', '.join(sorted(schema))})")
        if isinstance(entry, Section):
            _merge(cfg[name], value, source, entry.keys, dotted + ".")
            continue
        if entry.type is float and isinstance(value, str):
            value = _exponent_float(value)
        _check(entry, dotted, value, source, like=cfg[name])
        cfg[name] = float(value) if entry.type is float else value


def validate(cfg: dict, source: str = "config") -> None:
    """Check every key of a whole configuration against the schema (type and allowed values).

    ``load_config`` checks each value as it merges it; this is for a
    configuration built or changed some other way.
    """
    for dotted, key in _KEYS.items():
        node: Any = cfg
        for part in dotted.split("."):
            node = node[part]
        _check(key, dotted, node, source, like=key.default)


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ('a.b', value parsed as YAML, so 0.1, true, [1, 2] work).

    A key of type str takes the text as written, so paths such as
    ``{run_dir}/cam/backbone.pth`` (a YAML mapping) or ``2024`` need no
    quoting; quoted text is still unquoted as YAML does.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. cam.lr=0.05)")
    dotted, raw = text.split("=", 1)
    dotted = dotted.strip()
    key = _KEYS.get(dotted)
    if key is not None and key.type is str and not raw.startswith(("'", '"')):
        return dotted, raw
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from exc
    return dotted, value


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


def load_config(source: str | Path | None, overrides: Iterable[str] = ()) -> dict:
    """Defaults <- a setting <- ``key=value`` overrides, every value checked.

    ``source`` is a setting name (``demo``: no path separator, no .yaml/.yml
    suffix), a YAML file, or None for the defaults alone.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if source is not None:
        path = setting_path(source) if _is_setting_name(source) else Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; the settings ({', '.join(setting_names())}) "
                              f"live in {SETTINGS_DIR} and are given by name")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        _merge(cfg, loaded, str(path))
    for text in overrides:
        key, value = parse_override(text)
        _merge(cfg, _nest(key, value), f"override '{text}'")
    warn_about(cfg)
    return cfg


def dump_config(cfg: dict) -> str:
    """YAML of a configuration in declaration order, as written to each stage's log folder."""
    return yaml.safe_dump(cfg, sort_keys=False)


def _markdown_value(value: Any) -> str:
    """A default as it is written in a setting file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_markdown_value(item) for item in value) + "]"
    return str(value) if value != "" else '""'


def _cell(text: str) -> str:
    # a table cell is inline markdown: | would end the cell, <word> read as an HTML tag, ** as emphasis
    return re.sub(r"([\\|*]|<(?=\w))", r"\\\1", text)


def _allowed(key: Key) -> str:
    if key.choices is not None:
        return ", ".join(f"`{choice}`" for choice in key.choices)
    return f"{key.type.__name__} {key.check.allowed}" if key.check is not None else key.type.__name__


def _table(keys: Iterable[tuple[str, Key]]) -> list[str]:
    lines = ["| Key | Default | Allowed | Description |", "| --- | --- | --- | --- |"]
    lines += [f"| `{dotted}` | `{_markdown_value(key.default)}` | {_cell(_allowed(key))} | {_cell(key.doc)} |"
              for dotted, key in keys]
    return lines


def reference_markdown() -> str:
    """docs/configuration.md: per section a table of every key's default, allowed values and meaning."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the schema in irnet_moana/config.py by `python tools/config_reference.py`; "
        "edit the schema, not this file. -->",
        "",
        "A run reads the defaults below (IRNet's PASCAL VOC 2012 recipe), then one setting, then `--set` "
        "overrides. A setting is a YAML file that states only what differs: a name picks a shipped one from "
        "`irnet_moana/configs` (`python pipelines/train_wsol.py cub`), `--config FILE` any other.",
        "`--set key=value` (repeatable) changes one key on top; the value is read as YAML (`0.05`, `true`, "
        "`[1.0, 0.5]`), except for `str` keys, which take it as written "
        "(`--set irn.weights={run_dir}/cam/backbone.pth`). Unknown keys, wrong types and values outside "
        "*Allowed* are errors that name the key.",
        "",
        "## Top level",
        "",
        *_table((name, entry) for name, entry in SCHEMA.items() if isinstance(entry, Key)),
    ]
    for name, entry in SCHEMA.items():
        if isinstance(entry, Section):
            lines += ["", f"## {name}", "", _cell(entry.doc), "", *_table(_keys(entry.keys, f"{name}."))]
    return "\n".join(lines) + "\n"
