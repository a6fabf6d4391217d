"""DeepLab v2 stage: training (loss, labels, resume) and evaluation (ss / msf / CRF, resumable PNGs)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from deeplab import evaluate, smp_net, train
from deeplab.build import deeplab_net
from deeplab.model import MultiScale, deeplab_v2, param_groups
from deeplab.predict import predict_multi_scale_flip, predict_single_scale
from irnet_moana import io, outputs
from irnet_moana.config import SEGMENTATION_ARCHS, load_config
from irnet_moana.data.synthetic import generate_voc_demo
from irnet_moana.data.voc import DatasetError
from irnet_moana.training import TrainingError, load_state

STEPS = 3
# three steps test the loop, not learning: random weights under frozen BatchNorm are fine for that
pytestmark = pytest.mark.filterwarnings("ignore:deeplab.weights=none with deeplab.freeze_bn=true")


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    generate_voc_demo(root, num_train=4, num_train_aug_extra=0, num_val=2, image_size=64)
    return root


def make_cfg(root: Path, run_dir: Path, labels: Path | None = None, **deeplab) -> dict:
    settings = {"depth": 18, "weights": "none", "crop_size": 64, "batch_size": 2, "iterations": STEPS,
                "checkpoint_every": 1, "eval_scales": [0.75, 1.0], "crf_workers": 2,
                "labels": str(labels or root / "SegmentationClass"), **deeplab}
    overrides = [f"data.root={root}", "data.num_workers=0", "device=cpu", f"run_dir={run_dir}"]
    overrides += [f"deeplab.{key}={value}" for key, value in settings.items()]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def trained(tiny_voc, tmp_path_factory) -> dict:
    """One uninterrupted training, shared by the resume and evaluation tests."""
    cfg = make_cfg(tiny_voc, tmp_path_factory.mktemp("run"))
    train.run(cfg)
    return cfg


def test_loss_sums_pixel_means_over_outputs_and_ignores_255():
    labels = torch.tensor([[[0, 1, 2, 255], [1, 1, 255, 255], [2, 0, 0, 1], [255, 255, 255, 255]]])
    uniform = torch.zeros(1, 3, 4, 4)  # every pixel costs log(3)
    confident = torch.zeros(1, 3, 2, 2)
    confident[0, 1] = 2.0  # class 1 favoured everywhere at 2 x 2
    loss, scalars = train.segmentation_loss([uniform, confident], labels, ["a", "b"])
    # the 2 x 2 labels sample pixel centres: rows/cols 1 and 3 -> [[1, 255], [255, 255]] holds one pixel of class 1
    expected_b = math.log(1 + 2 * math.exp(-2))
    assert scalars["loss_a"] == pytest.approx(math.log(3), rel=1e-6)
    assert scalars["loss_b"] == pytest.approx(expected_b, rel=1e-5)
    assert loss.item() == pytest.approx(math.log(3) + expected_b, rel=1e-5)
    reference = F.cross_entropy(uniform, labels, ignore_index=255)
    assert scalars["loss_a"] == pytest.approx(reference.item(), rel=1e-6)
    all_ignored, _ = train.segmentation_loss([uniform], torch.full((1, 4, 4), 255), ["a"])
    assert all_ignored.item() == 0.0


def test_backbone_with_batchnorm_statistics_loads(tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    resnet.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}, path)
    assert any(k.endswith("num_batches_tracked") for k in torch.load(path))
    model = deeplab_v2(3, depth=18, weights=str(path))
    assert torch.equal(model.base.backbone.conv1.weight, resnet.conv1.weight)
    assert torch.equal(model.base.backbone.bn1.running_mean, resnet.bn1.running_mean)


def test_freeze_bn_setting_selects_the_normalisation(tiny_voc, tmp_path):
    from torchvision.ops import FrozenBatchNorm2d

    frozen = deeplab_net(make_cfg(tiny_voc, tmp_path), num_classes=6)
    trainable = deeplab_net(make_cfg(tiny_voc, tmp_path, freeze_bn=False), num_classes=6)
    assert isinstance(frozen.base.backbone.bn1, FrozenBatchNorm2d)
    assert type(trainable.base.backbone.bn1) is nn.BatchNorm2d
    assert trainable.base.aspp.branches[0].out_channels == 7


def test_training_writes_model_with_all_steps(trained):
    out = Path(trained["run_dir"]) / outputs.DEEPLAB
    state = load_state(out / "model.pth")
    assert state["steps"] == STEPS
    assert io.read_json(out / outputs.DEEPLAB_TRAIN_INFO)["num_images"] == 4
    assert (out / "tensorboard").is_dir()


def test_resume_after_interruption_matches_uninterrupted_run(trained, tiny_voc, tmp_path, interrupt_on_call):
    cfg = make_cfg(tiny_voc, tmp_path)
    with interrupt_on_call(train, "segmentation_loss", STEPS), pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    out = tmp_path / outputs.DEEPLAB
    assert not (out / "model.pth").exists()
    assert load_state(out / "checkpoint.pth")["step"] == STEPS - 1
    with pytest.raises(TrainingError, match="--resume"):
        train.run(cfg)
    train.run(cfg, resume=True)
    resumed = load_state(out / "model.pth")
    straight = load_state(Path(trained["run_dir"]) / outputs.DEEPLAB / "model.pth")
    assert resumed["steps"] == straight["steps"] == STEPS
    assert resumed["model"].keys() == straight["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key


def test_other_labels_in_a_finished_run_are_refused(trained, tiny_voc, tmp_path):
    other = tmp_path / "labels"
    shutil.copytree(tiny_voc / "SegmentationClass", other)
    cfg = dict(trained, deeplab=dict(trained["deeplab"], labels=str(other)))
    with pytest.raises(TrainingError, match="another --run-dir"):
        train.run(cfg)


def test_missing_label_files_are_counted_and_named(tiny_voc, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(tiny_voc / "SegmentationClass", labels)
    (labels / "demo_000002.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 4 training images .*demo_000002"):
        train.run(make_cfg(tiny_voc, tmp_path / "run", labels))
    assert not (tmp_path / "run" / outputs.DEEPLAB / "checkpoint.pth").exists()


def test_label_value_outside_classes_names_the_file(tiny_voc, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(tiny_voc / "SegmentationClass", labels)
    bad = labels / "demo_000003.png"
    mask = io.load_label_png(bad)
    mask[5, 5] = 9  # 6 classes: 0..6 and 255 are the only valid values
    io.save_label_png(bad, mask)
    with pytest.raises(DatasetError, match=r"demo_000003\.png: label values \[9\]"):
        train.run(make_cfg(tiny_voc, tmp_path / "run", labels))


class _FlipEquivariant(nn.Module):
    """Per-pixel linear map then 8 x 8 average pooling: mirroring the input mirrors the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 4, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.proj(images), 8)


