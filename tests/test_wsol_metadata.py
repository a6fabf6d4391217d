"""WSOL metadata: reading, writing and converting CUB-200-2011 and ILSVRC layouts."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from irnet_moana.wsol.metadata import (MetadataError, WSOLMetadata, check_cub_layout, convert_cub, convert_ilsvrc,
                                       read_metadata, read_synsets, write_metadata)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def valid_split(folder: Path, **replace: str) -> Path:
    files = {
        "image_ids.txt": "a/1.jpg\na/2.jpg\n",
        "class_labels.txt": "a/1.jpg,0\na/2.jpg,3\n",
        "image_sizes.txt": "a/1.jpg,500,375\na/2.jpg,10,20\n",
        "localization.txt": "a/1.jpg,1,2,30,40\na/2.jpg,0,0,9,19\na/1.jpg,5,6,7,8\n",
    }
    files.update(replace)
    return write_files(folder, files)


# ---------------------------------------------------------------- reading and writing
def test_real_cub_sample_parses():
    root = SHARED_DATA / "wsol_metadata_sample" / "CUB" / "test"
    if not root.is_dir():
        pytest.skip("../shared/data/wsol_metadata_sample is not present in this clone")
    metadata = read_metadata(root)
    first = "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    assert len(metadata.image_ids) == 300 and metadata.image_ids[0] == first
    assert metadata.class_labels[first] == 0
    assert metadata.image_sizes[first] == (500, 335)
    assert metadata.boxes[first] == [(60, 27, 385, 331)]
    assert metadata.has_localization()


def test_read_collects_several_boxes_per_image(tmp_path):
    metadata = read_metadata(valid_split(tmp_path))
    assert metadata.image_ids == ["a/1.jpg", "a/2.jpg"]
    assert metadata.class_labels == {"a/1.jpg": 0, "a/2.jpg": 3}
    assert metadata.image_sizes == {"a/1.jpg": (500, 375), "a/2.jpg": (10, 20)}
    assert metadata.boxes == {"a/1.jpg": [(1, 2, 30, 40), (5, 6, 7, 8)], "a/2.jpg": [(0, 0, 9, 19)]}


def test_write_then_read_round_trips(tmp_path):
    metadata = read_metadata(valid_split(tmp_path / "in"))
    write_metadata(tmp_path / "out", metadata)
    assert read_metadata(tmp_path / "out") == metadata
    # Boxes are written grouped by image, in image order.
    assert (tmp_path / "out" / "localization.txt").read_text() == (
        "a/1.jpg,1,2,30,40\na/1.jpg,5,6,7,8\na/2.jpg,0,0,9,19\n")


def test_split_without_sizes_and_boxes(tmp_path):
    folder = write_files(tmp_path, {"image_ids.txt": "x.jpg\n", "class_labels.txt": "x.jpg,7\n"})
    metadata = read_metadata(folder)
    assert metadata == WSOLMetadata(["x.jpg"], {"x.jpg": 7})
    assert not metadata.has_localization()
    write_metadata(tmp_path / "out", metadata)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["class_labels.txt", "image_ids.txt"]


def test_entries_for_unlisted_ids_are_ignored(tmp_path):
    metadata = read_metadata(valid_split(tmp_path, **{"image_ids.txt": "a/2.jpg\n"}))
    assert metadata.image_ids == ["a/2.jpg"] and list(metadata.boxes) == ["a/2.jpg"]


@pytest.mark.parametrize("name, text, message", [
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,3,4\n", r"class_labels.txt:2: expected 2 comma-separated fields"),
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,x\n", r"class_labels.txt:2: expected integers"),
    ("class_labels.txt", "a/1.jpg,0\n", r"class_labels.txt: no entry for 1 image id.*a/2.jpg"),
    ("class_labels.txt", "a/1.jpg,0\na/1.jpg,1\na/2.jpg,3\n", r"class_labels.txt:2: second entry"),
    ("image_sizes.txt", "a/1.jpg,500,375\n", r"image_sizes.txt: no entry .*a/2.jpg"),
    ("image_sizes.txt", "a/1.jpg,500,375\na/2.jpg,0,20\n", r"image_sizes.txt: image 'a/2.jpg' has size 0x20"),
    ("localization.txt", "a/1.jpg,1,2,30,40\n", r"localization.txt: no entry .*a/2.jpg"),
    ("localization.txt", "a/1.jpg,1,2,30,40\na/2.jpg,9,0,5,19\n", r"localization.txt:2: box"),
    ("localization.txt", "a/1.jpg,1,2,30.5,40\na/2.jpg,0,0,9,19\n", r"localization.txt:1: expected integers"),
    ("image_ids.txt", "a/1.jpg\na/1.jpg\n", r"image_ids.txt:2: duplicate image id"),
    ("image_ids.txt", "\n", r"image_ids.txt: no image ids"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, text, message):
    with pytest.raises(MetadataError, match=message):
        read_metadata(valid_split(tmp_path, **{name: text}))


def test_missing_required_file(tmp_path):
    with pytest.raises(MetadataError, match="image_ids.txt: not found"):
        read_metadata(tmp_path)
    (tmp_path / "image_ids.txt").write_text("x\n")
    with pytest.raises(MetadataError, match="class_labels.txt: not found"):
        read_metadata(tmp_path)


def test_write_rejects_ids_the_format_cannot_hold(tmp_path):
    with pytest.raises(MetadataError, match="comma"):
        write_metadata(tmp_path, WSOLMetadata(["a,b.jpg"], {"a,b.jpg": 0}))


# ---------------------------------------------------------------- CUB-200-2011
def save_image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def fake_cub(root: Path) -> Path:
    """Three images of two classes; image 2 is for training."""
    save_image(root / "images" / "001.A" / "a1.jpg", (8, 8))
    save_image(root / "images" / "001.A" / "a2.jpg", (10, 6))
    save_image(root / "images" / "002.B" / "b1.jpg", (12, 9))
    return write_files(root, {
        "images.txt": "1 001.A/a1.jpg\n2 001.A/a2.jpg\n3 002.B/b1.jpg\n",
        "image_class_labels.txt": "1 1\n2 1\n3 2\n",
        "train_test_split.txt": "1 0\n2 1\n3 0\n",
        "bounding_boxes.txt": "1 1.0 2.0 3.0 4.0\n2 0.0 0.0 10.0 6.0\n3 2.0 1.0 5.0 7.0\n",
        "classes.txt": "1 001.A\n2 002.B\n",
    })


def test_convert_cub(tmp_path):
    splits = convert_cub(fake_cub(tmp_path / "CUB_200_2011"), tmp_path / "meta")
    test_dir, train_dir = tmp_path / "meta" / "test", tmp_path / "meta" / "train"
    assert (test_dir / "image_ids.txt").read_text() == "001.A/a1.jpg\n002.B/b1.jpg\n"
    assert (test_dir / "class_labels.txt").read_text() == "001.A/a1.jpg,0\n002.B/b1.jpg,1\n"
    assert (test_dir / "image_sizes.txt").read_text() == "001.A/a1.jpg,8,8\n002.B/b1.jpg,12,9\n"
    # x, y, w, h -> x0 = x, y0 = y, x1 = x + w, y1 = y + h.
    assert (test_dir / "localization.txt").read_text() == "001.A/a1.jpg,1,2,4,6\n002.B/b1.jpg,2,1,7,8\n"
    train = read_metadata(train_dir)
    assert train == WSOLMetadata(["001.A/a2.jpg"], {"001.A/a2.jpg": 0}, {"001.A/a2.jpg": (10, 6)},
                                 {"001.A/a2.jpg": [(0, 0, 10, 6)]})
    assert splits["train"] == train and splits["test"] == read_metadata(test_dir)


def test_cub_layout_check_lists_what_is_missing(tmp_path):
    root = fake_cub(tmp_path / "cub")
    (root / "bounding_boxes.txt").unlink()
    (root / "train_test_split.txt").unlink()
    assert check_cub_layout(root) == [str(root / "train_test_split.txt"), str(root / "bounding_boxes.txt")]
    with pytest.raises(MetadataError, match="missing: .*train_test_split.txt, .*bounding_boxes.txt"):
        convert_cub(root, tmp_path / "meta")
    assert not (tmp_path / "meta").exists()


def test_cub_missing_image_or_entry_is_reported(tmp_path):
    root = fake_cub(tmp_path / "cub")
    (root / "images" / "002.B" / "b1.jpg").unlink()
    with pytest.raises(MetadataError, match=r"1 image\(s\) .* missing, e.g. .*002.B/b1.jpg"):
        convert_cub(root, tmp_path / "meta")
    root = fake_cub(tmp_path / "cub2")
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n")
    with pytest.raises(MetadataError, match=r"image_class_labels.txt: no entry for image number\(s\) 3"):
        convert_cub(root, tmp_path / "meta")


# ---------------------------------------------------------------- ILSVRC
VAL_XML = """<annotation><filename>{stem}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJECT_XML = ("<object><name>{wnid}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin>"
              "<xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>")


