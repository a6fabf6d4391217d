"""The voc12 setting end to end on real VOC 2012 photographs, with its real code paths.

ResNet-50 with dense MoANA, 21 classes, photographs at full size for every
inference stage (CAMs, CRF relation labels, IRNet's boundary map, the walk,
DeepLab v2 with flip and CRF), random weights and tiny schedules:
the point is that every stage runs on real image sizes and writes sound
outputs, not what the numbers are.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from irnet_moana import io
from irnet_moana.data.voc import LIST_DIR
from irnet_moana.pipeline import run_setting

# three classes in a landscape photograph, one in a portrait one; two classes in a portrait one
TRAIN = ["2007_000515", "2007_000549"]
VAL = ["2007_000129"]

TINY = [
    "data.train_list=train", "data.eval_list=first", "data.num_workers=0", "pseudo.list=train", "instance.list=train",
    "deeplab.train_list=train",
    # random weights need trainable BatchNorm (frozen, the first steps reach a NaN loss)
    "cam.weights=none", "cam.freeze_bn=false", "irn.weights=none", "deeplab.weights=none", "deeplab.freeze_bn=false",
    "cam.max_steps=1", "cam.batch_size=2", "cam.crop_size=128", "cam.resize_long=[128,160]", "cam.scales=[1.0]",
    "irn.epochs=1", "irn.batch_size=2", "irn.crop_size=128",
    # DeepLab v2 on ResNet-50: the ResNet-101 builder at fewer blocks (test_deeplab_model checks 101), at half
    # the cost of a full-size photograph's forward passes in training, evaluation and the figures
    "deeplab.depth=50", "deeplab.iterations=1", "deeplab.batch_size=2", "deeplab.crop_size=97",
    "deeplab.checkpoint_every=1",
    "deeplab.scales=[1.0]", "deeplab.eval_scales=[1.0]",
]


@pytest.fixture(scope="module")
def voc_subset(voc_sample, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc12_subset")
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        (root / folder).mkdir()
        for stem in TRAIN + VAL:
            shutil.copy(voc_sample / folder / f"{stem}{suffix}", root / folder / f"{stem}{suffix}")
    (root / LIST_DIR).mkdir(parents=True)
    (root / LIST_DIR / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (root / LIST_DIR / "val.txt").write_text("\n".join(VAL) + "\n")
    # seeds, pseudo masks and the figures on one of the two training images
    (root / LIST_DIR / "first.txt").write_text(TRAIN[0] + "\n")
    return root


@pytest.mark.slow
def test_voc12_setting_on_photographs(voc_subset, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_setting("voc12", [f"data.root={voc_subset}", *TINY], str(run_dir))

    for stem in TRAIN:
        shape = io.load_image(voc_subset / "JPEGImages" / f"{stem}.jpg").shape[:2]
        truth = io.load_label_png(voc_subset / "SegmentationClass" / f"{stem}.png")
        present = sorted(set(np.unique(truth)) - {0, 255})
        cam = io.load_npz(run_dir / "cams" / f"{stem}.npz", keys=("keys", "cam", "high_res"))
        # image-level labels come from the mask: one map per class present, at full size and stride 4
        assert list(cam["keys"] + 1) == present
        assert cam["high_res"].shape == (len(present), *shape)
        assert cam["cam"].shape == (len(present), (shape[0] + 3) // 4, (shape[1] + 3) // 4)
        assert np.isfinite(cam["high_res"]).all() and cam["high_res"].max() <= 1.0 + 1e-6
        for folder in ("ir_labels", "pseudo_masks"):
            label = io.load_label_png(run_dir / folder / f"{stem}.png")
            assert label.shape == shape and set(np.unique(label)) <= {0, *present, 255}
        for folder in ("instance_masks", "instance_baseline"):
            found = io.load_instances(run_dir / folder / stem)
            assert found.masks.shape[1:] == shape and set(found.labels.tolist()) <= set(present)
            assert np.isfinite(found.scores).all() and (found.scores >= 0).all()
    coco = io.read_json(run_dir / "instance_masks_coco.json")
    assert [image["file_name"] for image in coco["images"]] == [f"{stem}.jpg" for stem in TRAIN]
    assert len(coco["categories"]) == 20
    for stem in VAL:
        shape = io.load_image(voc_subset / "JPEGImages" / f"{stem}.jpg").shape[:2]
        for folder in ("pred_ss", "pred_msf", "pred_msf_crf"):
            prediction = io.load_label_png(run_dir / "deeplab" / folder / f"{stem}.png")
            assert prediction.shape == shape and prediction.max() <= 20
    for name in ("seed mIoU, MoANA", "pseudo-mask mIoU", "DeepLab val mIoU", "DeepLab val mIoU, MS+flip+CRF"):
        assert 0.0 <= summary["metrics"][name] <= 100.0
