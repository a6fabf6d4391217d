import shutil

import numpy as np
import pytest

from irnet_moana import io
from irnet_moana.data.voc import (VOC_CLASSES, DatasetError, VOCData, build_train_aug, check_layout, labels_from_mask,
                                  labels_from_xml, training_stems)
from irnet_moana.evaluation import score_mask_folder
from irnet_moana.metrics import ConfusionMatrix

XML = """<annotation><filename>a.jpg</filename><size><width>4</width><height>3</height><depth>3</depth></size>
<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>
<object><name>person</name><difficult>0</difficult></object>
<object><name>dog</name></object></annotation>"""


def test_labels_from_xml_counts_difficult(tmp_path):
    (tmp_path / "a.xml").write_text(XML)
    labels = labels_from_xml(tmp_path / "a.xml", list(VOC_CLASSES))
    assert np.flatnonzero(labels).tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]


def test_labels_from_mask_ignores_void():
    mask = np.array([[0, 3, 255], [15, 15, 0]], np.uint8)
    assert np.flatnonzero(labels_from_mask(mask, 20)).tolist() == [2, 14]


def make_root(tmp_path, train, val, aug=()):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(train) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(val) + "\n")
    if aug:
        (root / "SegmentationClassAug").mkdir()
        for stem in aug:
            io.save_label_png(root / "SegmentationClassAug" / f"{stem}.png", np.zeros((2, 2), np.uint8))
    return root


def test_train_aug_is_sbd_plus_train_minus_val(tmp_path):
    root = make_root(tmp_path, ["t1", "t2"], ["v1", "v2"], aug=["s1", "s2", "v1", "t1"])
    assert build_train_aug(root) == ["s1", "s2", "t1", "t2"]
    assert build_train_aug(root, (["s3", "v2"], ["s4"])) == ["s3", "s4", "t1", "t2"]


def test_layout_problems_listed(tmp_path):
    assert check_layout(tmp_path / "nowhere") == [f"dataset root {tmp_path / 'nowhere'} does not exist"]
    (tmp_path / "r").mkdir()
    problems = check_layout(tmp_path / "r")
    assert len(problems) == 4 and any("JPEGImages" in p for p in problems)


def test_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="prepare_data.py voc12"):
        VOCData(tmp_path / "missing")


def test_listed_image_absent_and_empty_list(tmp_path):
    root = make_root(tmp_path, ["t1"], ["v1"])
    data = VOCData(root)
    with pytest.raises(DatasetError, match="t1.*listed but absent"):
        data.load_image("t1")
    (root / "ImageSets/Segmentation/empty.txt").write_text("\n")
    with pytest.raises(DatasetError, match="empty"):
        data.split("empty")


def test_bad_mask_values_and_size(tmp_path):
    root = make_root(tmp_path, ["t1"], ["v1"])
    io.save_label_png(root / "SegmentationClass/t1.png", np.array([[0, 21], [255, 1]], np.uint8))
    data = VOCData(root)
    with pytest.raises(DatasetError, match=r"t1.png: label values \[21\]"):
        data.load_mask("t1")
    io.save_label_png(root / "SegmentationClass/t1.png", np.zeros((2, 3), np.uint8))
    with pytest.raises(DatasetError, match="t1.png: mask size 3x2 differs from its image 4x4"):
        data.load_mask("t1", (4, 4, 3))


def test_images_without_class_excluded(tmp_path, caplog):
    root = make_root(tmp_path, ["t1", "t2"], ["v1"])
    io.save_label_png(root / "SegmentationClass/t1.png", np.array([[0, 1]], np.uint8))
    io.save_label_png(root / "SegmentationClass/t2.png", np.array([[0, 255]], np.uint8))
    import logging

    kept, labels = training_stems(VOCData(root), ["t1", "t2"], logging.getLogger("t"))
    assert kept == ["t1"] and labels["t2"].sum() == 0
    assert "without any class" in caplog.text
    with pytest.raises(DatasetError, match="no training image"):
        training_stems(VOCData(root), ["t2"])


def test_real_sample_loads(voc_sample, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(voc_sample, root)
    data = VOCData(root)
    stems = data.split("train") + data.split("val")
    assert len(data.split("train")) == 26 and len(data.split("val")) == 22
    labels = data.image_labels(stems)
    assert (root / "cls_labels.npz").is_file()  # cached for the next run
    for stem in stems:
        image = data.load_image(stem)
        mask = data.load_mask(stem, image.shape)
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert labels[stem].sum() >= 1
        assert np.array_equal(np.flatnonzero(labels[stem]) + 1, np.setdiff1d(np.unique(mask), [0, 255]))
    assert 255 in mask


def test_real_sample_scores(voc_sample, tmp_path):
    gt_dir = voc_sample / "SegmentationClass"
    names = ["background", *VOC_CLASSES]
    assert score_mask_folder(gt_dir, gt_dir, names)["miou"] == 100.0
    # perturbed copy: every object pixel of every other image predicted as background
    pred_dir = tmp_path / "pred"
    reference = ConfusionMatrix(21)
    for i, path in enumerate(sorted(gt_dir.glob("*.png"))):
        gt = io.load_label_png(path)
        pred = gt.copy()
        if i % 2 == 0:
            pred[(gt > 0) & (gt < 255)] = 0
        io.save_label_png(pred_dir / path.name, pred)
        reference.update(pred, gt)
    # independent computation: per-class TP/FP/FN counted with boolean masks
    tp = np.zeros(21)
    fp = np.zeros(21)
    fn = np.zeros(21)
    for path in sorted(gt_dir.glob("*.png")):
        gt = io.load_label_png(path)
        pred = io.load_label_png(pred_dir / path.name)
        valid = gt != 255
        for c in range(21):
            tp[c] += np.sum((pred == c) & (gt == c) & valid)
            fp[c] += np.sum((pred == c) & (gt != c) & valid)
            fn[c] += np.sum((pred != c) & (gt == c) & valid)
    union = tp + fp + fn
    expected = 100 * np.mean(tp[union > 0] / union[union > 0])
    result = score_mask_folder(pred_dir, gt_dir, names)
    assert result["miou"] == pytest.approx(expected, abs=0.01)
    assert result["miou"] < 100.0


def test_missing_prediction_named(voc_sample, tmp_path):
    with pytest.raises(DatasetError, match="prediction .*2007_000032.png is missing"):
        score_mask_folder(tmp_path, voc_sample / "SegmentationClass", ["background", *VOC_CLASSES])
