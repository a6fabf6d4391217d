"""The WSOL metadata format (one folder per split) and converters that produce it.

A split folder holds up to four comma-separated text files, one record a line,
keyed by the image id (the image path relative to the dataset's image root):

- ``image_ids.txt``     ``<id>``                      the split's images, in order
- ``class_labels.txt``  ``<id>,<class>``              0-based class index
- ``image_sizes.txt``   ``<id>,<width>,<height>``     original image size
- ``localization.txt``  ``<id>,<x0>,<y0>,<x1>,<y1>``  one line per box, inclusive
  pixel coordinates of the original image

This is the format of the standard WSOL evaluation protocol (MaxBoxAccV2), so
its published metadata folders can be used as they are. A training split may
omit the last two files.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from irnet_moana.data.voc import DatasetError
from irnet_moana.io import write_text

Box = tuple[int, int, int, int]

IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"

CUB_REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "images")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


class MetadataError(DatasetError):
    """A metadata or annotation file is missing, malformed or inconsistent.

    A DatasetError, so pipeline scripts report it as one line, not a traceback.
    """


@dataclass
class WSOLMetadata:
    """One split: image ids in file order and per-id labels, sizes and boxes.

    ``image_sizes`` maps an id to (width, height); ``boxes`` maps an id to its
    list of (x0, y0, x1, y1) boxes. Both are empty for a split without them.
    """

    image_ids: list[str]
    class_labels: dict[str, int]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    boxes: dict[str, list[Box]] = field(default_factory=dict)

    def has_localization(self) -> bool:
        """Whether every image has a size and at least one box (needed to evaluate)."""
        return all(i in self.image_sizes and self.boxes.get(i) for i in self.image_ids)


def _records(path: Path, num_fields: int) -> Iterable[tuple[int, list[str]]]:
    """Yield (line number, fields) of a comma-separated file, skipping blank lines."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(",")
            if len(fields) != num_fields:
                raise MetadataError(
                    f"{path}:{number}: expected {num_fields} comma-separated fields, got {len(fields)}: {line!r}")
            yield number, fields


def _ints(path: Path, number: int, values: Sequence[str]) -> list[int]:
    try:
        return [int(value) for value in values]
    except ValueError:
        raise MetadataError(f"{path}:{number}: expected integers, got {list(values)}") from None


