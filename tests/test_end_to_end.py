"""The whole demo pipeline on a tiny configuration, as `run_all.sh demo` runs it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from irnet_moana import io
from irnet_moana.data.synthetic import generate_voc_demo
from irnet_moana.instance_eval import touching_same_class_stems
from irnet_moana.pipeline import run_setting

TINY = [
    "cam.epochs=1", "cam.batch_size=4", "cam.crop_size=64", "cam.resize_long=[48,80]", "cam.scales=[1.0,0.5]",
    "irn.epochs=1", "irn.batch_size=4", "irn.crop_size=64", "pseudo.exp_times=4",
    "deeplab.iterations=2", "deeplab.batch_size=2", "deeplab.crop_size=64", "deeplab.eval_scales=[1.0]",
    "deeplab.checkpoint_every=1", "data.num_workers=0",
]


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path, capsys):
    root = tmp_path / "demo"
    generate_voc_demo(root, num_train=8, num_train_aug_extra=4, num_val=4, image_size=64)
    run_dir = tmp_path / "run"
    summary = run_setting("demo", [f"data.root={root}", *TINY], str(run_dir))

    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    train_aug = (root / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    for stem in train_aug:
        cam = io.load_npz(run_dir / "cams" / f"{stem}.npz", keys=("keys", "cam", "high_res"))
        assert cam["high_res"].shape[1:] == (64, 64) and cam["cam"].shape[1:] == (16, 16)
        assert cam["high_res"].max() <= 1.0 + 1e-6
        for folder in ("ir_labels", "pseudo_masks"):
            label = io.load_label_png(run_dir / folder / f"{stem}.png")
            assert label.shape == (64, 64) and set(np.unique(label)) <= set(range(7)) | {255}
        for folder in ("instance_masks", "instance_baseline"):
            found = io.load_instances(run_dir / folder / stem)
            assert found.masks.shape[1:] == (64, 64) and set(found.labels.tolist()) <= set(range(1, 7))
    for stem in train:  # the baseline only computes CAMs for the evaluation list
        assert io.output_is_valid(run_dir / "plain_cam" / "cams" / f"{stem}.npz")
    for stem in val:
        assert io.load_label_png(run_dir / "deeplab" / "pred_msf" / f"{stem}.png").shape == (64, 64)
    for model in ("cam", "irn", "deeplab", "plain_cam/cam"):
        assert (run_dir / model / "model.pth").is_file()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == summary
    for name in ("seed mIoU, plain CAM", "seed mIoU, MoANA", "pseudo-mask mIoU", "DeepLab val mIoU",
                 "instance mAP^r 50, IRNet", "instance mAP^r 75, semantic components"):
        assert 0.0 <= metrics["metrics"][name] <= 100.0
    assert {"train_cam", "make_cams", "train_irn", "make_pseudo_masks", "make_instance_masks",
            "eval_instances"} <= set(metrics["stage_seconds"])
    # the generated train images include touching objects of one class, scored on their own as well
    touching = json.loads((run_dir / "metrics" / "eval_instances.json").read_text())["touching_same_class"]
    assert touching["num_images"] == len(touching_same_class_stems(root, train)) > 0
    for name in ("IRNet", "semantic components"):
        assert 0.0 <= metrics["metrics"][f"instance mAP^r 50 touching same-class, {name}"] <= 100.0
    report = (run_dir / "report.md").read_text()
    assert "| pseudo-mask mIoU |" in report and "figures/pipeline_examples.png" in report
    assert "summary (demo" in capsys.readouterr().out

    # a second invocation finds everything done and gives the same table
    again = run_setting("demo", [f"data.root={root}", *TINY], str(run_dir))
    assert again["metrics"] == summary["metrics"]
