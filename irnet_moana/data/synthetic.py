"""Synthetic benchmarks that make weak supervision hard the way photos do.

Every object is a large *body* whose shape and smoothly shaded grey-brown
colour are shared by all classes, carrying a *part* (a saturated disc or
square with a per-class hue and pattern, typically a sixth to two fifths of
the body) that alone tells the class. A classifier trained from image labels
fires on the parts and its coarse CAMs spill over the object outlines, so the
seeds are blobs; a stage that learns object boundaries (the body's outline
against a colourful cluttered background) can fit them to the objects. Two
writers put the scenes on disk in the layouts the real datasets use, so every
stage runs unchanged:

* ``generate_voc_demo``: PASCAL VOC 2012 (JPEGImages, palette
  SegmentationClass and SegmentationObject PNGs with a void border,
  Annotations XML, ImageSets lists including train_aug) plus ``classes.txt``.
  Scenes hold one to three objects; some hold two or three of one class,
  most of those touching, which a semantic mask cannot tell apart;
* ``generate_cub_demo``: CUB-200-2011 (one object and one box per image);
  ``prepare_cub_demo`` adds a held-out val split with boxes and writes the
  WSOL metadata of all three splits, as wsolevaluation's CUB metadata has;
  ``cub_demo_scene`` re-renders one image's scene (its body and part masks)
  from its image id.

Generation is deterministic: each image is drawn from its own generator
seeded by the seed, the dataset and the image's position, so the same seed
gives byte-identical files whatever order or subset of images is produced.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation, distance_transform_edt

from irnet_moana.data.voc import OBJECT_DIR
from irnet_moana.io import IGNORE, atomic_path, save_label_png, write_text
from irnet_moana.wsol.metadata import WSOLMetadata, convert_cub, write_metadata

MAX_CLASSES = 20
MIN_IMAGE_SIZE = 32
PATTERNS = ("solid", "dots", "checker")
PART_SHAPES = ("disc", "square")

# Separate seed streams so the VOC and CUB sets (and the CUB split) never
# share random numbers for the same seed.
_VOC_STREAM = 0
_CUB_STREAM = 1
_CUB_SPLIT_STREAM = 2
_CUB_VAL_STREAM = 3

# Body diameter as a fraction of the image side, by number of objects: more
# objects need smaller bodies to fit with little overlap.
_VOC_DIAMETERS = {1: (0.36, 0.55), 2: (0.28, 0.45), 3: (0.25, 0.38)}
_CUB_DIAMETERS = (0.40, 0.62)
_OBJECT_COUNT_PROBS = (0.45, 0.35, 0.20)
# Instance separation needs scenes in which objects of one class touch: of the
# scenes with two or three objects this share holds one class only, and in
# this share of those each later object is placed against an earlier one.
_SAME_CLASS_PROB = 0.4
_TOUCHING_PROB = 0.7
_TOUCHING_TRIES = 200

# Occlusion limits: a later object may hide at most 40 % of an earlier body
# and 30 % of its part, so every object keeps a visible class cue.
_MIN_VISIBLE_BODY = 0.6
_MIN_VISIBLE_PART = 0.7
_PLACEMENT_TRIES = 30

# The shared body colour: low saturation so it differs in statistics from the
# background (saturation 0.25-0.55) and from the parts (saturation 1).
_BODY_RGB = np.array([0.56, 0.52, 0.46])
_JPEG_QUALITY = 90


@dataclass(frozen=True)
class ClassStyle:
    """What makes a class recognisable: its part's hue, pattern and shape."""

    hue: float
    pattern: str
    shape: str


@dataclass
class Instance:
    """One drawn object: its 1-based class label and visible pixels."""

    label: int
    mask: np.ndarray
    part: np.ndarray