def _check_covered(path: Path, image_ids: Sequence[str], present: Iterable[str]) -> None:
    present = set(present)
    missing = [image_id for image_id in image_ids if image_id not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise MetadataError(f"{path}: no entry for {len(missing)} image id(s) of {IMAGE_IDS}: {shown}")


def _read_image_ids(path: Path) -> list[str]:
    image_ids: list[str] = []
    seen: set[str] = set()
    for number, (image_id,) in _records(path, 1):
        if image_id in seen:
            raise MetadataError(f"{path}:{number}: duplicate image id {image_id!r}")
        seen.add(image_id)
        image_ids.append(image_id)
    if not image_ids:
        raise MetadataError(f"{path}: no image ids")
    return image_ids


def _read_single_values(path: Path, num_values: int) -> dict[str, list[int]]:
    values: dict[str, list[int]] = {}
    for number, (image_id, *rest) in _records(path, 1 + num_values):
        if image_id in values:
            raise MetadataError(f"{path}:{number}: second entry for image id {image_id!r}")
        values[image_id] = _ints(path, number, rest)
    return values


def _read_boxes(path: Path) -> dict[str, list[Box]]:
    boxes: dict[str, list[Box]] = {}
    for number, (image_id, *rest) in _records(path, 5):
        x0, y0, x1, y1 = _ints(path, number, rest)
        if min(x0, y0) < 0 or x1 < x0 or y1 < y0:
            raise MetadataError(f"{path}:{number}: box {rest} is not x0,y0,x1,y1 with 0 <= x0 <= x1 and 0 <= y0 <= y1")
        boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
    return boxes


def read_metadata(split_dir: str | os.PathLike) -> WSOLMetadata:
    """Read one split folder; ``image_sizes.txt`` and ``localization.txt`` are optional.

    Every id of ``image_ids.txt`` must have a class label, and a size and at
    least one box when those files exist. Entries for ids not listed in
    ``image_ids.txt`` are ignored, so a shortened ``image_ids.txt`` selects a
    subset. Raises MetadataError naming the file and line of the problem.
    """
    split_dir = Path(split_dir)
    ids_path = split_dir / IMAGE_IDS
    if not ids_path.is_file():
        raise MetadataError(f"{ids_path}: not found; a WSOL metadata folder needs {IMAGE_IDS} and {CLASS_LABELS}")
    image_ids = _read_image_ids(ids_path)

    labels_path = split_dir / CLASS_LABELS
    if not labels_path.is_file():
        raise MetadataError(f"{labels_path}: not found")
    labels = _read_single_values(labels_path, 1)
    _check_covered(labels_path, image_ids, labels)
    wanted = set(image_ids)
    metadata = WSOLMetadata(image_ids, {i: v[0] for i, v in labels.items() if i in wanted})

    sizes_path = split_dir / IMAGE_SIZES
    if sizes_path.is_file():
        sizes = _read_single_values(sizes_path, 2)
        _check_covered(sizes_path, image_ids, sizes)
        for image_id in image_ids:
            width, height = sizes[image_id]
            if width <= 0 or height <= 0:
                raise MetadataError(f"{sizes_path}: image {image_id!r} has size {width}x{height}")
            metadata.image_sizes[image_id] = (width, height)

    boxes_path = split_dir / LOCALIZATION
    if boxes_path.is_file():
        boxes = _read_boxes(boxes_path)
        _check_covered(boxes_path, image_ids, boxes)
        metadata.boxes.update({i: boxes[i] for i in image_ids})
    return metadata


def _check_writable_id(image_id: str) -> None:
    if not image_id or any(c in image_id for c in ",\r\n"):
        raise MetadataError(f"image id {image_id!r} cannot be written to the metadata format (empty, comma or newline)")


def write_metadata(split_dir: str | os.PathLike, metadata: WSOLMetadata) -> None:
    """Write a split folder atomically, file by file; sizes and boxes only when present."""
    split_dir = Path(split_dir)
    for image_id in metadata.image_ids:
        _check_writable_id(image_id)
    ids = metadata.image_ids
    write_text(split_dir / IMAGE_IDS, "".join(f"{i}\n" for i in ids))
    write_text(split_dir / CLASS_LABELS, "".join(f"{i},{metadata.class_labels[i]}\n" for i in ids))
    if metadata.image_sizes:
        write_text(split_dir / IMAGE_SIZES, "".join(
            f"{i},{metadata.image_sizes[i][0]},{metadata.image_sizes[i][1]}\n" for i in ids))
    if metadata.boxes:
        write_text(split_dir / LOCALIZATION, "".join(
            f"{i},{x0},{y0},{x1},{y1}\n" for i in ids for x0, y0, x1, y1 in metadata.boxes[i]))


def _write_splits(out_root: str | os.PathLike, splits: dict[str, WSOLMetadata]) -> None:
    # An empty split would be unreadable later; refuse before writing anything.
    empty = [name for name, split in splits.items() if not split.image_ids]
    if empty:
        raise MetadataError(f"no images for split(s) {', '.join(empty)}")
    for name, split in splits.items():
        write_metadata(Path(out_root) / name, split)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image from its header; the pixels are not decoded."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as exc:
        raise MetadataError(f"{path}: cannot read the image header ({exc})") from exc


def check_cub_layout(cub_root: str | os.PathLike) -> list[str]:
    """The required CUB-200-2011 files and folders that ``cub_root`` lacks (empty when complete)."""
    cub_root = Path(cub_root)
    return [str(cub_root / name) for name in CUB_REQUIRED if not (cub_root / name).exists()]


def _read_cub_table(path: Path, num_values: int) -> dict[str, list[str]]:
    """``<id> <value>...`` lines of a CUB file, keyed by the id string."""
    table: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            # images.txt paths contain no spaces, so whitespace splitting is safe.
            fields = line.split()
            if len(fields) != 1 + num_values:
                raise MetadataError(
                    f"{path}:{number}: expected {1 + num_values} space-separated fields: {line.strip()!r}")
            if fields[0] in table:
                raise MetadataError(f"{path}:{number}: duplicate image number {fields[0]}")
            table[fields[0]] = fields[1:]
    return table


def _cub_box(path: Path, number: str, values: Sequence[str]) -> Box:
    try:
        x, y, w, h = (float(v) for v in values)
    except ValueError:
        raise MetadataError(f"{path}: image {number}: box values {list(values)} are not numbers") from None
    # CUB stores x, y, width, height; the published CUB metadata keeps x + w and
    # y + h as the far corner (not x + w - 1), so this does too. CUB writes whole
    # numbers as floats ("60.0"); a fractional value would be truncated.
    return int(x), int(y), int(x + w), int(y + h)


def convert_cub(cub_root: str | os.PathLike, out_root: str | os.PathLike) -> dict[str, WSOLMetadata]:
    """Convert CUB-200-2011's official layout into ``out_root/train`` and ``out_root/test``.

    Class labels become 0-based; image sizes come from the image headers, so
    every image must be present. Raises MetadataError listing what is missing.
    """
    cub_root = Path(cub_root)
    missing = check_cub_layout(cub_root)
    if missing:
        raise MetadataError(f"{cub_root} is not a CUB-200-2011 root; missing: {', '.join(missing)}")
    paths = {name: cub_root / name for name in CUB_REQUIRED}
    images = _read_cub_table(paths["images.txt"], 1)
    labels = _read_cub_table(paths["image_class_labels.txt"], 1)
    is_train = _read_cub_table(paths["train_test_split.txt"], 1)
    boxes = _read_cub_table(paths["bounding_boxes.txt"], 4)
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train),
                        ("bounding_boxes.txt", boxes)):
        absent = [n for n in images if n not in table]
        if absent:
            raise MetadataError(f"{paths[name]}: no entry for image number(s) {', '.join(absent[:5])}")

    absent_images = [str(paths["images"] / rel) for (rel,) in images.values() if not (paths["images"] / rel).is_file()]
    if absent_images:
        raise MetadataError(f"{len(absent_images)} image(s) listed in {paths['images.txt']} are missing, e.g. "
                            + ", ".join(absent_images[:5]))

    splits = {"train": WSOLMetadata([], {}), "test": WSOLMetadata([], {})}
    for number, (rel,) in images.items():
        flag = is_train[number][0]
        if flag not in ("0", "1"):
            raise MetadataError(f"{paths['train_test_split.txt']}: image {number} has is_train {flag!r}, not 0 or 1")
        label = labels[number][0]
        if not label.isdigit() or int(label) < 1:
            raise MetadataError(f"{paths['image_class_labels.txt']}: image {number} has class {label!r}; "
                                "CUB classes are integers from 1")
        split = splits["train" if flag == "1" else "test"]
        split.image_ids.append(rel)
        split.class_labels[rel] = int(label) - 1
        split.image_sizes[rel] = read_image_size(paths["images"] / rel)
        split.boxes[rel] = [_cub_box(paths["bounding_boxes.txt"], number, boxes[number])]
    _write_splits(out_root, splits)
    return splits


