"""Bad inputs stop a stage early with a message naming the file or key and what to do.

Most cases run a pipeline script in-process through its ``main_guard`` (the
message printed and exit status 2 are what a user sees); the library-level
checks themselves are tested in test_config.py, test_voc.py and test_io.py.
Also here: divergence (NaN/inf) reports and the ban on unpickling loads.
"""
from __future__ import annotations

import ast
import re
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from irnet_moana import io, outputs
from irnet_moana.config import load_config, setting_path
from irnet_moana.data.datasets import ClassificationDataset
from irnet_moana.data.voc import DatasetError, VOCData
from irnet_moana.models.cam_net import CAMNet
from irnet_moana.stages import train_cam
from irnet_moana.training import TrainingError, load_state

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = setting_path("demo")
TRAIN_IMAGES = 8  # train_aug of tiny_demo_root
STEPS_PER_EPOCH = TRAIN_IMAGES // 2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(monkeypatch, capsys, stage: str, overrides: list[str], *flags: str) -> tuple[int, str]:
    """Run ``pipelines/<stage>.py`` as from a shell; (exit status, what it printed to stderr)."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    monkeypatch.setattr(sys, "argv", [f"{stage}.py", "--config", str(DEMO_CONFIG), *sets, *flags])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "pipelines" / f"{stage}.py"), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture
def root_copy(tiny_demo_root, tmp_path) -> Path:
    """A copy of the tiny dataset to damage, without the label cache so edited annotations count."""
    root = tmp_path / "data"
    shutil.copytree(tiny_demo_root, root, ignore=shutil.ignore_patterns("cls_labels.npz"))
    return root


def run_with(tiny_demo_run: Path, run_dir: Path, *folders: str) -> Path:
    """A run directory holding copies of some of the reference run's outputs."""
    for folder in folders:
        shutil.copytree(tiny_demo_run / folder, run_dir / folder)
    return run_dir


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


# --- dataset ---------------------------------------------------------------------------------------------

def test_missing_dataset_root(monkeypatch, capsys, tiny_demo_overrides, tmp_path):
    code, err = cli(monkeypatch, capsys, "make_cams", tiny_demo_overrides(tmp_path / "run", root=tmp_path / "nowhere"))
    assert code == 2
    assert f"dataset root {tmp_path / 'nowhere'} does not exist" in err and "prepare_data.py" in err


def test_wrong_dataset_layout_names_missing_folders(monkeypatch, capsys, tiny_demo_overrides, tmp_path):
    (tmp_path / "devkit" / "VOC2012").mkdir(parents=True)
    code, err = cli(monkeypatch, capsys, "train_cam", tiny_demo_overrides(tmp_path / "run", root=tmp_path / "devkit"))
    assert code == 2
    assert "does not have the VOC 2012 layout" in err
    assert str(tmp_path / "devkit" / "JPEGImages") in err and "ImageSets/Segmentation missing" in err
    assert f"did you mean {tmp_path / 'devkit' / 'VOC2012'}?" in err


def test_listed_image_absent_stops_before_training(monkeypatch, capsys, root_copy, tiny_demo_overrides, tmp_path):
    (root_copy / "JPEGImages" / "demo_000003.jpg").unlink()
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, "train_cam", tiny_demo_overrides(run_dir, root=root_copy))
    assert code == 2
    assert f"{root_copy / 'ImageSets' / 'Segmentation' / 'train_aug.txt'}: 1 listed image(s) absent" in err
    assert "demo_000003; restore them or remove them from the list" in err
    assert not (run_dir / outputs.CAM).exists()


