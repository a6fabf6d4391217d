"""Tests of the synthetic VOC- and CUB-style benchmark generator."""
from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from irnet_moana.data import synthetic
from irnet_moana.data.synthetic import (Instance, Scene, class_styles, cub_demo_scene, generate_cub_demo,
                                        generate_voc_demo, prepare_cub_demo, render_scene, tight_box)
from irnet_moana.instance_eval import touching_same_class_stems
from irnet_moana.io import IGNORE, load_label_png, voc_palette
from irnet_moana.wsol.metadata import read_metadata

SIZE = 64
VOC_ARGS = dict(num_classes=4, image_size=SIZE, num_train=4, num_train_aug_extra=2, num_val=2)
CUB_ARGS = dict(num_classes=3, image_size=SIZE, train_per_class=3, test_per_class=2)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _read_list(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _saturation(pixels: np.ndarray) -> np.ndarray:
    rgb = pixels.astype(float) / 255.0
    high = rgb.max(axis=-1)
    return (high - rgb.min(axis=-1)) / np.maximum(high, 1e-6)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    generate_voc_demo(root, seed=3, **VOC_ARGS)
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cub")
    generate_cub_demo(root, seed=5, **CUB_ARGS)
    return root


def test_voc_same_seed_gives_identical_bytes_and_other_seed_differs(voc_root, tmp_path):
    reference = _tree_bytes(voc_root)
    again = tmp_path / "again"
    generate_voc_demo(again, seed=3, **VOC_ARGS)
    # Regenerating over existing files must not change a byte either.
    generate_voc_demo(again, seed=3, **VOC_ARGS)
    assert _tree_bytes(again) == reference

    other = tmp_path / "other"
    generate_voc_demo(other, seed=4, **VOC_ARGS)
    other_bytes = _tree_bytes(other)
    assert other_bytes.keys() == reference.keys()
    for name in reference:
        if name.startswith(("JPEGImages", "SegmentationClass")):
            assert other_bytes[name] != reference[name], name


def test_voc_images_do_not_depend_on_how_many_are_generated(voc_root, tmp_path):
    # Per-image generators: the first training image is the same in a bigger set.
    bigger = tmp_path / "bigger"
    generate_voc_demo(bigger, seed=3, num_classes=4, image_size=SIZE, num_train=6, num_train_aug_extra=0, num_val=0)
    for name in ("JPEGImages/demo_000001.jpg", "SegmentationClass/demo_000004.png"):
        assert (bigger / name).read_bytes() == (voc_root / name).read_bytes()


def test_voc_layout_and_lists(voc_root):
    lists = voc_root / "ImageSets" / "Segmentation"
    train, train_aug, val = (_read_list(lists / f"{name}.txt") for name in ("train", "train_aug", "val"))
    assert train == ["demo_000001", "demo_000002", "demo_000003", "demo_000004"]
    assert train_aug == train + ["demo_000005", "demo_000006"]
    assert val == ["demo_000007", "demo_000008"]
    assert not set(val) & set(train_aug)
    assert _read_list(voc_root / "classes.txt") == ["class01", "class02", "class03", "class04"]
    for image_id in train_aug + val:
        with Image.open(voc_root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
        assert (voc_root / "SegmentationClass" / f"{image_id}.png").is_file()
        assert (voc_root / "Annotations" / f"{image_id}.xml").is_file()


def test_voc_masks_are_palette_pngs_with_valid_labels(voc_root):
    for path in sorted((voc_root / "SegmentationClass").glob("*.png")):
        with Image.open(path) as image:
            assert image.mode == "P"
            palette = np.array(image.getpalette()[:256 * 3], dtype=np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette, voc_palette())
        values = set(np.unique(load_label_png(path)).tolist())
        assert values <= {0, 1, 2, 3, 4, IGNORE}
        assert {0, IGNORE} < values, "every image has background, an outline and an object"


def test_voc_object_pngs_number_the_objects_of_the_class_masks(voc_root):
    for path in sorted((voc_root / "SegmentationObject").glob("*.png")):
        objects = load_label_png(path)
        label = load_label_png(voc_root / "SegmentationClass" / path.name)
        ids = sorted(set(np.unique(objects).tolist()) - {0, IGNORE})
        assert ids == list(range(1, len(ids) + 1)) and 1 <= len(ids) <= 3
        assert np.array_equal(objects == IGNORE, label == IGNORE)
        assert np.array_equal(objects == 0, label == 0)
        for k in ids:  # one class per object
            assert len(np.unique(label[objects == k])) == 1
    assert len(list((voc_root / "SegmentationObject").glob("*.png"))) == len(
        list((voc_root / "SegmentationClass").glob("*.png")))


def test_voc_xml_boxes_and_names_agree_with_masks(voc_root):
    names = _read_list(voc_root / "classes.txt")
    for xml_path in sorted((voc_root / "Annotations").glob("*.xml")):
        image_id = xml_path.stem
        label = load_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
        tree = ET.parse(xml_path).getroot()
        assert tree.findtext("filename") == f"{image_id}.jpg"
        assert [tree.findtext(f"size/{tag}") for tag in ("width", "height", "depth")] == [str(SIZE), str(SIZE), "3"]
        objects = tree.findall("object")
        assert 1 <= len(objects) <= 3

        present = {int(v) for v in np.unique(label)} - {0, IGNORE}
        assert {names.index(obj.findtext("name")) + 1 for obj in objects} == present

        covered = {cls: np.zeros(label.shape, dtype=bool) for cls in present}
        for obj in objects:
            assert obj.findtext("pose") == "Unspecified"
            assert obj.findtext("truncated") == "0" and obj.findtext("difficult") == "0"
            cls = names.index(obj.findtext("name")) + 1
            xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= xmin < xmax <= SIZE and 1 <= ymin < ymax <= SIZE
            inside = np.zeros(label.shape, dtype=bool)
            inside[ymin - 1:ymax, xmin - 1:xmax] = True
            covered[cls] |= inside
            # Tight up to the one-pixel void band that eats the object's rim; at a
            # pointed tip the band reaches in from the sides too, so allow two.
            x0, y0, x1, y1 = tight_box(inside & (label == cls))
            assert x0 - (xmin - 1) <= 2 and y0 - (ymin - 1) <= 2
            assert (xmax - 1) - x1 <= 2 and (ymax - 1) - y1 <= 2
        for cls, region in covered.items():
            assert not np.any((label == cls) & ~region), "every class pixel lies in a box of its class"


def test_label_map_marks_a_one_pixel_void_band_on_each_side():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:5, 1:5] = True
    scene = Scene(image=np.zeros((6, 6, 3), np.uint8), instances=[Instance(label=2, mask=mask, part=mask & False)])
    v = IGNORE
    expected = np.array([
        [0, v, v, v, v, 0],
        [v, v, v, v, v, v],
        [v, v, 2, 2, v, v],
        [v, v, 2, 2, v, v],
        [v, v, v, v, v, v],
        [0, v, v, v, v, 0],
    ], dtype=np.uint8)
    np.testing.assert_array_equal(scene.label_map(), expected)
    plain = np.where(mask, 2, 0).astype(np.uint8)
    np.testing.assert_array_equal(scene.label_map(void_border=False), plain)


def test_label_map_separates_touching_instances():
    left = np.zeros((3, 6), dtype=bool)
    left[:, :3] = True
    scene = Scene(image=np.zeros((3, 6, 3), np.uint8),
                  instances=[Instance(1, left, left & False), Instance(3, ~left, left & False)])
    np.testing.assert_array_equal(scene.label_map(), np.array([[1, 1, IGNORE, IGNORE, 3, 3]] * 3, dtype=np.uint8))


def test_tight_box_is_inclusive_and_rejects_empty_masks():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1, 2] = mask[3, 5] = True
    assert tight_box(mask) == (2, 1, 5, 3)
    with pytest.raises(ValueError):
        tight_box(np.zeros((2, 2), dtype=bool))


