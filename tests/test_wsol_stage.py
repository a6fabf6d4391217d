"""The WSOL stages on a tiny synthetic CUB set: datasets, training with resume, evaluation, figure, CLIs."""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from irnet_moana.config import load_config
from irnet_moana.data.synthetic import generate_cub_demo
from irnet_moana.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from irnet_moana.figures import wsol_examples
from irnet_moana.data.voc import DatasetError
from irnet_moana.io import load_image
from irnet_moana.models.build import wsol_net
from irnet_moana.stages import eval_wsol, train_wsol
from irnet_moana.precision import choose
from irnet_moana.training import autocast, load_weights
from irnet_moana.wsol.boxes import normalize_scoremap
from irnet_moana.wsol.data import WSOLTestDataset, WSOLTrainDataset
from irnet_moana.wsol.evaluation import accumulate_scoremaps, evaluate_scoremap_dir, scoremap_path
from irnet_moana.wsol.metadata import convert_cub, read_metadata

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
    """2 classes of 64 px images: 8 train, 4 test, metadata under <root>/metadata."""
    root = tmp_path_factory.mktemp("cub")
    generate_cub_demo(root, num_classes=2, image_size=64, train_per_class=4, test_per_class=2)
    convert_cub(root, root / "metadata")
    return root


def tiny_overrides(cub: Path, run_dir: Path) -> list[str]:
    return [f"run_dir={run_dir}", f"wsol.metadata_root={cub / 'metadata'}", f"wsol.image_root={cub / 'images'}",
            "wsol.num_classes=2", "wsol.backbone=resnet18", "wsol.weights=none", "wsol.moana_view_conv=depthwise",
            "wsol.resize_size=72", "wsol.crop_size=64", "wsol.test_size=64", "wsol.batch_size=8", "wsol.epochs=2",
            "wsol.lr=0.01", "wsol.lr_decay_every=1", "wsol.eval_batch_size=3", "data.num_workers=0"]


def tiny_config(cub: Path, run_dir: Path, *extra: str) -> dict:
    return load_config(None, [*tiny_overrides(cub, run_dir), *extra])


@pytest.fixture(scope="module")
def trained(cub, tmp_path_factory) -> Path:
    """A run directory holding a model trained for 2 steps (8 images, batch 8, 2 epochs)."""
    run_dir = tmp_path_factory.mktemp("run")
    train_wsol.run(tiny_config(cub, run_dir))
    return run_dir


@pytest.fixture(scope="module")
def evaluated(cub, trained) -> dict:
    return eval_wsol.run(tiny_config(cub, trained))


def normalized(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


# ---------------------------------------------------------------- datasets
def test_train_sample_is_a_crop_of_the_resized_image_maybe_flipped(cub):
    meta = read_metadata(cub / "metadata" / "train")
    dataset = WSOLTrainDataset(cub / "images", meta, 2, seed=3, resize_size=72, crop_size=64)
    sample = dataset[(5, 1)]
    image_id = meta.image_ids[5]
    assert sample["name"] == image_id and sample["label"].dtype == torch.int64
    assert int(sample["label"]) == meta.class_labels[image_id] == 1
    assert sample["image"].shape == (3, 64, 64)
    resized = normalized(cv2.resize(load_image(cub / "images" / image_id), (72, 72), interpolation=cv2.INTER_LINEAR))
    got = sample["image"].numpy()
    windows = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
               if np.array_equal(got, (resized[:, :, ::-1] if flip else resized)[:, dy:dy + 64, dx:dx + 64])]
    assert len(windows) >= 1
    # The augmentation is a function of (seed, epoch, index) only.
    assert torch.equal(dataset[(5, 1)]["image"], sample["image"])


def test_test_sample_is_the_whole_image_resized(cub):
    meta = read_metadata(cub / "metadata" / "test")
    dataset = WSOLTestDataset(cub / "images", meta, 2, test_size=48)
    assert len(dataset) == 4
    sample = dataset[3]
    image_id = meta.image_ids[3]
    expected = normalized(cv2.resize(load_image(cub / "images" / image_id), (48, 48), interpolation=cv2.INTER_LINEAR))
    assert sample["name"] == image_id and int(sample["label"]) == meta.class_labels[image_id]
    np.testing.assert_allclose(sample["image"].numpy(), expected, atol=1e-6)


