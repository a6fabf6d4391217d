"""tools/compare_segmenters.py: every architecture x label source x seed trained by the pipeline's stages,
summarised as mean ± std, resumable, with the networks' costs."""
from __future__ import annotations

import json
import statistics

import pytest

import compare_segmenters as cmp
from irnet_moana import io
from irnet_moana.config import load_config
from irnet_moana.outputs import DEEPLAB, DEEPLAB_TRAIN_INFO, MODEL

TINY_DEEPLAB = ["deeplab.iterations=2", "deeplab.batch_size=2", "deeplab.crop_size=32", "deeplab.checkpoint_every=2",
                "deeplab.eval_scales=[1.0]", "deeplab.crf=false", "deeplab.depth=18", "deeplab.amp=none"]


@pytest.mark.slow
def test_compares_label_sources_over_seeds_and_resumes(tiny_demo_run, tiny_demo_root, tmp_path, capsys):
    out = tmp_path / "segmenters"
    overrides = [f"data.root={tiny_demo_root}", *TINY_DEEPLAB]
    argv = ["demo", "--run-dir", str(tiny_demo_run), "--out", str(out), "--arch", "DeepLabV3Plus",
            "--seeds", "0", "1", "--throughput-steps", "1", *[arg for o in overrides for arg in ("--set", o)]]
    result = cmp.main(argv)

    assert [(r["arch"], r["labels"]) for r in result["rows"]] == [("DeepLabV3Plus", "pseudo"), ("DeepLabV3Plus", "gt")]
    for row in result["rows"]:
        run_dirs = [out / f"{row['arch']}-{row['labels']}-seed{s}" for s in (0, 1)]
        info = io.read_json(run_dirs[0] / DEEPLAB / DEEPLAB_TRAIN_INFO)
        expected = tiny_demo_run / "pseudo_masks" if row["labels"] == "pseudo" else tiny_demo_root / "SegmentationClass"
        assert info["labels"] == str(expected.resolve())
        for setting in ("single_scale", "multi_scale_flip"):
            per_seed = [io.read_json(d / "metrics" / "eval_deeplab.json")[setting]["miou"] for d in run_dirs]
            assert row[setting]["per_seed"] == per_seed
            assert row[setting]["mean"] == statistics.fmean(per_seed)
            assert row[setting]["std"] == statistics.stdev(per_seed)
        assert row["multi_scale_flip_crf"]["mean"] is None  # deeplab.crf=false: no CRF figures
    assert result["pseudo_mask_miou"] is None  # the fixture run has not scored its pseudo masks
    network = result["networks"]["DeepLabV3Plus"]
    assert network["network"] == "DeepLabV3Plus (resnet18)" and network["infer_image_size"] == [64, 64]
    assert json.loads((out / "comparison.json").read_text())["rows"] == result["rows"]
    assert "| DeepLabV3Plus (resnet18) | gt |" in (out / "report.md").read_text()

    # a rerun keeps every finished training
    model = out / "DeepLabV3Plus-pseudo-seed0" / DEEPLAB / MODEL
    before = model.stat().st_mtime_ns
    capsys.readouterr()
    assert cmp.main(argv)["rows"] == result["rows"]
    assert model.stat().st_mtime_ns == before


def test_throughput_names_and_sizes_each_network():
    cfg = load_config("demo", TINY_DEEPLAB)
    networks = cmp.throughput(cfg, ["v2", "DeepLabV3Plus"], num_classes=3, image_size=(40, 48), steps=1)
    assert {arch: n["network"] for arch, n in networks.items()} == {
        "v2": "DeepLab v2 (ResNet-18)", "DeepLabV3Plus": "DeepLabV3Plus (resnet18)"}
    # ResNet-18's 11.2 M without its classifier, plus each head
    assert all(11e6 < n["parameters"] < 13e6 and n["train_images_per_s"] > 0 and n["infer_images_per_s"] > 0
               and n["precision"] == "fp32" for n in networks.values())


def test_refuses_a_run_without_pseudo_masks(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cmp.main(["demo", "--run-dir", str(tmp_path)])
    assert "pseudo_masks does not exist" in capsys.readouterr().err


def test_unknown_architecture_is_refused_with_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cmp.main(["demo", "--run-dir", str(tmp_path), "--arch", "DeepLabV4"])
    assert "invalid choice: 'DeepLabV4'" in capsys.readouterr().err
