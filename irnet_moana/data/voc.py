"""PASCAL VOC 2012 devkit layout: splits, image-level labels, file access.

A dataset root holds JPEGImages/, SegmentationClass/, Annotations/ and
ImageSets/Segmentation/{train,val}.txt, optionally SegmentationClassAug/
(SBD's masks as PNG) and SegmentationObject/ (instance ids). The synthetic demo uses the same layout, plus a
classes.txt naming its classes; VOC's own 20 names apply where it is absent.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import io
from ..io import IGNORE, DatasetError

LIST_DIR = Path("ImageSets") / "Segmentation"
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
OBJECT_DIR = "SegmentationObject"  # instance ids, for the instance scores only
LABEL_CACHE = "cls_labels.npz"


def class_names(root: str | Path) -> list[str]:
    """Foreground class names in label order (label k + 1 is class_names[k])."""
    names_file = Path(root) / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if not names:
            raise DatasetError(f"{names_file} is empty; list one foreground class name per line")
        return names
    return list(VOC_CLASSES)


def check_layout(root: str | Path) -> list[str]:
    """What is missing from a devkit root, as human-readable lines (empty when fine)."""
    root = Path(root)
    if not root.is_dir():
        return [f"dataset root {root} does not exist"]
    problems = []
    for sub in ("JPEGImages", "SegmentationClass"):
        if not (root / sub).is_dir():
            problems.append(f"{root / sub} (folder) is missing")
    for split in ("train", "val"):
        if not (root / LIST_DIR / f"{split}.txt").is_file():
            problems.append(f"{root / LIST_DIR / f'{split}.txt'} is missing")
    return problems


def read_list(path: str | Path) -> list[str]:
    """Image ids of a list file (first column; blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image list {path} does not exist; run `python pipelines/prepare_data.py` for this dataset")
    stems = [line.split()[0].strip() for line in path.read_text().splitlines() if line.strip()]
    stems = [Path(s).stem if "/" in s else s for s in stems]
    if not stems:
        raise DatasetError(f"image list {path} is empty")
    return stems


def list_path(root: str | Path, split: str) -> Path:
    """A split name (train, val, train_aug) or a path to a list file."""
    candidate = Path(split)
    if candidate.suffix == ".txt" and candidate.is_file():
        return candidate
    return Path(root) / LIST_DIR / f"{split}.txt"


def aug_mask_dir(root: str | Path) -> Path:
    return Path(root) / "SegmentationClassAug"


def build_train_aug(root: str | Path, sbd_lists: tuple[list[str], ...] = ()) -> list[str]:
    """(SBD train + SBD val + VOC train) minus VOC val, in sorted order.

    Without SBD lists, SBD's ids are taken from the SegmentationClassAug folder
    (which holds SBD's masks plus VOC's), so the split is built from the files on disk.
    """
    root = Path(root)
    voc_train = read_list(root / LIST_DIR / "train.txt")
    voc_val = set(read_list(root / LIST_DIR / "val.txt"))
    sbd: set[str] = set()
    for stems in sbd_lists:
        sbd.update(stems)
    if not sbd_lists and aug_mask_dir(root).is_dir():
        sbd.update(p.stem for p in aug_mask_dir(root).glob("*.png"))
    return sorted((sbd | set(voc_train)) - voc_val)


def labels_from_xml(path: str | Path, names: list[str]) -> np.ndarray:
    """Multi-hot labels from a VOC annotation: every named object counts, difficult ones too."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise DatasetError(f"{path}: malformed XML ({exc})") from exc
    labels = np.zeros(len(names), dtype=np.float32)
    index = {name: i for i, name in enumerate(names)}
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name in index:
            labels[index[name]] = 1.0
    return labels


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    values = np.unique(mask)
    labels = np.zeros(num_classes, dtype=np.float32)
    present = values[(values >= 1) & (values <= num_classes)]
    labels[present - 1] = 1.0
    return labels


@dataclass
class VOCData:
    """File access for one devkit root."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise DatasetError(
                f"dataset root {self.root} does not exist; for VOC 2012 run "
                f"`python pipelines/prepare_data.py voc12 --root {self.root} --download`, "
                "for the demo `python pipelines/prepare_data.py demo`")
        missing = [str(self.root / sub) for sub in ("JPEGImages", LIST_DIR) if not (self.root / sub).is_dir()]
        if missing:
            nested = [p for p in (self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012") if p.is_dir()]
            hint = f" (did you mean {nested[0]}?)" if nested else ""
            raise DatasetError(
                f"dataset root {self.root} does not have the VOC 2012 layout: {' and '.join(missing)} missing; "
                f"point data.root at the folder that holds JPEGImages/ and ImageSets/Segmentation/{hint}")
        self.names = class_names(self.root)

    @property
    def num_classes(self) -> int:
        """Foreground classes (background not counted)."""
        return len(self.names)

    def image_path(self, stem: str) -> Path:
        return self.root / "JPEGImages" / f"{stem}.jpg"

    def mask_path(self, stem: str) -> Path:
        """The official mask where there is one, else SBD's."""
        official = self.root / "SegmentationClass" / f"{stem}.png"
        return official if official.is_file() else aug_mask_dir(self.root) / f"{stem}.png"

    def split(self, split: str) -> list[str]:
        """Ids of a list, all of whose images exist: a stage stops here rather than hours into its work."""
        path = list_path(self.root, split)
        stems = read_list(path)
        absent = [s for s in stems if not self.image_path(s).is_file()]
        if absent:
            raise DatasetError(
                f"{path}: {len(absent)} listed image(s) absent from {self.root / 'JPEGImages'}: "
                f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}; "
                "restore them or remove them from the list")
        return stems

    def load_image(self, stem: str) -> np.ndarray:
        path = self.image_path(stem)
        if not path.is_file():
            raise DatasetError(f"image {path} is listed but absent; restore it or remove '{stem}' from the list")
        return io.load_image(path)

    def load_mask(self, stem: str, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A ground-truth mask, checked for values (classes and 255 only) and, if given, size."""
        path = self.mask_path(stem)
        if not path.is_file():
            raise DatasetError(f"mask {path} is absent for image '{stem}'")
        mask = io.load_label_png(path)
        check_mask(mask, self.num_classes, path, image_shape)
        return mask

    def image_labels(self, stems: list[str], cache: bool = True) -> dict[str, np.ndarray]:
        """Multi-hot labels per image from the XML (or the mask without XML), cached in the root."""
        cache_path = self.root / LABEL_CACHE
        known: dict[str, np.ndarray] = {}
        if cache and io.output_is_valid(cache_path):
            cached = io.load_npz(cache_path)
            known = {k: v for k, v in cached.items() if v.shape == (self.num_classes,)}
        missing = [s for s in stems if s not in known]
        for stem in missing:
            xml = self.root / "Annotations" / f"{stem}.xml"
            if xml.is_file():
                known[stem] = labels_from_xml(xml, self.names)
            elif self.mask_path(stem).is_file():
                known[stem] = labels_from_mask(self.load_mask(stem), self.num_classes)
            else:
                raise DatasetError(
                    f"no labels for image '{stem}': neither {xml} nor {self.mask_path(stem)} exists")
        if cache and missing:
            try:
                io.save_npz(cache_path, known)
            except OSError:
                pass  # a read-only dataset root still works, only without the cache
        return {s: known[s] for s in stems}


def check_mask(mask: np.ndarray, num_classes: int, path: str | Path,
               image_shape: tuple[int, ...] | None = None) -> None:
    """Raise a DatasetError naming ``path`` for values outside 0..C and 255, or a size mismatch."""
    bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(num_classes + 1), IGNORE])
    if bad.size:
        raise DatasetError(
            f"{path}: label values {bad.tolist()} are neither classes 0..{num_classes} nor {IGNORE}; "
            "fix or regenerate this mask")
    if image_shape is not None and tuple(mask.shape[:2]) != tuple(image_shape[:2]):
        raise DatasetError(
            f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
            f"{image_shape[1]}x{image_shape[0]}")


def training_stems(data: VOCData, stems: list[str], log=None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Drop images without any class (they cannot teach a classifier) with a warning."""
    labels = data.image_labels(stems)
    empty = [s for s in stems if labels[s].sum() == 0]
    if empty and log is not None:
        log.warning("excluding %d image(s) without any class from training: %s%s", len(empty),
                    ", ".join(empty[:5]), " ..." if len(empty) > 5 else "")
    kept = [s for s in stems if labels[s].sum() > 0]
    if not kept:
        raise DatasetError("no training image has a class label; check the list and the annotations")
    return kept, labels


def class_names_with_background(data: VOCData) -> list[str]:
    """Names of label values 0..K: background, then the foreground classes."""
    return ["background", *data.names]