def test_corrupt_training_image_is_skipped_or_fails(cub, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(cub / "images", images)
    meta = read_metadata(cub / "metadata" / "train")
    (images / meta.image_ids[2]).write_bytes(b"\xff\xd8 truncated")
    sample = WSOLTrainDataset(images, meta, 2, 0, 72, 64)[(2, 0)]
    # The slot is filled by the next readable image (with its own label) and the skip is reported.
    assert sample["skipped"] == [meta.image_ids[2]] and sample["name"] == meta.image_ids[3]
    assert int(sample["label"]) == meta.class_labels[meta.image_ids[3]] and sample["image"].shape == (3, 64, 64)
    with pytest.raises(DatasetError, match="skip_corrupt"):
        WSOLTrainDataset(images, meta, 2, 0, 72, 64, skip_corrupt=False)[(2, 0)]


def test_labels_outside_num_classes_are_rejected(cub):
    with pytest.raises(DatasetError, match="num_classes"):
        WSOLTestDataset(cub / "images", read_metadata(cub / "metadata" / "test"), 1, 64)


# ---------------------------------------------------------------- training
def test_training_writes_final_weights_and_resume_matches(cub, trained, tmp_path, monkeypatch):
    state = torch.load(trained / "wsol" / "model.pth", weights_only=True)
    assert state["steps"] == 2 and state["skipped_images"] == []
    # An interrupted run: stopped after epoch 1 (its checkpoint), then resumed through the CLI.
    run_dir = tmp_path / "resumed"
    train_wsol.run(tiny_config(cub, run_dir, "wsol.epochs=1"))
    (run_dir / "wsol" / "model.pth").unlink()
    config = tmp_path / "tiny.yaml"
    config.write_text("wsol:\n  num_classes: 2\n")
    monkeypatch.syspath_prepend(str(REPO / "pipelines"))
    cli = importlib.import_module("train_wsol")
    cli.main(["--config", str(config), "--run-dir", str(run_dir), "--resume",
              *[arg for o in tiny_overrides(cub, run_dir)[1:] for arg in ("--set", o)]])
    resumed = torch.load(run_dir / "wsol" / "model.pth", weights_only=True)
    assert resumed["steps"] == 2
    assert resumed["model"].keys() == state["model"].keys()
    for name, tensor in state["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    # A finished run is not retrained.
    mtime = (run_dir / "wsol" / "model.pth").stat().st_mtime_ns
    train_wsol.run(tiny_config(cub, run_dir))
    assert (run_dir / "wsol" / "model.pth").stat().st_mtime_ns == mtime


def test_param_groups_follow_the_recipe(cub, tmp_path):
    cfg = tiny_config(cub, tmp_path, "wsol.lr=0.002", "wsol.new_lr_mult=10.0")
    model = wsol_net(cfg)
    groups = {g["name"]: g for g in model.param_groups(0.002, 0.02, 5e-4)}
    assert groups["backbone"]["lr"] == 0.002 and groups["new"]["lr"] == 0.02
    assert model.head.moana is not None and model.output_stride == 8


# ---------------------------------------------------------------- evaluation
def test_eval_writes_normalised_224_maps_of_the_gt_class(cub, trained, evaluated):
    meta = read_metadata(cub / "metadata" / "test")
    maps_dir = trained / "wsol" / "scoremaps" / "test"
    cfg = tiny_config(cub, trained)
    model = wsol_net(cfg, weights="none")
    load_weights(trained / "wsol" / "model.pth", model)
    model.eval()
    dataset = WSOLTestDataset(cub / "images", meta, 2, 64)
    predictions = json.loads((trained / "wsol" / "predictions" / "test.json").read_text())
    assert list(predictions) == meta.image_ids
    # The reference runs at the precision the stage chose on this CPU (bf16 where it is native).
    chosen = json.loads((trained / "precision.json").read_text())["eval_wsol"]["precision"]
    precision = choose(chosen, torch.device("cpu"))
    # In the stage's batches (wsol.eval_batch_size), so that the same kernels run on any CPU.
    for group in eval_wsol.batches(range(len(meta.image_ids)), cfg["wsol"]["eval_batch_size"]):
        samples = [dataset[index] for index in group]
        images = torch.stack([sample["image"] for sample in samples])
        labels = torch.stack([sample["label"] for sample in samples])
        with torch.no_grad(), autocast(torch.device("cpu"), precision):
            cams = model.cams(images, labels).float().numpy()
            logits = model(images).float()
        for row, index in enumerate(group):
            image_id = meta.image_ids[index]
            saved = np.load(scoremap_path(maps_dir, image_id))
            assert saved.shape == (224, 224) and saved.dtype == np.float32
            assert saved.min() == 0.0 and saved.max() == 1.0
            np.testing.assert_allclose(saved, normalize_scoremap(cams[row]), atol=1e-5)
            assert predictions[image_id] == logits[row].argsort(descending=True).tolist()


def test_eval_metrics_come_from_the_saved_maps(cub, trained, evaluated):
    saved = json.loads((trained / "metrics" / "eval_wsol.json").read_text())
    assert saved == json.loads(json.dumps(evaluated))
    meta_root = cub / "metadata"
    # No "val" split: the threshold is chosen on the evaluated split, and the output says so.
    assert evaluated["threshold_split"] == "test" and evaluated["split"] == "test"
    expected = evaluate_scoremap_dir(trained / "wsol" / "scoremaps" / "test", meta_root / "test",
                                     predictions_path=trained / "wsol" / "predictions" / "test.json")
    for key in ("MaxBoxAccV2", "MaxBoxAcc", "gt_known_loc", "top1_loc", "top5_loc", "threshold", "num_images"):
        assert evaluated[key] == expected[key], key
    assert evaluated["threshold"] == accumulate_scoremaps(trained / "wsol" / "scoremaps" / "test",
                                                          read_metadata(meta_root / "test")).best_threshold()
    # With two classes the top five hold every class: Top-5 Loc is GT-known Loc.
    assert evaluated["top5_loc"] == evaluated["gt_known_loc"] and evaluated["top1_loc"] <= evaluated["gt_known_loc"]
    baseline = evaluated["centre_baseline"]
    assert baseline["threshold_split"] == "test" and baseline["num_images"] == 4
    assert baseline["gt_known_loc"] == evaluate_scoremap_dir(None, meta_root / "test")["gt_known_loc"]
    assert evaluated["moana"] is True and evaluated["backbone"] == "resnet18"


def test_eval_rerun_skips_existing_maps_and_redoes_missing_batches(cub, trained, evaluated, monkeypatch):
    meta = read_metadata(cub / "metadata" / "test")
    maps_dir = trained / "wsol" / "scoremaps" / "test"
    paths = [scoremap_path(maps_dir, i) for i in meta.image_ids]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    with monkeypatch.context() as patch:
        # Nothing is missing, so the network must not even be loaded.
        patch.setattr(eval_wsol, "load_weights", lambda *a: pytest.fail("model loaded although all maps exist"))
        again = eval_wsol.run(tiny_config(cub, trained))
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert again == evaluated
    # Batches of 3: images 0-2 and 3. A missing map redoes only its batch; a corrupt one too.
    paths[3].unlink()
    redone = eval_wsol.run(tiny_config(cub, trained))
    assert [p.stat().st_mtime_ns for p in paths[:3]] == mtimes[:3]
    assert redone == evaluated
    paths[0].write_bytes(b"not a numpy file")
    assert eval_wsol.run(tiny_config(cub, trained)) == evaluated
    assert paths[0].stat().st_mtime_ns != mtimes[0] and np.load(paths[0]).shape == (224, 224)


def test_threshold_chosen_on_a_held_out_split(cub, trained, tmp_path):
    meta_root = tmp_path / "metadata"
    shutil.copytree(cub / "metadata" / "test", meta_root / "test")
    shutil.copytree(cub / "metadata" / "train", meta_root / "val")
    run_dir = tmp_path / "run"
    (run_dir / "wsol").mkdir(parents=True)
    shutil.copy(trained / "wsol" / "model.pth", run_dir / "wsol" / "model.pth")
    result = eval_wsol.run(tiny_config(cub, run_dir, f"wsol.metadata_root={meta_root}", "wsol.num_examples=0"))
    assert result["threshold_split"] == "val" and result["centre_baseline"]["threshold_split"] == "val"
    chooser = accumulate_scoremaps(run_dir / "wsol" / "scoremaps" / "val", read_metadata(meta_root / "val"))
    assert result["threshold"] == chooser.best_threshold()
    assert not (run_dir / "figures").exists()
    # Other test-time settings (or other weights) make the saved maps stale: all are redone.
    first = scoremap_path(run_dir / "wsol" / "scoremaps" / "test", read_metadata(meta_root / "test").image_ids[0])
    mtime = first.stat().st_mtime_ns
    eval_wsol.run(tiny_config(cub, run_dir, f"wsol.metadata_root={meta_root}", "wsol.num_examples=0",
                              "wsol.test_size=48"))
    assert first.stat().st_mtime_ns != mtime


# ---------------------------------------------------------------- figure
def test_figure_size_by_hand():
    # 4 tiles of 224 and 5 gaps of 6 across; header 28 + one row of 224 + caption 24 + 2 gaps of 6.
    assert wsol_examples.figure_size(4, 4) == (926, 288)
    # 3 tiles in 2 columns: 2 rows.
    assert wsol_examples.figure_size(3, 2) == (2 * 224 + 3 * 6, 28 + 2 * 248 + 3 * 6)


def test_eval_writes_the_example_grid(trained, evaluated):
    with Image.open(trained / "figures" / "wsol_examples.png") as figure:
        assert figure.mode == "RGB" and figure.size == (926, 288)  # the 4 test images in one row


def test_tile_draws_gt_red_and_prediction_green():
    tile = wsol_examples.draw_tile(np.zeros((224, 224, 3), np.uint8), np.zeros((224, 224)),
                                   np.array([[10, 10, 50, 50]]), np.array([100, 120, 150, 200]), "IoU 0.00")
    assert tile.shape == (224 + 24, 224, 3)
    assert tuple(tile[10, 30]) == wsol_examples.RED and tuple(tile[30, 50]) == wsol_examples.RED
    assert tuple(tile[120, 125]) == wsol_examples.GREEN and tuple(tile[150, 100]) == wsol_examples.GREEN
    assert tuple(tile[30, 30]) != wsol_examples.RED  # inside the box: the overlay, not the outline


def test_example_ids_are_evenly_spaced():
    assert wsol_examples.example_ids([str(i) for i in range(60)], 8) == ["0", "8", "17", "25", "34", "42", "51", "59"]
    assert wsol_examples.example_ids(["a", "b"], 8) == ["a", "b"]


# ---------------------------------------------------------------- CLI and configs
@pytest.fixture
def eval_cli(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "pipelines"))
    return importlib.import_module("eval_wsol").main


def test_eval_cli_model_mode_and_its_argument_rules(cub, trained, evaluated, eval_cli, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("wsol:\n  num_classes: 2\n")
    out = tmp_path / "copy.json"
    sets = [arg for o in tiny_overrides(cub, trained)[1:] for arg in ("--set", o)]
    result = eval_cli(["--config", str(config), "--run-dir", str(trained), "--out", str(out), *sets])
    assert result == evaluated and json.loads(out.read_text()) == json.loads(json.dumps(evaluated))
    with pytest.raises(SystemExit):
        eval_cli(["--config", str(config), "--metadata-root", str(cub / "metadata" / "test")])
    with pytest.raises(SystemExit):
        eval_cli(["--centre-baseline", "--metadata-root", str(cub / "metadata" / "test"), "--set", "wsol.lr=1"])
    with pytest.raises(SystemExit):
        eval_cli(["--centre-baseline"])
    with pytest.raises(SystemExit):
        eval_cli(["--config", str(config), "--scoremap-root", str(tmp_path)])


def test_settings_files_hold_the_recipes():
    cub = load_config("cub")["wsol"]
    recipe = (cub["batch_size"], cub["epochs"], cub["lr"], cub["lr_decay_every"], cub["lr_decay"])
    assert recipe == (32, 45, 0.01, 10, 0.1)
    ilsvrc = load_config("ilsvrc")["wsol"]
    assert (ilsvrc["batch_size"], ilsvrc["epochs"], ilsvrc["lr"], ilsvrc["lr"] * ilsvrc["new_lr_mult"],
            ilsvrc["lr_decay_every"]) == (256, 20, 0.002, 0.02, 5)
    for w in (cub, ilsvrc):
        assert (w["momentum"], w["weight_decay"], w["strides"], w["resize_size"], w["crop_size"], w["test_size"]) == (
            0.9, 5e-4, [2, 2, 1, 1], 256, 224, 224)
    demo = load_config("demo-wsol")["wsol"]
    assert demo["weights"] == "none" and demo["backbone"] == "resnet18" and demo["num_classes"] == 6