def test_multi_scale_flip_at_scale_one_equals_single_scale():
    torch.manual_seed(0)
    model = MultiScale(_FlipEquivariant(), scales=(1.0,)).eval()
    image = torch.randn(3, 32, 48)
    ss = predict_single_scale(model, image)
    msf = predict_multi_scale_flip(model, [torch.stack([image, image.flip(-1)])], (32, 48))
    assert ss.shape == (4, 32, 48)
    torch.testing.assert_close(ss.sum(0), torch.ones(32, 48))
    torch.testing.assert_close(msf, ss)


def test_crf_in_pool_equals_in_process():
    rng = np.random.default_rng(0)
    jobs = []
    for index in range(5):
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        probs = rng.dirichlet(np.ones(3), size=(24, 32)).transpose(2, 0, 1).astype(np.float32)
        jobs.append((f"img{index}", image, probs))
    pooled = list(evaluate.crf_label_maps(iter(jobs), workers=2))
    assert [name for name, _ in pooled] == [name for name, _, _ in jobs]
    for (_, labels), (_, image, probs) in zip(pooled, jobs):
        assert labels.dtype == np.uint8 and labels.shape == (24, 32)
        np.testing.assert_array_equal(labels, evaluate.crf_label_map(image, probs))


def _miou(pred_dir: Path, gt_dir: Path, stems: list[str], num_classes: int) -> float:
    """Independent mIoU: per class, pixels summed over images; classes with an empty union skipped."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for stem in stems:
        gt = io.load_label_png(gt_dir / f"{stem}.png")
        pred = io.load_label_png(pred_dir / f"{stem}.png")
        valid = gt != 255
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    return 100 * float(np.mean(inter[union > 0] / union[union > 0]))


def test_evaluation_writes_all_settings_and_resumes(trained, tiny_voc):
    result = evaluate.run(trained)
    run_dir = Path(trained["run_dir"])
    stems = ["demo_000005", "demo_000006"]
    folders = [run_dir / outputs.DEEPLAB / f for f in (evaluate.SS, evaluate.MSF, evaluate.CRF)]
    for folder in folders:
        assert sorted(p.stem for p in folder.glob("*.png")) == stems
    saved = io.read_json(run_dir / "metrics" / outputs.EVAL_DEEPLAB)
    assert {"single_scale", "multi_scale_flip", "multi_scale_flip_crf", "list", "num_images"} <= saved.keys()
    assert saved["num_images"] == 2 and saved["list"] == "val"
    for key, folder in zip(("single_scale", "multi_scale_flip", "multi_scale_flip_crf"), folders):
        expected = _miou(folder, tiny_voc / "SegmentationClass", stems, 7)
        assert saved[key]["miou"] == pytest.approx(expected, abs=0.01)
        assert result[key]["miou"] == saved[key]["miou"]

    mtimes = {p: p.stat().st_mtime_ns for folder in folders for p in folder.glob("*.png")}
    truncated = folders[1] / "demo_000006.png"
    before = io.load_label_png(truncated)
    original = truncated.read_bytes()
    truncated.write_bytes(original[: len(original) // 2])
    assert not io.output_is_valid(truncated)
    again = evaluate.run(trained)
    np.testing.assert_array_equal(io.load_label_png(truncated), before)
    for path, mtime in mtimes.items():
        if path != truncated:
            assert path.stat().st_mtime_ns == mtime, path
    assert again["multi_scale_flip"]["miou"] == result["multi_scale_flip"]["miou"]


SMP_ARCHS = ("DeepLabV3Plus", "Unet", "FPN")


@pytest.mark.slow
@pytest.mark.parametrize("arch", SMP_ARCHS)
def test_smp_architecture_trains_resumes_and_evaluates(arch, tiny_voc, tmp_path, interrupt_on_call):
    # 0.75 x 64 px = 48 px inputs at evaluation: not a multiple of the encoder's stride, so padded and cropped back
    settings = dict(arch=arch, encoder="resnet18", freeze_bn=False, scales="[1.0]")
    straight_cfg = make_cfg(tiny_voc, tmp_path / "straight", **settings)
    train.run(straight_cfg)
    cfg = make_cfg(tiny_voc, tmp_path / "resumed", **settings)
    with interrupt_on_call(train, "segmentation_loss", STEPS), pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    train.run(cfg, resume=True)
    resumed = load_state(tmp_path / "resumed" / outputs.DEEPLAB / "model.pth")
    straight = load_state(tmp_path / "straight" / outputs.DEEPLAB / "model.pth")
    assert resumed["steps"] == straight["steps"] == STEPS
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key

    result = evaluate.run(cfg)
    for folder in (evaluate.SS, evaluate.MSF, evaluate.CRF):
        for stem in ("demo_000005", "demo_000006"):
            assert io.load_label_png(tmp_path / "resumed" / outputs.DEEPLAB / folder / f"{stem}.png").shape == (64, 64)
    assert 0.0 <= result["multi_scale_flip_crf"]["miou"] <= 100.0


def test_smp_names_in_the_configuration_are_smps():
    assert SEGMENTATION_ARCHS == ("v2", *smp_net.ARCHITECTURES)


def test_smp_head_takes_the_head_learning_rates_and_frozen_bn_is_fixed():
    model = MultiScale(smp_net.smp_net("DeepLabV3Plus", "resnet18", 3, freeze_bn=True), [1.0])
    groups = {g["name"]: g for g in param_groups(model, lr=0.01, weight_decay=5e-4)}
    head = {id(p) for p in model.base.head_parameters()}
    assert {id(p) for p in groups["head_weight"]["params"] + groups["head_bias"]["params"]} == head
    assert groups["head_weight"]["lr"] == pytest.approx(0.1) and groups["backbone_weight"]["lr"] == 0.01
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.base.model.encoder.modules())
    assert "backbone_bias" not in groups, "frozen BatchNorm has nothing to train"


def test_smp_encoder_weights_offline_name_the_file_to_provide(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"resnet18-f37072fd\.pth"):
        smp_net.smp_net("Unet", "resnet18", 3, weights="imagenet")
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    model = smp_net.smp_net("Unet", "resnet18", 3, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.model.encoder.conv1.weight, resnet.conv1.weight)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        smp_net.smp_net("Unet", "resnet18", 3, weights=str(tmp_path / "absent.pth"))
