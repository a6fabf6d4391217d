"""COCO export of instance pseudo labels: read back with pycocotools (and torchvision) exactly as saved."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402

from irnet_moana import io  # noqa: E402
from irnet_moana.coco_export import export_coco  # noqa: E402
from irnet_moana.data.voc import VOC_CLASSES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PERSON, DOG, AEROPLANE, TV = 15, 12, 1, 20  # 1-based VOC labels
# pycocotools' decode passes copy=False to its own array type, which numpy 2 warns about; not this code's doing
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _mask(shape, *boxes):
    """Union of [r0:r1, c0:c1] rectangles."""
    mask = np.zeros(shape, bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def write_instances(folder: Path) -> dict:
    """Three images: a (five instances), b (none), c (one); returns what was saved with the expected boxes."""
    shape_a = (20, 30)
    ring = _mask(shape_a, (12, 18, 20, 28))
    ring[14:16, 22:24] = False  # a hole, which a polygon export would lose
    a = [  # (mask, label, score, bbox [x, y, w, h] by hand)
        (_mask(shape_a, (2, 10, 3, 11)), PERSON, 0.9, [3, 2, 8, 8]),
        (_mask(shape_a, (2, 10, 11, 16)), PERSON, 0.8, [11, 2, 5, 8]),  # touches the first one, same class
        (ring, DOG, 0.7, [20, 12, 8, 6]),
        (_mask(shape_a, (19, 20, 29, 30)), DOG, 0.0, None),  # IRNet's zero-score fragment
        (_mask(shape_a, (0, 1, 0, 1)), AEROPLANE, 0.3, [0, 0, 1, 1]),
    ]
    c = [(_mask((12, 10), (5, 12, 6, 10), (8, 10, 2, 6)), TV, 0.95, [2, 5, 8, 7])]  # an L, to the image edge
    saved = {"a": (shape_a, a), "b": ((16, 24), []), "c": ((12, 10), c)}
    for stem, (shape, items) in saved.items():
        masks = np.array([m for m, *_ in items], bool).reshape(len(items), *shape)
        io.save_instances(folder / stem, io.Instances(masks, np.array([l for _, l, *_ in items], np.int64),
                                                      np.array([s for _, _, s, _ in items], np.float64)))
    return saved


@pytest.fixture
def instances(tmp_path):
    folder = tmp_path / "instances"
    return folder, write_instances(folder)


def test_round_trip_through_pycocotools(instances, tmp_path, capsys):
    folder, saved = instances
    out = tmp_path / "coco" / "annotations.json"
    summary = export_coco(folder, ["a", "b", "c"], VOC_CLASSES, out)
    assert not list(out.parent.glob(".*"))  # written atomically: no temporary left behind
    coco = COCO(str(out))
    capsys.readouterr()  # COCO() prints its progress

    assert coco.getImgIds() == [1, 2, 3]
    for image_id, (stem, (shape, _)) in enumerate(saved.items(), start=1):
        image = coco.loadImgs(image_id)[0]
        assert (image["file_name"], image["height"], image["width"]) == (f"{stem}.jpg", *shape)
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(VOC_CLASSES, 1))

    for image_id, (shape, items) in enumerate(saved.values(), start=1):
        kept = [item for item in items if item[2] > 0]  # the zero-score fragment is left out
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(kept)
        for ann, (mask, label, score, bbox) in zip(anns, kept):
            assert ann["category_id"] == label and ann["iscrowd"] == 0 and ann["score"] == pytest.approx(score)
            decoded = coco.annToMask(ann)
            assert decoded.shape == shape and np.array_equal(decoded.astype(bool), mask)
            assert ann["area"] == mask.sum() and isinstance(ann["area"], int)
            assert ann["bbox"] == bbox
    assert coco.getAnnIds(imgIds=2) == []  # image b keeps its entry without annotations
    assert sorted(a["id"] for a in coco.dataset["annotations"]) == [1, 2, 3, 4, 5]

    assert summary["images"] == 3 and summary["annotations"] == 5 and summary["path"] == str(out)
    assert summary["images_without_annotations"] == 1 and summary["left_out_low_score"] == 1
    assert {k: v for k, v in summary["per_category"].items() if v} == {"aeroplane": 1, "dog": 1, "person": 2,
                                                                       "tvmonitor": 1}


def test_min_score_is_respected(instances, tmp_path):
    folder, _ = instances
    out = tmp_path / "ann.json"
    summary = export_coco(folder, ["a"], VOC_CLASSES, out, min_score=0.7)
    anns = json.loads(out.read_text())["annotations"]
    # scores <= 0.7 are out: the dog (exactly 0.7), the aeroplane (0.3) and the fragment (0)
    assert [(a["category_id"], a["score"]) for a in anns] == [(PERSON, 0.9), (PERSON, 0.8)]
    assert summary["left_out_low_score"] == 3


def test_torchvision_reads_the_masks(instances, tmp_path):
    """What torchvision's Mask R-CNN would get: boxes (XYXY) and masks from CocoDetection's v2 wrapper."""
    datasets = pytest.importorskip("torchvision.datasets")
    folder, saved = instances
    images = tmp_path / "JPEGImages"
    images.mkdir()
    for stem, (shape, _) in saved.items():
        Image.new("RGB", shape[::-1]).save(images / f"{stem}.jpg")
    out = tmp_path / "annotations.json"
    export_coco(folder, list(saved), VOC_CLASSES, out)
    dataset = datasets.wrap_dataset_for_transforms_v2(datasets.CocoDetection(str(images), str(out)),
                                                      target_keys={"boxes", "labels", "masks"})
    _, target = dataset[0]
    kept = [item for item in saved["a"][1] if item[2] > 0]
    assert target["labels"].tolist() == [label for _, label, _, _ in kept]
    assert np.array_equal(target["masks"].numpy().astype(bool), np.array([m for m, *_ in kept]))
    assert target["boxes"].tolist() == [[x, y, x + w, y + h] for *_, (x, y, w, h) in kept]
    _, empty = dataset[1]
    assert "masks" not in empty  # an image without instances is a background-only sample


def test_missing_instance_file_names_it(instances, tmp_path):
    folder, _ = instances
    (folder / "c.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"c\.json.*make_instance_masks\.py"):
        export_coco(folder, ["a", "c"], VOC_CLASSES, tmp_path / "ann.json")
    with pytest.raises(FileNotFoundError, match=r"zzz\.png and .*zzz\.json"):
        export_coco(folder, ["zzz"], VOC_CLASSES, tmp_path / "ann.json")
    assert not (tmp_path / "ann.json").exists()


@pytest.fixture
def cli(monkeypatch):
    """export_coco's script module, imported the way the script runs (pipelines/ on the path)."""
    monkeypatch.syspath_prepend(str(REPO / "pipelines"))
    return importlib.import_module("export_coco")