@dataclass
class Scene:
    """A rendered image with its objects, front-most last."""

    image: np.ndarray
    instances: list[Instance]

    def _instance_ids(self) -> np.ndarray:
        instance_ids = np.zeros(self.image.shape[:2], dtype=np.int32)
        for index, instance in enumerate(self.instances, start=1):
            instance_ids[instance.mask] = index
        return instance_ids

    @staticmethod
    def _void_band(instance_ids: np.ndarray) -> np.ndarray:
        """As in VOC: one pixel on each side of every outline between two instances or an instance and background."""
        edge = np.zeros(instance_ids.shape, dtype=bool)
        across = instance_ids[:, 1:] != instance_ids[:, :-1]
        edge[:, 1:] |= across
        edge[:, :-1] |= across
        down = instance_ids[1:, :] != instance_ids[:-1, :]
        edge[1:, :] |= down
        edge[:-1, :] |= down
        return edge

    def label_map(self, void_border: bool = True) -> np.ndarray:
        """(H, W) uint8 labels: 0 background, class labels, IGNORE on the void band of the outlines."""
        instance_ids = self._instance_ids()
        lookup = np.array([0] + [instance.label for instance in self.instances], dtype=np.uint8)
        labels = lookup[instance_ids]
        if void_border:
            labels[self._void_band(instance_ids)] = IGNORE
        return labels

    def object_map(self) -> np.ndarray:
        """(H, W) uint8 instance ids as VOC's SegmentationObject: 0 background, 1.. front-most last, IGNORE void."""
        instance_ids = self._instance_ids()
        objects = instance_ids.astype(np.uint8)
        objects[self._void_band(instance_ids)] = IGNORE
        return objects


def class_names(num_classes: int) -> list[str]:
    """Foreground class names in label order: class01, class02, ..."""
    return [f"class{index:02d}" for index in range(1, num_classes + 1)]