def test_empty_list(monkeypatch, capsys, tiny_demo_overrides, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, err = cli(monkeypatch, capsys, "make_cams",
                    tiny_demo_overrides(tmp_path / "run", f"data.train_list={empty}"))
    assert (code, err.strip()) == (2, f"error: image list {empty} is empty")


def test_corrupt_training_image_is_skipped_logged_and_counted(root_copy, tiny_demo_overrides, tmp_path):
    truncate(root_copy / "JPEGImages" / "demo_000005.jpg")
    run_dir = tmp_path / "run"
    final = train_cam.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir, "cam.epochs=1", root=root_copy)))
    state = load_state(final)
    assert state["skipped_images"] == ["demo_000005"]
    assert state["steps"] == STEPS_PER_EPOCH  # the batch holding it trained on its other image
    log = (run_dir / "logs" / "train_cam.log").read_text()
    assert "skipping unreadable training image(s) ['demo_000005']" in log
    assert "skipped 1 unreadable image(s) during training: ['demo_000005']" in log


def test_unreadable_training_image_gives_its_slot_to_the_next_readable_one(root_copy):
    for stem in ("demo_000005", "demo_000006"):
        truncate(root_copy / "JPEGImages" / f"{stem}.jpg")
    data = VOCData(root_copy)
    stems = data.split("train_aug")
    dataset = ClassificationDataset(data, stems, data.image_labels(stems), 0, (48, 80), 64)
    sample = dataset[(stems.index("demo_000005"), 1)]
    assert sample["name"] == "demo_000007" and sample["skipped"] == ["demo_000005", "demo_000006"]
    assert sample["image"].shape == (3, 64, 64)
    assert dataset[(0, 1)]["skipped"] == []
    for stem in stems:
        truncate(root_copy / "JPEGImages" / f"{stem}.jpg")
    with pytest.raises(DatasetError, match="none of the 8 training images can be read"):
        dataset[(0, 1)]


def test_corrupt_training_image_fails_when_asked(monkeypatch, capsys, root_copy, tiny_demo_overrides, tmp_path):
    truncate(root_copy / "JPEGImages" / "demo_000005.jpg")
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, "train_cam",
                    tiny_demo_overrides(run_dir, "cam.epochs=1", "data.skip_corrupt=false", root=root_copy))
    assert code == 2
    assert f"{root_copy / 'JPEGImages' / 'demo_000005.jpg'}: corrupt or truncated image" in err
    assert "set data.skip_corrupt=true to skip it" in err
    assert not (run_dir / outputs.CAM / "model.pth").exists()


def test_corrupt_image_fails_in_inference(monkeypatch, capsys, root_copy, tiny_demo_run, tiny_demo_overrides,
                                          tmp_path):
    truncate(root_copy / "JPEGImages" / "demo_000002.jpg")
    run_dir = run_with(tiny_demo_run, tmp_path / "run", outputs.CAM)
    code, err = cli(monkeypatch, capsys, "make_cams", tiny_demo_overrides(run_dir, root=root_copy))
    assert code == 2
    assert f"{root_copy / 'JPEGImages' / 'demo_000002.jpg'}: corrupt or truncated image" in err


@pytest.mark.parametrize("damage, message", [
    (lambda mask: np.where(mask == 0, 9, mask),
     r"demo_000004.png: label values \[9\] are neither classes 0..6 nor 255"),
    (lambda mask: mask[:60], r"demo_000004.png: mask size 64x60 differs from its image 64x64"),
], ids=["values", "size"])
def test_bad_ground_truth_mask(damage, message, monkeypatch, capsys, root_copy, tiny_demo_run, tiny_demo_overrides,
                               tmp_path):
    mask_path = root_copy / "SegmentationClass" / "demo_000004.png"
    io.save_label_png(mask_path, damage(io.load_label_png(mask_path)).astype(np.uint8))
    run_dir = run_with(tiny_demo_run, tmp_path / "run", outputs.CAMS)
    code, err = cli(monkeypatch, capsys, "eval_cams", tiny_demo_overrides(run_dir, root=root_copy))
    assert code == 2
    assert re.search(message, err) and str(mask_path) in err


def test_image_without_class_excluded_from_training(root_copy, tiny_demo_overrides, tmp_path):
    xml = root_copy / "Annotations" / "demo_000002.xml"
    tree = xml.read_text()
    xml.write_text(tree[: tree.index("<object>")] + "</annotation>\n")
    run_dir = tmp_path / "run"
    train_cam.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir, "cam.max_steps=1", root=root_copy)))
    log = (run_dir / "logs" / "train_cam.log").read_text()
    assert "excluding 1 image(s) without any class from training: demo_000002" in log
    assert f"on {TRAIN_IMAGES - 1} images" in log


