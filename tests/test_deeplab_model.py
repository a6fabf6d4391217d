"""DeepLab v2 model: shapes, multi-scale fusion, ASPP, parameter groups, frozen BN, weights."""
from __future__ import annotations

import os
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from deeplab import (
    ASPP,
    DeepLabV2,
    MultiScale,
    deeplab_v2,
    load_weights,
    logit_size,
    param_groups,
    resize_labels,
)


@pytest.fixture(scope="module")
def small_model() -> MultiScale:
    torch.manual_seed(0)
    return deeplab_v2(num_classes=5, depth=18)


def test_resnet101_eval_logits_are_stride_8() -> None:
    # Single scale keeps this CPU test short; the scales are checked on ResNet-18.
    model = deeplab_v2(num_classes=21, depth=101, scales=(1.0,)).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 321, 321))
    assert logits.shape == (1, 21, 41, 41)
    assert model.base.aspp.branches[0].in_channels == 2048


def test_train_mode_returns_each_scale_and_the_fused_logits(small_model: MultiScale) -> None:
    small_model.train()
    outputs = small_model(torch.randn(2, 3, 65, 47))
    # Inputs int(65*s) x int(47*s) = 65x47, 48x35, 32x23; logits ceil(n / 8).
    assert [tuple(o.shape) for o in outputs] == [(2, 5, 9, 6), (2, 5, 6, 5), (2, 5, 4, 3), (2, 5, 9, 6)]
    assert small_model.output_names() == ["x1", "x0.75", "x0.5", "max"]


def test_one_scale_trains_on_its_logits_once() -> None:
    # a fused copy of the only map would put the same loss on it twice
    model = MultiScale(nn.Conv2d(3, 4, 1), scales=(1.0,))
    images = torch.randn(2, 3, 8, 8)
    outputs = model.train()(images)
    assert len(outputs) == 1 and model.output_names() == ["x1"]
    torch.testing.assert_close(outputs[0], model.eval()(images), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [((321, 321), 1.0, (41, 41)), ((321, 321), 0.75, (30, 30)), ((321, 321), 0.5, (20, 20)),
     ((65, 47), 0.75, (6, 5)), ((8, 9), 1.0, (1, 2))],
)
def test_logit_size(size: tuple[int, int], scale: float, expected: tuple[int, int]) -> None:
    assert logit_size(size, scale) == expected


def test_logit_size_matches_the_network(small_model: MultiScale) -> None:
    base = small_model.base.eval()
    with torch.no_grad():
        for size in [(33, 40), (17, 9), (64, 64)]:
            assert base(torch.zeros(1, 3, *size)).shape[-2:] == logit_size(size)


def test_max_fusion_equals_manual_elementwise_max(small_model: MultiScale) -> None:
    torch.manual_seed(1)
    images = torch.randn(1, 3, 50, 58)
    small_model.train()
    with torch.no_grad():
        full, three_quarter, half, fused = small_model(images)
        base = small_model.base
        manual = [base(images)] + [
            base(F.interpolate(images, size=(int(50 * s), int(58 * s)), mode="bilinear", align_corners=False))
            for s in (0.75, 0.5)
        ]
        small_model.eval()
        fused_eval = small_model(images)
    for got, want in zip((full, three_quarter, half), manual):
        torch.testing.assert_close(got, want)
    up = [
        F.interpolate(x, size=full.shape[-2:], mode="bilinear", align_corners=False)
        for x in (three_quarter, half)
    ]
    expected = torch.maximum(torch.maximum(full, up[0]), up[1])
    assert torch.equal(fused, expected)
    assert torch.equal(fused_eval, expected)


def test_scales_must_include_one() -> None:
    with pytest.raises(ValueError, match="1.0"):
        MultiScale(nn.Identity(), scales=(0.5, 0.75))


def test_aspp_has_four_dilated_branches(small_model: MultiScale) -> None:
    aspp = small_model.base.aspp
    assert isinstance(aspp, ASPP)
    assert len(aspp.branches) == 4
    for conv, rate in zip(aspp.branches, (6, 12, 18, 24)):
        assert conv.kernel_size == (3, 3)
        assert conv.dilation == (rate, rate)
        assert conv.padding == (rate, rate)
        assert conv.in_channels == 512 and conv.out_channels == 5
        assert conv.bias is not None and torch.count_nonzero(conv.bias) == 0
    weights = torch.cat([conv.weight.flatten() for conv in aspp.branches])
    assert abs(weights.std().item() - 0.01) < 5e-4
    assert abs(weights.mean().item()) < 5e-4


def test_aspp_sums_its_branches() -> None:
    aspp = ASPP(in_channels=4, num_classes=3)
    x = torch.randn(1, 4, 30, 30)
    torch.testing.assert_close(aspp(x), sum(conv(x) for conv in aspp.branches))


def test_backbone_is_dilated_not_strided_after_layer2(small_model: MultiScale) -> None:
    backbone = small_model.base.backbone
    for name, rate in (("layer3", 2), ("layer4", 4)):
        for conv in getattr(backbone, name).modules():
            if isinstance(conv, nn.Conv2d):
                assert conv.stride == (1, 1)
                if conv.kernel_size == (3, 3):
                    assert conv.dilation == (rate, rate) and conv.padding == (rate, rate)