def test_cli_end_to_end(instances, tmp_path, cli, capsys):
    folder, _ = instances
    out = folder / "annotations.json"  # inside the instance folder: a rerun must not take it for an image
    for _ in range(2):
        summary = cli.main(["--instances", str(folder), "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "3 images (1 without annotations), 5 annotations" in printed
    data = json.loads(out.read_text())
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg", "c.jpg"] and summary["annotations"] == 5

    # a list, a dataset's classes.txt and a score threshold
    (tmp_path / "ids.txt").write_text("c\na\n")
    names = [f"class{k}" for k in range(1, 21)]
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "classes.txt").write_text("\n".join(names) + "\n")
    cli.main(["--instances", str(folder), "--out", str(tmp_path / "sub.json"), "--list", str(tmp_path / "ids.txt"),
              "--classes", str(tmp_path / "root"), "--min-score", "0.5"])
    data = json.loads((tmp_path / "sub.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["c.jpg", "a.jpg"]
    assert [c["name"] for c in data["categories"]] == names
    assert [(a["image_id"], a["category_id"]) for a in data["annotations"]] == [(1, TV), (2, PERSON), (2, PERSON),
                                                                              (2, DOG)]


def test_cli_missing_file_is_one_clear_line(instances, tmp_path, cli, capsys, monkeypatch):
    folder, _ = instances
    (folder / "b.png").unlink()
    monkeypatch.setattr(sys, "argv", ["export_coco.py", "--instances", str(folder), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main_guard(cli.main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "b.png" in err and "make_instance_masks.py" in err