# --- configuration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("cam.leraning_rate=0.1", "unknown key 'cam.leraning_rate' (known keys here: "),
    ("cam.batch_size=two", "key 'cam.batch_size' must be int (like 2), got 'two'"),
    ("cam.lr=-0.1", "key 'cam.lr' must be > 0, got -0.1"),
    ("cam.crop_size=0", "key 'cam.crop_size' must be > 0, got 0"),
])
def test_bad_config_stops_before_any_work(override, message, monkeypatch, capsys, tiny_demo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, "train_cam", tiny_demo_overrides(run_dir, override))
    assert code == 2 and message in err and err.startswith("error: ")
    assert not run_dir.exists()


def test_exponent_floats_are_floats():
    # PyYAML reads 1e-4 (no dot) as a string; the config must not reject it as a wrong type
    cfg = load_config(None, ["cam.momentum=1e-4", "cam.lr=2E-3"])
    assert cfg["cam"]["momentum"] == 1e-4 and cfg["cam"]["lr"] == 2e-3


# --- files from other runs -------------------------------------------------------------------------------

def test_weights_of_another_architecture(monkeypatch, capsys, tiny_demo_run, tiny_demo_overrides, tmp_path):
    run_dir = run_with(tiny_demo_run, tmp_path / "run", outputs.CAM)
    code, err = cli(monkeypatch, capsys, "make_cams", tiny_demo_overrides(run_dir, "cam.backbone=resnet34"))
    assert code == 2
    assert f"{run_dir / 'cam' / 'model.pth'} was saved from another architecture or number of classes" in err
    assert "missing ['backbone.layer1.2." in err  # resnet34 has three blocks in layer1, resnet18 two


def test_weights_for_another_number_of_classes(monkeypatch, capsys, root_copy, tiny_demo_run, tiny_demo_overrides,
                                               tmp_path):
    names = (root_copy / "classes.txt").read_text().split()
    (root_copy / "classes.txt").write_text("\n".join([*names, "extra"]) + "\n")
    run_dir = run_with(tiny_demo_run, tmp_path / "run", outputs.CAM)
    code, err = cli(monkeypatch, capsys, "make_cams", tiny_demo_overrides(run_dir, root=root_copy))
    assert code == 2
    assert f"{run_dir / 'cam' / 'model.pth'} was saved from another architecture or number of classes" in err
    assert f"vs model [{len(names) + 1}," in err and f"file [{len(names)}," in err


def test_unreadable_checkpoint_is_not_trusted(tiny_demo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / outputs.CAM).mkdir(parents=True)
    (run_dir / outputs.CAM / "checkpoint.pth").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(TrainingError, match=re.escape(f"{run_dir / 'cam' / 'checkpoint.pth'}: unreadable checkpoint")):
        train_cam.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir)), resume=True)


def test_cam_file_from_another_setting(monkeypatch, capsys, tiny_demo_run, tiny_demo_overrides, tmp_path):
    run_dir = run_with(tiny_demo_run, tmp_path / "run", outputs.CAMS)
    path = run_dir / outputs.CAMS / "demo_000001.npz"
    cam = io.load_npz(path)
    io.save_npz(path, {**cam, "keys": (cam["keys"] + 1) % 6})
    code, err = cli(monkeypatch, capsys, "eval_cams", tiny_demo_overrides(run_dir))
    assert code == 2
    assert f"{path}: its classes {((cam['keys'] + 1) % 6).tolist()} do not match the image's labels " \
           f"{cam['keys'].tolist()}; it was made by a different run setting" in err


# --- divergence ------------------------------------------------------------------------------------------