def val_xml(stem: str, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    body = "".join(OBJECT_XML.format(*box, wnid=wnid) for wnid, box in objects)
    return VAL_XML.format(stem=stem, w=size[0], h=size[1], objects=body)


def fake_ilsvrc(root: Path) -> tuple[Path, Path]:
    for relative in ("n02000002/n02000002_5.JPEG", "n01000001/n01000001_1.JPEG", "n01000001/n01000001_2.JPEG"):
        save_image(root / "train" / relative, (8, 8))
    (root / "train" / "n01000001" / "notes.txt").write_text("not an image")
    xml_dir = write_files(root / "Annotations" / "CLS-LOC" / "val", {
        "ILSVRC2012_val_00000001.xml": val_xml("ILSVRC2012_val_00000001", (500, 375),
                                               [("n02000002", (1, 2, 30, 40)), ("n02000002", (50, 60, 70, 80))]),
        "ILSVRC2012_val_00000002.xml": val_xml("ILSVRC2012_val_00000002", (8, 6), [("n01000001", (0, 0, 7, 5))]),
    })
    return root / "train", xml_dir


def test_convert_ilsvrc_with_sorted_wnids(tmp_path):
    train_dir, xml_dir = fake_ilsvrc(tmp_path / "ILSVRC")
    convert_ilsvrc(train_dir, xml_dir, tmp_path / "meta")
    train = read_metadata(tmp_path / "meta" / "train")
    assert train == WSOLMetadata(
        ["train/n01000001/n01000001_1.JPEG", "train/n01000001/n01000001_2.JPEG", "train/n02000002/n02000002_5.JPEG"],
        {"train/n01000001/n01000001_1.JPEG": 0, "train/n01000001/n01000001_2.JPEG": 0,
         "train/n02000002/n02000002_5.JPEG": 1})
    val_dir = tmp_path / "meta" / "val"
    assert (val_dir / "class_labels.txt").read_text() == (
        "val/ILSVRC2012_val_00000001.JPEG,1\nval/ILSVRC2012_val_00000002.JPEG,0\n")
    assert (val_dir / "image_sizes.txt").read_text() == (
        "val/ILSVRC2012_val_00000001.JPEG,500,375\nval/ILSVRC2012_val_00000002.JPEG,8,6\n")
    assert (val_dir / "localization.txt").read_text() == (
        "val/ILSVRC2012_val_00000001.JPEG,1,2,30,40\nval/ILSVRC2012_val_00000001.JPEG,50,60,70,80\n"
        "val/ILSVRC2012_val_00000002.JPEG,0,0,7,5\n")


def test_convert_ilsvrc_with_a_synset_list(tmp_path):
    train_dir, xml_dir = fake_ilsvrc(tmp_path / "ILSVRC")
    mapping = write_files(tmp_path, {"LOC_synset_mapping.txt": "n02000002 second, thing\nn01000001 first\n"})
    synsets = read_synsets(mapping / "LOC_synset_mapping.txt")
    assert synsets == ["n02000002", "n01000001"]
    splits = convert_ilsvrc(train_dir, xml_dir, tmp_path / "meta", synsets=synsets)
    assert splits["train"].class_labels["train/n02000002/n02000002_5.JPEG"] == 0
    assert splits["val"].class_labels == {"val/ILSVRC2012_val_00000001.JPEG": 0, "val/ILSVRC2012_val_00000002.JPEG": 1}
    with pytest.raises(MetadataError, match="not in the synset list: n01000001"):
        convert_ilsvrc(train_dir, xml_dir, tmp_path / "meta2", synsets=["n02000002"])


def test_ilsvrc_xml_problems_name_the_file(tmp_path):
    train_dir, xml_dir = fake_ilsvrc(tmp_path / "ILSVRC")
    bad = xml_dir / "ILSVRC2012_val_00000003.xml"
    bad.write_text(val_xml("x", (8, 8), [("n01000001", (0, 0, 1, 1)), ("n02000002", (0, 0, 2, 2))]))
    with pytest.raises(MetadataError, match="ILSVRC2012_val_00000003.xml: objects of several classes"):
        convert_ilsvrc(train_dir, xml_dir, tmp_path / "meta")
    bad.write_text(val_xml("x", (8, 8), [("n09999999", (0, 0, 1, 1))]))
    with pytest.raises(MetadataError, match="ILSVRC2012_val_00000003.xml: class n09999999 is not a training class"):
        convert_ilsvrc(train_dir, xml_dir, tmp_path / "meta")
    bad.write_text("<annotation><size><width>8</width></size></annotation>")
    with pytest.raises(MetadataError, match=r"ILSVRC2012_val_00000003.xml: <height> is None"):
        convert_ilsvrc(train_dir, xml_dir, tmp_path / "meta")