def class_styles(num_classes: int) -> list[ClassStyle]:
    """Per-class part styles: hues evenly spread, patterns and shapes cycled."""
    _check_range("num_classes", num_classes, 1, MAX_CLASSES)
    return [
        ClassStyle(hue=index / num_classes,
                   pattern=PATTERNS[index % len(PATTERNS)],
                   shape=PART_SHAPES[(index // len(PATTERNS)) % len(PART_SHAPES)])
        for index in range(num_classes)
    ]


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """0-based inclusive (xmin, ymin, xmax, ymax) of a non-empty boolean mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot box an empty mask")
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def render_scene(rng: np.random.Generator, styles: Sequence[ClassStyle], image_size: int,
                 labels: Sequence[int], diameter_range: tuple[float, float], touching: bool = False) -> Scene:
    """Draw objects of the given 1-based ``labels`` on a cluttered background.

    The first object is always placed; a later one is dropped when no
    placement within the occlusion limits is found, so a scene holds between
    one and ``len(labels)`` objects. With ``touching`` a later object is
    first sought among placements where its body touches or overlaps an
    earlier one, and placed anywhere else only when none is found.
    """
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    canvas = _background(rng, size)
    _draw_clutter(rng, canvas, xx, yy)

    bodies: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    accepted: list[int] = []
    for label in labels:
        placement = None
        if touching and bodies:
            placement = _place(rng, styles[label - 1], xx, yy, diameter_range, bodies, parts, _TOUCHING_TRIES,
                               lambda body: _touches(bodies, body))
        if placement is None:
            placement = _place(rng, styles[label - 1], xx, yy, diameter_range, bodies, parts, _PLACEMENT_TRIES)
        if placement is None:
            continue
        body, part, paint = placement
        paint(canvas)
        bodies.append(body)
        parts.append(part)
        accepted.append(label)

    noisy = canvas + rng.normal(0.0, 0.01, canvas.shape)
    image = np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)
    instances = []
    for index, label in enumerate(accepted):
        hidden = np.zeros((size, size), dtype=bool)
        for later in bodies[index + 1:]:
            hidden |= later
        instances.append(Instance(label=label, mask=bodies[index] & ~hidden, part=parts[index] & ~hidden))
    return Scene(image=image, instances=instances)


def generate_voc_demo(root: Path, seed: int = 0, num_classes: int = 6, image_size: int = 128,
                      num_train: int = 120, num_train_aug_extra: int = 240, num_val: int = 60) -> dict:
    """Write a synthetic segmentation set in the PASCAL VOC 2012 layout under ``root``.

    Ids are ``demo_000001``... with train first, then the extra train_aug
    images, then val. Returns a summary of what was written.
    """
    root = Path(root)
    _check_common(seed, num_classes, image_size)
    _check_range("num_train", num_train, 1)
    _check_range("num_train_aug_extra", num_train_aug_extra, 0)
    _check_range("num_val", num_val, 0)
    styles = class_styles(num_classes)
    names = class_names(num_classes)
    total = num_train + num_train_aug_extra + num_val
    ids = [f"demo_{index:06d}" for index in range(1, total + 1)]

    for index, image_id in enumerate(ids):
        rng = np.random.default_rng([seed, _VOC_STREAM, index])
        count = int(rng.choice(len(_OBJECT_COUNT_PROBS), p=_OBJECT_COUNT_PROBS)) + 1
        same_class = count > 1 and rng.random() < _SAME_CLASS_PROB
        labels = rng.integers(1, num_classes + 1, size=1 if same_class else count).tolist()
        touching = same_class and rng.random() < _TOUCHING_PROB
        scene = render_scene(rng, styles, image_size, labels * count if same_class else labels,
                             _VOC_DIAMETERS[count], touching)
        _save_jpeg(root / "JPEGImages" / f"{image_id}.jpg", scene.image)
        save_label_png(root / "SegmentationClass" / f"{image_id}.png", scene.label_map())
        save_label_png(root / OBJECT_DIR / f"{image_id}.png", scene.object_map())
        write_text(root / "Annotations" / f"{image_id}.xml", _voc_xml(image_id, scene, names))

    train = ids[:num_train]
    train_aug = ids[:num_train + num_train_aug_extra]
    val = ids[num_train + num_train_aug_extra:]
    lists = root / "ImageSets" / "Segmentation"
    for name, members in (("train", train), ("train_aug", train_aug), ("val", val)):
        write_text(lists / f"{name}.txt", _lines(members))
    write_text(root / "classes.txt", _lines(names))
    return {"root": str(root), "num_classes": num_classes, "image_size": image_size,
            "train": len(train), "train_aug": len(train_aug), "val": len(val)}


def generate_cub_demo(root: Path, seed: int = 0, num_classes: int = 6, image_size: int = 128,
                      train_per_class: int = 30, test_per_class: int = 10) -> dict:
    """Write a synthetic localisation set in the CUB-200-2011 layout under ``root``.

    One object per image. ``bounding_boxes.txt`` holds ``x y w h`` in 0-based
    pixels where the object's pixels span columns ``x .. x+w`` and rows
    ``y .. y+h`` inclusive (the tight box of body and part): WSOL metadata
    takes ``x + w`` as the far corner and box areas count it (+1 convention),
    so this box is exact there. Which images of a class are train is a seeded
    shuffle, as CUB's split is not ordered.
    """
    root = Path(root)
    _check_common(seed, num_classes, image_size)
    _check_range("train_per_class", train_per_class, 1)
    _check_range("test_per_class", test_per_class, 0)
    styles = class_styles(num_classes)
    names = class_names(num_classes)
    per_class = train_per_class + test_per_class
    folders = [f"{label:03d}.{name}" for label, name in enumerate(names, start=1)]

    images, class_labels, split, boxes = [], [], [], []
    for class_index, (name, folder) in enumerate(zip(names, folders)):
        split_rng = np.random.default_rng([seed, _CUB_SPLIT_STREAM, class_index])
        is_train = np.zeros(per_class, dtype=bool)
        is_train[split_rng.permutation(per_class)[:train_per_class]] = True
        for k in range(per_class):
            image_id = class_index * per_class + k + 1
            scene = _cub_scene(seed, _CUB_STREAM, class_index, k, styles, image_size)
            relpath = f"{folder}/{name}_{k + 1:04d}.jpg"
            _save_jpeg(root / "images" / relpath, scene.image)
            x0, y0, x1, y1 = tight_box(scene.instances[0].mask)
            images.append(f"{image_id} {relpath}")
            class_labels.append(f"{image_id} {class_index + 1}")
            split.append(f"{image_id} {int(is_train[k])}")
            boxes.append(f"{image_id} {float(x0):.1f} {float(y0):.1f} {float(x1 - x0):.1f} {float(y1 - y0):.1f}")

    write_text(root / "images.txt", _lines(images))
    write_text(root / "image_class_labels.txt", _lines(class_labels))
    write_text(root / "train_test_split.txt", _lines(split))
    write_text(root / "bounding_boxes.txt", _lines(boxes))
    write_text(root / "classes.txt", _lines(f"{label} {folder}" for label, folder in enumerate(folders, start=1)))
    return {"root": str(root), "num_classes": num_classes, "image_size": image_size,
            "train": num_classes * train_per_class, "test": num_classes * test_per_class,
            "images": num_classes * per_class}


def held_out_cub_split(root: Path, seed: int = 0, num_classes: int = 6, image_size: int = 128,
                       per_class: int = 10) -> WSOLMetadata:
    """Images drawn like ``generate_cub_demo``'s, from their own seed stream, as a fully annotated val split.

    wsolevaluation's CUB val split is a separate set of images with boxes
    (not part of CUB's train or test); these play that role. They are
    written under ``root/images`` as ``<class folder>/<name>_val_<k>.jpg``
    and listed nowhere in the CUB tables, so CUB's train and test stay as
    ``generate_cub_demo`` wrote them.
    """
    root = Path(root)
    _check_common(seed, num_classes, image_size)
    _check_range("per_class", per_class, 1)
    styles = class_styles(num_classes)
    split = WSOLMetadata([], {})
    for class_index, name in enumerate(class_names(num_classes)):
        for k in range(per_class):
            scene = _cub_scene(seed, _CUB_VAL_STREAM, class_index, k, styles, image_size)
            image_id = f"{class_index + 1:03d}.{name}/{name}_val_{k + 1:04d}.jpg"
            _save_jpeg(root / "images" / image_id, scene.image)
            split.image_ids.append(image_id)
            split.class_labels[image_id] = class_index
            split.image_sizes[image_id] = (image_size, image_size)
            # the far corner as convert_cub reads CUB's boxes: x + w with w = x1 - x0
            split.boxes[image_id] = [tight_box(scene.instances[0].mask)]
    return split


def _cub_scene(seed: int, stream: int, class_index: int, k: int, styles: Sequence[ClassStyle],
               image_size: int) -> Scene:
    """Image ``k`` of class ``class_index`` of a CUB seed stream (``_CUB_STREAM``: train / test, ``_CUB_VAL_STREAM``)."""
    rng = np.random.default_rng([seed, stream, class_index, k])
    return render_scene(rng, styles, image_size, [class_index + 1], _CUB_DIAMETERS)


_CUB_IMAGE_ID = re.compile(r"(\d{3})\.(class\d{2})/\2_(val_)?(\d{4})\.jpg")


def cub_demo_scene(image_id: str, seed: int = 0, num_classes: int = 6, image_size: int = 128) -> Scene:
    """The scene of one demo CUB image, re-rendered from its id and the set's seed, size and class count.

    ``001.class01/class01_0003.jpg`` is a ``generate_cub_demo`` image (train
    or test), ``001.class01/class01_val_0003.jpg`` a ``held_out_cub_split``
    one. The scene's ``instances[0]`` holds the object's mask (body and part)
    and its part's mask, pixel-exact for the image on disk (which is this
    scene's image, JPEG-compressed). ValueError for an id of another form.
    """
    _check_common(seed, num_classes, image_size)
    match = _CUB_IMAGE_ID.fullmatch(image_id)
    class_index = int(match[1]) - 1 if match else -1
    if not match or not 0 <= class_index < num_classes or match[2] != class_names(num_classes)[class_index] \
            or int(match[4]) < 1:
        raise ValueError(f"{image_id!r} is not an image id of the demo CUB set with {num_classes} classes")
    stream = _CUB_VAL_STREAM if match[3] else _CUB_STREAM
    return _cub_scene(seed, stream, class_index, int(match[4]) - 1, class_styles(num_classes), image_size)


def prepare_cub_demo(root: Path, metadata_root: Path, seed: int = 0, num_classes: int = 6, image_size: int = 128,
                     train_per_class: int = 30, val_per_class: int = 10, test_per_class: int = 10) -> dict:
    """The demo WSOL set: CUB-layout images under ``root`` and metadata train / val / test under ``metadata_root``."""
    summary = generate_cub_demo(root, seed=seed, num_classes=num_classes, image_size=image_size,
                                train_per_class=train_per_class, test_per_class=test_per_class)
    splits = convert_cub(root, metadata_root)
    splits["val"] = held_out_cub_split(root, seed, num_classes, image_size, val_per_class)
    write_metadata(Path(metadata_root) / "val", splits["val"])
    summary["val"] = len(splits["val"].image_ids)
    summary["metadata_root"] = str(metadata_root)
    summary["metadata"] = {name: len(split.image_ids) for name, split in splits.items()}
    return summary


def _check_range(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_common(seed: int, num_classes: int, image_size: int) -> None:
    # SeedSequence rejects negative entropy; parts under ~3 px are unreadable.
    _check_range("seed", seed, 0)
    _check_range("num_classes", num_classes, 1, MAX_CLASSES)
    _check_range("image_size", image_size, MIN_IMAGE_SIZE)


def _lines(items: Iterable[object]) -> str:
    return "".join(f"{item}\n" for item in items)


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    # 4:4:4 chroma keeps the few-pixel parts' hues intact at small sizes.
    with atomic_path(path) as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)


def _voc_xml(image_id: str, scene: Scene, names: Sequence[str]) -> str:
    height, width = scene.image.shape[:2]
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "synthetic"
    ET.SubElement(annotation, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(annotation, "segmented").text = "1"
    for instance in scene.instances:
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = names[instance.label - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        # VOC boxes are 1-based inclusive pixel coordinates.
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), tight_box(instance.mask)):
            ET.SubElement(box, tag).text = str(value + 1)
    ET.indent(annotation)
    return ET.tostring(annotation, encoding="unicode") + "\n"


def _hsv_to_rgb(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of equal shape, all in [0, 1]."""
    hue, sat, val = np.broadcast_arrays(np.asarray(hue, float), np.asarray(sat, float), np.asarray(val, float))
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = (offset + hue * 6.0) % 6.0
        channels.append(val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a (g, g, c) grid to (size, size, c), corners aligned."""
    cells = grid.shape[0]
    t = np.linspace(0.0, cells - 1.0, size)
    low = np.minimum(np.floor(t).astype(int), cells - 2)
    frac = t - low
    # Bilinear interpolation is separable: one (size, g) weight matrix per axis.
    weights = np.zeros((size, cells))
    weights[np.arange(size), low] = 1.0 - frac
    weights[np.arange(size), low + 1] = frac
    rows = np.tensordot(weights, grid, axes=(1, 0))
    return np.tensordot(rows, weights, axes=(1, 1)).transpose(0, 2, 1)


def _fractal_noise(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1], stretched to the full range per channel."""
    octaves = (2, 4, 8, 16)
    finest = octaves[-1] + 1
    # Octaves are summed on the finest lattice and resized once to full size,
    # which is several times cheaper than resizing each octave.
    lattice = np.zeros((finest, finest, channels))
    for octave, cells in enumerate(octaves):
        lattice += 0.5 ** octave * _upsample(rng.random((cells + 1, cells + 1, channels)), finest)
    noise = _upsample(lattice, size)
    low = noise.min(axis=(0, 1))
    span = np.maximum(noise.max(axis=(0, 1)) - low, 1e-6)
    return (noise - low) / span


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colourful smooth field: wandering hue, mid saturation, varied brightness."""
    noise = _fractal_noise(rng, size, 3)
    hue = (rng.random() + 0.7 * noise[..., 0]) % 1.0
    sat = 0.25 + 0.30 * noise[..., 1]
    val = 0.35 + 0.50 * noise[..., 2]
    return _hsv_to_rgb(hue, sat, val)


def _rotate(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in a frame centred at (cx, cy) and turned by ``angle``."""
    dx, dy = xx - cx, yy - cy
    cos, sin = math.cos(angle), math.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> None:
    """Small flat discs, boxes and lines in low-to-mid saturation colours.

    Saturation stays well below the parts' so that only parts carry a
    saturated, class-specific colour.
    """
    size = canvas.shape[0]
    count = max(3, int(round(rng.uniform(10, 18) * (size / 128.0) ** 2)))
    colours = _hsv_to_rgb(rng.random(count), rng.uniform(0.2, 0.55, count), rng.uniform(0.25, 0.9, count))
    for colour in colours:
        kind = rng.integers(3)
        cx, cy = rng.uniform(0, size, 2)
        if kind == 0:
            radius = rng.uniform(0.02, 0.07) * size
            window = _window(cx, cy, radius, size)
            mask = (xx[window] - cx) ** 2 + (yy[window] - cy) ** 2 <= radius ** 2
        elif kind == 1:
            half_w, half_h = rng.uniform(0.02, 0.08, 2) * size
            window = _window(cx, cy, math.hypot(half_w, half_h), size)
            u, v = _rotate(xx[window], yy[window], cx, cy, rng.uniform(0, math.pi))
            mask = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
        else:
            half_length = rng.uniform(0.08, 0.22) * size
            half_width = rng.uniform(0.6, 1.3)
            window = _window(cx, cy, half_length + half_width, size)
            u, v = _rotate(xx[window], yy[window], cx, cy, rng.uniform(0, math.pi))
            along = np.clip(u, -half_length, half_length)
            mask = np.hypot(u - along, v) <= half_width
        canvas[window][mask] = colour


def _window(cx: float, cy: float, extent: float, size: int) -> tuple[slice, slice]:
    """Rows and columns of the image within ``extent`` of (cx, cy): where a small shape can be."""
    def span(centre: float) -> slice:
        return slice(max(0, int(math.floor(centre - extent))), min(size, int(math.ceil(centre + extent)) + 1))
    return span(cy), span(cx)


def _sample_object(rng: np.random.Generator, style: ClassStyle, xx: np.ndarray, yy: np.ndarray,
                   diameter_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], None]]:
    """Sample one object fully inside the image.

    Returns its body mask, its part mask (inside the body) and a function
    that paints it onto a canvas, so placement can be rejected before
    anything is drawn. Pixels are computed only in the object's window.
    """
    size = xx.shape[0]
    semi_major = rng.uniform(*diameter_range) * size / 2.0
    semi_minor = semi_major * rng.uniform(0.6, 1.0)
    amplitudes = rng.uniform(0.0, 0.08, 3)
    phases = rng.uniform(0.0, 2.0 * math.pi, 3)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    reach = semi_major * (1.0 + amplitudes.sum())
    margin = min(reach + 1.0, (size - 1) / 2.0)
    cx, cy = rng.uniform(margin, size - 1 - margin, 2)
    window = _window(cx, cy, reach + 1.0, size)
    local_x, local_y = xx[window], yy[window]

    # A star-shaped outline: an ellipse whose radius wobbles with low harmonics.
    u, v = _rotate(local_x, local_y, cx, cy, angle)
    su, sv = u / semi_major, v / semi_minor
    theta = np.arctan2(sv, su)
    outline = 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in zip((2, 3, 4), amplitudes, phases))
    local_body = np.hypot(su, sv) <= outline

    # The same smooth shading for every class (light falling across the body
    # in its own frame): a texture with strong fine contrast would break the
    # colour-driven dense CRF inside objects, which real object surfaces rarely do.
    shade = rng.uniform(0.85, 1.15) * (1.0 + 0.12 * np.clip(u / semi_major, -1.0, 1.0))
    local_rgb = np.clip(_BODY_RGB * shade[..., None], 0.0, 1.0)

    local_part, part_rgb = _sample_part(rng, style, local_body, local_x, local_y, angle, 2.0 * semi_major,
                                        cell=max(3.0, size / 40.0))
    local_rgb[local_part] = part_rgb

    def paint(canvas: np.ndarray) -> None:
        canvas[window][local_body] = local_rgb[local_body]

    body = np.zeros((size, size), dtype=bool)
    body[window] = local_body
    part = np.zeros((size, size), dtype=bool)
    part[window] = local_part
    return body, part, paint


def _sample_part(rng: np.random.Generator, style: ClassStyle, body: np.ndarray, xx: np.ndarray,
                 yy: np.ndarray, angle: float, body_diameter: float, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """A class-coloured disc or square inside the body, near its border.

    ``cell`` is the pattern's period in pixels. Returns the part mask (on the
    grid of ``body``) and the colours of its pixels.
    """
    half = rng.uniform(0.35, 0.5) * body_diameter / 2.0
    # A square's corners reach sqrt(2) times its half-side from the centre.
    reach_factor = 1.0 if style.shape == "disc" else math.sqrt(2.0)
    depth = distance_transform_edt(body)
    half = min(half, max(1.0, (depth.max() - 1.0) / reach_factor))
    need = half * reach_factor + 1.0
    candidates = np.flatnonzero(((depth >= need) & (depth <= need + 2.0)).ravel())
    if candidates.size == 0:
        candidates = np.flatnonzero((depth >= depth.max() - 0.5).ravel())
    centre = candidates[rng.integers(candidates.size)]

    u, v = _rotate(xx, yy, xx.flat[centre], yy.flat[centre], angle)
    if style.shape == "disc":
        part = np.hypot(u, v) <= half
    else:
        part = (np.abs(u) <= half) & (np.abs(v) <= half)
    part &= body
    u, v = u[part], v[part]

    rgb = np.empty(u.shape + (3,))
    rgb[:] = _hsv_to_rgb(style.hue, 1.0, 0.95)
    if style.pattern == "dots":
        du = (u % cell) - cell / 2.0
        dv = (v % cell) - cell / 2.0
        rgb[np.hypot(du, dv) <= 0.2 * cell] = 1.0
    elif style.pattern == "checker":
        dark = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1
        rgb[dark] = _hsv_to_rgb(style.hue, 1.0, 0.4)
    return part, rgb


def _place(rng: np.random.Generator, style: ClassStyle, xx: np.ndarray, yy: np.ndarray,
           diameter_range: tuple[float, float], bodies: list[np.ndarray], parts: list[np.ndarray], tries: int,
           accept: Callable[[np.ndarray], bool] = lambda body: True
           ) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], None]] | None:
    """The first of ``tries`` sampled objects within the occlusion limits that ``accept`` takes, or None."""
    for _ in range(tries):
        body, part, paint = _sample_object(rng, style, xx, yy, diameter_range)
        if accept(body) and _occlusion_ok(bodies, parts, body):
            return body, part, paint
    return None


def _touches(bodies: list[np.ndarray], new_body: np.ndarray) -> bool:
    """Whether ``new_body`` overlaps an earlier body or lies next to it (4-neighbours)."""
    grown = binary_dilation(new_body)
    return any((grown & body).any() for body in bodies)


def _occlusion_ok(bodies: list[np.ndarray], parts: list[np.ndarray], new_body: np.ndarray) -> bool:
    """Whether drawing ``new_body`` on top leaves every earlier object recognisable."""
    for index, (body, part) in enumerate(zip(bodies, parts)):
        hidden = new_body.copy()
        for later in bodies[index + 1:]:
            hidden |= later
        if (body & ~hidden).sum() < _MIN_VISIBLE_BODY * body.sum():
            return False
        if (part & ~hidden).sum() < _MIN_VISIBLE_PART * part.sum():
            return False
    return True