def test_param_groups_multipliers_and_coverage(small_model: MultiScale) -> None:
    groups = param_groups(small_model, lr=2.5e-4, weight_decay=5e-4)
    settings = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert settings == {
        "backbone_weight": (2.5e-4, 5e-4),
        "head_weight": (2.5e-3, 5e-4),
        "head_bias": (5e-3, 0.0),
    }
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in small_model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(trainable)
    by_name = {g["name"]: g["params"] for g in groups}
    aspp = small_model.base.aspp
    assert {id(p) for p in by_name["head_weight"]} == {id(c.weight) for c in aspp.branches}
    assert {id(p) for p in by_name["head_bias"]} == {id(c.bias) for c in aspp.branches}
    for group in groups:
        if any(p.ndim == 1 for p in group["params"]):
            assert group["weight_decay"] == 0.0
    torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9)


def test_param_groups_put_backbone_biases_without_decay() -> None:
    class WithBias(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.aspp = ASPP(4, 2)

    model = WithBias()
    model.conv.weight.requires_grad_(False)
    groups = {g["name"]: g for g in param_groups(model, lr=1.0, weight_decay=0.1)}
    assert [p is model.conv.bias for p in groups["backbone_bias"]["params"]] == [True]
    assert (groups["backbone_bias"]["lr"], groups["backbone_bias"]["weight_decay"]) == (2.0, 0.0)
    assert "backbone_weight" not in groups


def test_batchnorm_stays_frozen_in_train_mode() -> None:
    small_model = deeplab_v2(num_classes=5, depth=18)
    modules = list(small_model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    frozen = [m for m in modules if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 20  # ResNet-18: bn1, 2 per block x 8 blocks, 3 downsamples
    for bn in frozen:
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    images = torch.randn(2, 3, 40, 40)
    small_model.train()
    outputs = small_model(images)
    sum(o.sum() for o in outputs).backward()
    for key, value in small_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(not list(bn.parameters()) for bn in frozen)
    with torch.no_grad():
        train_features = small_model.base.backbone(images)
        small_model.eval()
        torch.testing.assert_close(small_model.base.backbone(images), train_features)


def _randomised(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("wrapped", [False, True])
def test_deeplab_weights_file_round_trips(tmp_path, wrapped: bool) -> None:
    source = _randomised(deeplab_v2(num_classes=3, depth=18))
    path = tmp_path / "deeplab.pth"
    torch.save((source if wrapped else source.base).state_dict(), path)
    loaded = deeplab_v2(num_classes=3, depth=18, weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_torchvision_resnet_state_dict_loads_into_the_backbone(tmp_path) -> None:
    resnet = _randomised(torchvision.models.resnet18(weights=None))
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)  # includes fc.* and BN num_batches_tracked
    model = DeepLabV2(num_classes=3, depth=18)
    aspp_before = {k: v.clone() for k, v in model.aspp.state_dict().items()}
    load_weights(model, path)
    backbone = model.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer4.1.conv2.weight", "layer3.0.downsample.1.bias"):
        assert torch.equal(backbone[key], resnet.state_dict()[key]), key
    for key, value in model.aspp.state_dict().items():
        assert torch.equal(value, aspp_before[key])


def test_bad_weights_files_give_clear_errors(tmp_path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.pth"):
        deeplab_v2(num_classes=3, depth=18, weights=str(garbage))

    wrong_depth = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong_depth)
    with pytest.raises(RuntimeError, match="resnet34.pth.*ResNet-18"):
        deeplab_v2(num_classes=3, depth=18, weights=str(wrong_depth))

    wrong_classes = tmp_path / "five_classes.pth"
    torch.save(deeplab_v2(num_classes=5, depth=18).state_dict(), wrong_classes)
    with pytest.raises(RuntimeError, match="(?s)five_classes.pth.*size mismatch"):
        deeplab_v2(num_classes=3, depth=18, weights=str(wrong_classes))

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        deeplab_v2(num_classes=3, depth=18, weights=str(tmp_path / "missing.pth"))


def test_imagenet_weights_offline_say_where_to_put_the_file(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    filename = os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    with pytest.raises(RuntimeError) as info:
        deeplab_v2(num_classes=3, depth=18, weights="imagenet")
    message = str(info.value)
    assert os.path.join(torch.hub.get_dir(), "checkpoints", filename) in message
    assert "path" in message and "no network" in message


def test_imagenet_weights_come_from_torchvision(monkeypatch) -> None:
    resnet = _randomised(torchvision.models.resnet18(weights=None))
    urls = []

    def cached(url, *args, **kwargs):
        urls.append(url)
        return resnet.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", cached)
    model = deeplab_v2(num_classes=3, depth=18, weights="imagenet")
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    assert torch.equal(model.base.backbone.conv1.weight, resnet.conv1.weight)


def test_resize_labels_hand_computed() -> None:
    labels = torch.arange(16).reshape(1, 4, 4)
    labels[0, 3, 3] = 255
    # Pixel-centre sampling: source index floor((i + 0.5) * 4 / 2) = 1, 3.
    assert resize_labels(labels, (2, 2)).tolist() == [[[5, 7], [13, 255]]]
    assert resize_labels(labels, (2, 2)).dtype == torch.int64


@pytest.mark.parametrize("size", [(41, 41), (30, 30), (20, 20), (7, 11)])
def test_resize_labels_matches_pil_nearest(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 21, size=(2, 321, 321))
    labels[:, 100:150, 40:90] = 255
    got = resize_labels(torch.from_numpy(labels), size)
    for sample, resized in zip(labels, got):
        reference = Image.fromarray(sample.astype(np.float32)).resize(size[::-1], resample=Image.NEAREST)
        assert np.array_equal(resized.numpy(), np.asarray(reference).astype(np.int64))
