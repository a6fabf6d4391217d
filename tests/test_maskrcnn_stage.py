"""Optional Mask R-CNN stage: training on a COCO export, exact resume, predictions, mAP^r, weights settings."""
from __future__ import annotations

import os
import shutil
import urllib.error
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torchvision

from irnet_moana import io, outputs
from irnet_moana.coco_export import export_coco
from irnet_moana.config import ConfigError, load_config
from irnet_moana.data.synthetic import generate_voc_demo
from irnet_moana.data.voc import VOCData
from irnet_moana.instance_eval import gt_instances
from irnet_moana.stages import train_maskrcnn
from irnet_moana.training import TrainingError, load_state

STEPS = 2  # one step fills an epoch of 2 images at batch 2: a checkpoint, then a step to interrupt
# torchvision's COCO wrapper decodes RLE with pycocotools, which trips a NumPy 2 deprecation
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def remove_weights(run_dir: Path) -> None:
    """Each ResNet-50 Mask R-CNN file is 170-340 MB: do not leave them in pytest's kept temporary folders."""
    for path in (run_dir / outputs.MASKRCNN).glob("*.pth"):
        path.unlink()


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    generate_voc_demo(root, num_train=2, num_train_aug_extra=0, num_val=2, image_size=64)
    return root


def prepare_run(root: Path, run_dir: Path) -> Path:
    """The ground-truth objects of the train images as instance labels, exported as make_instance_masks does."""
    data = VOCData(root)
    stems = data.split("train")
    folder = run_dir / "gt_instances"
    for stem in stems:
        io.save_instances(folder / stem, gt_instances(root, stem))
    export_coco(folder, stems, data.names, run_dir / outputs.INSTANCE_COCO)
    return run_dir


def make_cfg(root: Path, run_dir: Path, **maskrcnn) -> dict:
    # min_score 0: three steps from random weights score below torchvision's 0.05, and the test wants instances
    settings = {"weights": "none", "min_size": 64, "max_size": 64, "batch_size": 2, "iterations": STEPS,
                "warmup_iterations": 1, "min_score": 0.0, **maskrcnn}
    overrides = [f"data.root={root}", "data.num_workers=0", "device=cpu", f"run_dir={run_dir}"]
    overrides += [f"maskrcnn.{key}={value}" for key, value in settings.items()]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def trained(tiny_voc, tmp_path_factory) -> Iterator[dict]:
    """One uninterrupted run of the stage (train, predict, score), shared by the tests below."""
    cfg = make_cfg(tiny_voc, prepare_run(tiny_voc, tmp_path_factory.mktemp("run")))
    cfg["result"] = train_maskrcnn.run(cfg)  # at the suite's thread count, as the resumed run below
    yield cfg
    remove_weights(Path(cfg["run_dir"]))


def test_training_writes_weights_predictions_and_metrics(trained, tiny_voc):
    run_dir = Path(trained["run_dir"])
    state = load_state(run_dir / outputs.MASKRCNN / "model.pth")
    assert state["steps"] == STEPS
    assert (run_dir / outputs.MASKRCNN / "tensorboard").is_dir()
    data = VOCData(tiny_voc)
    val = data.split("val")
    pred_dir = run_dir / outputs.MASKRCNN / outputs.MASKRCNN_PRED
    found = 0
    for stem in val:
        inst = io.load_instances(pred_dir / stem)
        assert inst.masks.shape[1:] == data.load_image(stem).shape[:2]
        assert inst.masks.sum(0).max(initial=0) <= 1 and inst.masks.any(axis=(1, 2)).all()
        assert ((inst.labels >= 1) & (inst.labels <= data.num_classes)).all()
        assert (np.diff(inst.scores) <= 0).all()  # kept in score order
        found += len(inst.labels)
    assert found > 0
    metrics = io.read_json(run_dir / outputs.METRICS / outputs.EVAL_MASKRCNN)
    assert metrics["list"] == "val" and metrics["num_images"] == len(val)
    assert metrics["maskrcnn"]["num_images"] == len(val) and "0.5" in metrics["maskrcnn"]
    assert trained["result"]["maskrcnn"] == metrics["maskrcnn"]
    log = (run_dir / "logs" / "train_maskrcnn.log").read_text()
    assert "[train_maskrcnn] Mask R-CNN mAP^r 0.25 / 0.5 / 0.75:" in log
    assert "[train_maskrcnn] precision " in log


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(trained, tiny_voc, tmp_path, interrupt_on_call):
    cfg = make_cfg(tiny_voc, prepare_run(tiny_voc, tmp_path))
    with interrupt_on_call(train_maskrcnn, "training_loss", STEPS), pytest.raises(KeyboardInterrupt):
        train_maskrcnn.run(cfg)
    out = tmp_path / outputs.MASKRCNN
    assert not (out / "model.pth").exists()
    assert load_state(out / "checkpoint.pth")["step"] == STEPS - 1
    with pytest.raises(TrainingError, match="--resume"):
        train_maskrcnn.run(cfg)
    train_maskrcnn.run(cfg, resume=True)
    resumed = load_state(out / "model.pth")
    straight = load_state(Path(trained["run_dir"]) / outputs.MASKRCNN / "model.pth")
    assert resumed["steps"] == straight["steps"] == STEPS
    assert resumed["model"].keys() == straight["model"].keys()
    different = [k for k, v in straight["model"].items() if not torch.equal(resumed["model"][k], v)]
    remove_weights(tmp_path)
    assert not different, different[:5]