@pytest.mark.parametrize("index", range(6))
def test_scene_parts_are_saturated_and_inside_dull_bodies(index):
    styles = class_styles(6)
    rng = np.random.default_rng([11, index])
    scene = render_scene(rng, styles, 96, [1, 2, 6], (0.25, 0.38))
    assert 1 <= len(scene.instances) <= 3
    union = np.zeros((96, 96), dtype=bool)
    for instance in scene.instances:
        assert not np.any(instance.mask & union), "visible masks do not overlap"
        union |= instance.mask
        assert instance.part.any() and not np.any(instance.part & ~instance.mask)
        # a part never covers more than half its body: the body stays what IRNet must recover
        assert instance.part.sum() <= 0.5 * instance.mask.sum()
        body_only = instance.mask & ~instance.part
        # The class cue is colour: parts are saturated, bodies are not.
        assert np.median(_saturation(scene.image[instance.part])) > 0.6
        assert np.median(_saturation(scene.image[body_only])) < 0.3


def _adjacent(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether masks ``a`` and ``b`` overlap or share a 4-neighbour edge."""
    return bool(np.any(binary_dilation(a) & b))


@pytest.mark.parametrize("index", range(6))
def test_touching_scenes_put_each_later_object_against_an_earlier_one(index):
    scene = render_scene(np.random.default_rng([13, index]), class_styles(4), 96, [3, 3, 3], (0.25, 0.38),
                         touching=True)
    assert len(scene.instances) >= 2 and {instance.label for instance in scene.instances} == {3}
    for later, instance in enumerate(scene.instances[1:], start=1):
        assert any(_adjacent(instance.mask, earlier.mask) for earlier in scene.instances[:later])


def test_voc_demo_has_touching_instances_of_one_class_in_its_ground_truth(tmp_path):
    generate_voc_demo(tmp_path, seed=1, num_classes=6, image_size=SIZE, num_train=24, num_train_aug_extra=0,
                      num_val=0)
    stems = _read_list(tmp_path / "ImageSets/Segmentation/train.txt")
    touching = touching_same_class_stems(tmp_path, stems)
    # one scene in six is drawn with touching objects of one class (0.55 x 0.4 x 0.7), a few more touch by chance
    assert 2 <= len(touching) <= 12


def test_part_hue_identifies_the_class():
    styles = class_styles(6)
    for label in range(1, 7):
        scene = render_scene(np.random.default_rng([2, label]), styles, 96, [label], (0.4, 0.5))
        part = scene.image[scene.instances[0].part].astype(float) / 255.0
        vivid = part[_saturation(scene.image[scene.instances[0].part]) > 0.6]
        hues = np.array([colorsys.rgb_to_hsv(*pixel)[0] for pixel in vivid])
        # Circular distance to the class hue; classes are 1/6 apart.
        distance = np.abs((hues - styles[label - 1].hue + 0.5) % 1.0 - 0.5)
        assert np.median(distance) < 1 / 24


def test_hsv_to_rgb_matches_colorsys():
    rng = np.random.default_rng(0)
    hsv = rng.random((50, 3))
    expected = np.array([colorsys.hsv_to_rgb(*row) for row in hsv])
    np.testing.assert_allclose(synthetic._hsv_to_rgb(hsv[:, 0], hsv[:, 1], hsv[:, 2]), expected, atol=1e-12)


def test_upsample_reproduces_a_linear_ramp_exactly():
    cells = np.arange(3, dtype=float)
    grid = (cells[:, None] * 2.0 + cells[None, :])[..., None]
    out = synthetic._upsample(grid, 5)
    t = np.linspace(0.0, 2.0, 5)
    np.testing.assert_allclose(out[..., 0], t[:, None] * 2.0 + t[None, :], atol=1e-12)


def test_cub_layout_parses_with_one_box_per_image(cub_root):
    classes = [line.split() for line in _read_list(cub_root / "classes.txt")]
    assert classes == [["1", "001.class01"], ["2", "002.class02"], ["3", "003.class03"]]
    images = dict(line.split() for line in _read_list(cub_root / "images.txt"))
    labels = {k: int(v) for k, v in (line.split() for line in _read_list(cub_root / "image_class_labels.txt"))}
    split = {k: int(v) for k, v in (line.split() for line in _read_list(cub_root / "train_test_split.txt"))}
    boxes = {k: [float(x) for x in rest.split()] for k, rest in
             (line.split(" ", 1) for line in _read_list(cub_root / "bounding_boxes.txt"))}
    ids = [str(i) for i in range(1, 16)]
    assert list(images) == ids and list(labels) == ids and list(split) == ids and list(boxes) == ids

    for image_id, relpath in images.items():
        folder, filename = relpath.split("/")
        assert folder == classes[labels[image_id] - 1][1]
        assert filename.startswith(folder.split(".", 1)[1] + "_") and filename.endswith(".jpg")
        with Image.open(cub_root / "images" / relpath) as image:
            assert (image.format, image.size) == ("JPEG", (SIZE, SIZE))
        x, y, w, h = boxes[image_id]
        # x + w and y + h are the last covered column and row (inclusive).
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= SIZE - 1 and y + h <= SIZE - 1
        assert max(w, h) >= 0.25 * SIZE, "one large object per image"

    for cls in (1, 2, 3):
        members = [k for k in ids if labels[k] == cls]
        assert len(members) == 5
        assert sum(split[k] for k in members) == 3


def test_cub_box_is_the_tight_inclusive_box_of_the_object(cub_root):
    boxes = dict(line.split(" ", 1) for line in _read_list(cub_root / "bounding_boxes.txt"))
    # Image 7 is the second image (k = 1) of the second class (5 per class).
    scene = render_scene(np.random.default_rng([5, synthetic._CUB_STREAM, 1, 1]), class_styles(3), SIZE, [2],
                         synthetic._CUB_DIAMETERS)
    rows, cols = np.nonzero(scene.instances[0].mask)
    expected = [cols.min(), rows.min(), cols.max() - cols.min(), rows.max() - rows.min()]
    assert [float(v) for v in boxes["7"].split()] == [float(v) for v in expected]
    with Image.open(cub_root / "images" / "002.class02" / "class02_0002.jpg") as image:
        decoded = np.asarray(image, dtype=float)
    assert np.abs(decoded - scene.image).mean() < 10.0, "the box belongs to the image written for id 7"


def test_cub_is_deterministic(cub_root, tmp_path):
    generate_cub_demo(tmp_path / "again", seed=5, **CUB_ARGS)
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(cub_root)
    generate_cub_demo(tmp_path / "other", seed=6, **CUB_ARGS)
    other = _tree_bytes(tmp_path / "other")
    assert other["images/001.class01/class01_0001.jpg"] != _tree_bytes(cub_root)["images/001.class01/class01_0001.jpg"]


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=21), dict(seed=-1), dict(image_size=16)])
def test_invalid_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_voc_demo(tmp_path, **{**VOC_ARGS, **kwargs})


def test_cub_demo_val_split_is_held_out_and_boxed(cub_root, tmp_path):
    root, metadata = tmp_path / "cub", tmp_path / "cub" / "metadata"
    summary = prepare_cub_demo(root, metadata, seed=5, val_per_class=2, **CUB_ARGS)
    assert summary["metadata"] == {"train": 9, "test": 6, "val": 6}
    # train and test are what generate_cub_demo alone writes; the val images are extra files
    written = _tree_bytes(root)
    assert {k: v for k, v in written.items() if k in _tree_bytes(cub_root)} == _tree_bytes(cub_root)
    val = read_metadata(metadata / "val")
    assert val.has_localization() and not set(val.image_ids) & set(read_metadata(metadata / "test").image_ids)
    image_id = "002.class02/class02_val_0002.jpg"
    assert image_id in val.image_ids and val.class_labels[image_id] == 1
    # the box of the second val image (k = 1) of the second class, drawn from its own stream
    scene = render_scene(np.random.default_rng([5, synthetic._CUB_VAL_STREAM, 1, 1]), class_styles(3), SIZE, [2],
                         synthetic._CUB_DIAMETERS)
    rows, cols = np.nonzero(scene.instances[0].mask)
    assert val.boxes[image_id] == [(cols.min(), rows.min(), cols.max(), rows.max())]
    assert val.image_sizes[image_id] == (SIZE, SIZE) and f"images/{image_id}" in written
    # every image's scene is recovered from its id alone, val and CUB train / test alike
    assert np.array_equal(cub_demo_scene(image_id, seed=5, num_classes=3, image_size=SIZE).instances[0].mask,
                          scene.instances[0].mask)
    train_scene = render_scene(np.random.default_rng([5, synthetic._CUB_STREAM, 1, 1]), class_styles(3), SIZE, [2],
                               synthetic._CUB_DIAMETERS)
    assert np.array_equal(cub_demo_scene("002.class02/class02_0002.jpg", seed=5, num_classes=3,
                                         image_size=SIZE).image, train_scene.image)
    with pytest.raises(ValueError, match="not an image id"):
        cub_demo_scene("004.class04/class04_0001.jpg", seed=5, num_classes=3, image_size=SIZE)