def read_synsets(path: str | os.PathLike) -> list[str]:
    """WordNet ids in class-index order, the first token of each line (e.g. LOC_synset_mapping.txt)."""
    with open(path, encoding="utf-8") as handle:
        synsets = [line.split()[0] for line in handle if line.strip()]
    if len(set(synsets)) != len(synsets):
        raise MetadataError(f"{path}: a synset is listed twice")
    return synsets


def _parse_val_xml(path: Path) -> tuple[str, tuple[int, int], list[Box]]:
    """(wnid, (width, height), boxes) of one ILSVRC CLS-LOC validation annotation."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise MetadataError(f"{path}: not valid XML ({exc})") from exc

    def number(element: ElementTree.Element, tag: str) -> int:
        text = element.findtext(tag)
        try:
            return int(float(text))
        except (TypeError, ValueError):
            raise MetadataError(f"{path}: <{tag}> is {text!r}, not a number") from None

    size = root.find("size")
    if size is None:
        raise MetadataError(f"{path}: no <size> element")
    width, height = number(size, "width"), number(size, "height")
    names, boxes = set(), []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None or not obj.findtext("name"):
            raise MetadataError(f"{path}: an <object> lacks <name> or <bndbox>")
        names.add(obj.findtext("name").strip())
        boxes.append(tuple(number(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax")))
    if not boxes:
        raise MetadataError(f"{path}: no <object>")
    if len(names) != 1:
        raise MetadataError(f"{path}: objects of several classes {sorted(names)}; expected one class per image")
    return names.pop(), (width, height), boxes


def convert_ilsvrc(train_dir: str | os.PathLike, val_xml_dir: str | os.PathLike, out_root: str | os.PathLike,
                   synsets: Sequence[str] | None = None, train_prefix: str = "train",
                   val_prefix: str = "val") -> dict[str, WSOLMetadata]:
    """Convert ILSVRC 2012 CLS-LOC into ``out_root/train`` (ids, labels) and ``out_root/val`` (with boxes).

    ``train_dir`` holds one folder per WordNet id; class indices follow
    ``synsets`` when given, else the sorted folder names. ``val_xml_dir`` holds
    the validation XML files (``Annotations/CLS-LOC/val``); sizes and boxes come
    from them. Ids are ``<train_prefix>/<wnid>/<file>`` and
    ``<val_prefix>/<xml stem>.JPEG``, i.e. relative to the folder that holds
    the ``train`` and ``val`` image folders (as in the published metadata).
    """
    train_dir, val_xml_dir = Path(train_dir), Path(val_xml_dir)
    for folder in (train_dir, val_xml_dir):
        if not folder.is_dir():
            raise MetadataError(f"{folder}: not a folder")
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not wnids:
        raise MetadataError(f"{train_dir}: no class folders")
    order = list(synsets) if synsets is not None else wnids
    index = {wnid: i for i, wnid in enumerate(order)}
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise MetadataError(f"{train_dir}: class folders not in the synset list: {', '.join(unknown[:5])}")

    train = WSOLMetadata([], {})
    for wnid in wnids:
        files = sorted(p.name for p in (train_dir / wnid).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for name in files:
            image_id = f"{train_prefix}/{wnid}/{name}"
            train.image_ids.append(image_id)
            train.class_labels[image_id] = index[wnid]

    val = WSOLMetadata([], {})
    xml_files = sorted(val_xml_dir.glob("*.xml"))
    if not xml_files:
        raise MetadataError(f"{val_xml_dir}: no .xml files")
    for xml_path in xml_files:
        wnid, size, boxes = _parse_val_xml(xml_path)
        if wnid not in index:
            raise MetadataError(f"{xml_path}: class {wnid} is not a training class")
        image_id = f"{val_prefix}/{xml_path.stem}.JPEG"
        val.image_ids.append(image_id)
        val.class_labels[image_id] = index[wnid]
        val.image_sizes[image_id] = size
        val.boxes[image_id] = boxes

    splits = {"train": train, "val": val}
    _write_splits(out_root, splits)
    return splits