def epoch_batch_names(root: Path, epoch: int, batch: int) -> list[str]:
    """The images of one training batch, from the sampler's documented order (seed, epoch permutation)."""
    seed = load_config(DEMO_CONFIG, [])["seed"]
    stems = (root / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    order = np.random.default_rng([seed, epoch]).permutation(len(stems))
    return [stems[i] for i in order[2 * batch: 2 * batch + 2]]


def test_diverging_learning_rate_stops_with_step_and_images(tiny_demo_root, tiny_demo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as error:
        train_cam.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir, "cam.lr=1e30")))
    step = int(re.search(r"at step (\d+) on images", str(error.value)).group(1))
    assert 1 < step <= STEPS_PER_EPOCH  # the first step's loss is finite; no checkpoint before the epoch ends
    names = epoch_batch_names(tiny_demo_root, 0, step - 1)
    assert re.search(r"loss is (nan|inf) at step " + re.escape(
        f"{step} on images {names}; last good checkpoint: none (no checkpoint written yet)"), str(error.value))
    assert not (run_dir / outputs.CAM / "model.pth").exists()


def test_nan_loss_names_last_good_checkpoint(tiny_demo_root, tiny_demo_overrides, tmp_path, monkeypatch):
    real_loss, calls = CAMNet.loss, []

    def loss_nan_at_step_6(logits, labels):
        calls.append(1)
        return real_loss(logits, labels) * (float("nan") if len(calls) == STEPS_PER_EPOCH + 2 else 1.0)

    monkeypatch.setattr(CAMNet, "loss", staticmethod(loss_nan_at_step_6))
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as error:
        train_cam.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir)))
    checkpoint = run_dir / outputs.CAM / "checkpoint.pth"
    names = epoch_batch_names(tiny_demo_root, 1, 1)
    assert f"loss is nan at step {STEPS_PER_EPOCH + 2} on images {names}; last good checkpoint: {checkpoint}." \
        in str(error.value)
    assert load_state(checkpoint)["step"] == STEPS_PER_EPOCH


def test_non_finite_weights_never_become_a_checkpoint(tiny_demo_root, tiny_demo_overrides, tmp_path, monkeypatch):
    real_loss, calls = CAMNet.loss, []

    def finite_loss_nan_gradient(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        if len(calls) == STEPS_PER_EPOCH:
            # adds 0 to the loss, but the square root's slope at 0 is infinite: NaN gradients
            loss = loss + torch.sqrt(((logits - logits.detach()) ** 2).sum())
        return loss

    monkeypatch.setattr(CAMNet, "loss", staticmethod(finite_loss_nan_gradient))
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as error:
        train_cam.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir)))
    names = epoch_batch_names(tiny_demo_root, 0, STEPS_PER_EPOCH - 1)
    assert re.search(r"weights \(\S+\) became non-finite at step 4 on images " + re.escape(
        f"{names}; last good checkpoint: none (no checkpoint written yet)"), str(error.value))
    assert not (run_dir / outputs.CAM / "checkpoint.pth").exists()


# --- untrusted files -------------------------------------------------------------------------------------

def unsafe_loads(source: str) -> list[int]:
    """Lines that unpickle: torch.load without weights_only=True, np.load with allow_pickle other than False."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        module = node.func.value.id
        if module == "torch":
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                lines.append(node.lineno)
        elif module in ("np", "numpy") and "allow_pickle" in keywords:
            flag = keywords["allow_pickle"]
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                lines.append(node.lineno)
    return sorted(lines)


def test_unsafe_load_detector():
    source = ("import numpy as np, torch\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
              "torch.load(\n  p,\n  weights_only=False)\nnp.load(p)\nnp.load(p, allow_pickle=True)\n"
              "np.load(p, allow_pickle=False)\n")
    assert unsafe_loads(source) == [2, 4, 8]


def test_no_unpickling_loads_in_shipped_code():
    files = [p for folder in ("irnet_moana", "deeplab", "pipelines") for p in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 20
    offenders = {str(p.relative_to(REPO)): lines for p in files if (lines := unsafe_loads(p.read_text()))}
    assert offenders == {}
    # nothing imports the loaders under another name, which the check above would miss
    imports = [p for p in files if re.search(r"from (torch|numpy) import [^\n]*\bload\b", p.read_text())]
    assert imports == []