def test_without_instance_ground_truth_predicts_and_does_not_score(trained, tiny_voc, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root, ignore=shutil.ignore_patterns("SegmentationObject"))
    run_dir = tmp_path / "run"
    (run_dir / outputs.MASKRCNN).mkdir(parents=True)
    trained_dir = Path(trained["run_dir"])
    shutil.copy(trained_dir / outputs.INSTANCE_COCO, run_dir)
    shutil.copy(trained_dir / outputs.MASKRCNN / "model.pth", run_dir / outputs.MASKRCNN)  # training is done
    assert train_maskrcnn.run(make_cfg(root, run_dir)) is None
    for stem in VOCData(root).split("val"):
        assert io.output_is_valid(run_dir / outputs.MASKRCNN / outputs.MASKRCNN_PRED / f"{stem}.json")
    assert not (run_dir / outputs.METRICS / outputs.EVAL_MASKRCNN).exists()
    remove_weights(run_dir)
    assert "no instance ground truth" in (run_dir / "logs" / "train_maskrcnn.log").read_text()


def test_overlapping_detections_go_to_the_higher_score():
    probs = np.zeros((4, 1, 3, 4), np.float32)
    probs[0, 0, :, :2] = 0.9  # score 0.5: left half
    probs[1, 0, :, 1:3] = 0.8  # score 0.9: middle, overlapping the left half in column 1
    probs[2, 0, :, 1:2] = 0.95  # score 0.7: inside the others, left without a pixel
    probs[3, 0, :, 3] = 0.9  # score 0.01: below min_score
    prediction = {"scores": torch.tensor([0.5, 0.9, 0.7, 0.01]), "labels": torch.tensor([1, 2, 3, 1]),
                  "masks": torch.from_numpy(probs)}
    inst = train_maskrcnn.to_instances(prediction, (3, 4), min_score=0.05, mask_threshold=0.5)
    assert inst.labels.tolist() == [2, 1] and inst.scores.tolist() == pytest.approx([0.9, 0.5])
    assert inst.masks[0].sum() == 6 and inst.masks[0][:, 1:3].all()
    assert inst.masks[1].sum() == 3 and inst.masks[1][:, 0].all()
    empty = train_maskrcnn.to_instances({"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
                                         "masks": torch.zeros(0, 1, 3, 4)}, (3, 4), 0.05, 0.5)
    assert empty.masks.shape == (0, 3, 4) and len(empty.labels) == 0


def test_imagenet_weights_offline_name_the_file_to_provide(tiny_voc, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as info:
        train_maskrcnn.build_model(make_cfg(tiny_voc, tmp_path, weights="imagenet"), num_classes=3)
    message = str(info.value)
    filename = os.path.basename(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url)
    assert os.path.join(torch.hub.get_dir(), "checkpoints", filename) in message
    assert "maskrcnn.weights=" in message and "no network" in message


def test_backbone_weights_file_loads_with_frozen_batchnorm(tiny_voc, tmp_path):
    from torchvision.ops import FrozenBatchNorm2d

    resnet = torchvision.models.resnet50(weights=None)
    resnet.bn1.running_mean.uniform_(-1, 1)
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")  # with fc.* and num_batches_tracked
    cfg = make_cfg(tiny_voc, tmp_path, weights="{run_dir}/resnet50.pth", trainable_backbone_layers=2)
    model = train_maskrcnn.build_model(cfg, num_classes=3)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, resnet.conv1.weight)
    assert torch.equal(body.bn1.running_mean, resnet.bn1.running_mean)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    trained_layers = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trained_layers == {"layer3", "layer4"}
    assert model.roi_heads.box_predictor.cls_score.out_features == 4

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ConfigError, match="resnet18.pth is not a torchvision ResNet-50"):
        train_maskrcnn.build_model(make_cfg(tiny_voc, tmp_path, weights=str(tmp_path / "resnet18.pth")), 3)
    with pytest.raises(ConfigError, match="no such file"):
        train_maskrcnn.build_model(make_cfg(tiny_voc, tmp_path, weights=str(tmp_path / "absent.pth")), 3)
    for path in tmp_path.glob("*.pth"):
        path.unlink()
