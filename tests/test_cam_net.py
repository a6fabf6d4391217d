"""CAMNet and WSOLNet: shapes, CAM definition, flip merge, loss and optimizer groups."""
import math

import pytest
import torch
from torch import nn

from irnet_moana.models import CAMNet, MoANA, WSOLNet

K = 5


def _cam_net(**kwargs) -> CAMNet:
    torch.manual_seed(0)
    options = {"backbone": "resnet18", "weights": "none"}
    options.update(kwargs)
    return CAMNet(K, **options)


def _wsol_net(**kwargs) -> WSOLNet:
    torch.manual_seed(0)
    options = {"backbone": "resnet18", "weights": "none"}
    options.update(kwargs)
    return WSOLNet(K, **options)


def _warm_moana(model: nn.Module) -> None:
    """Give MoANA's BatchNorms non-trivial running statistics before evaluation."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 32, 64))
    model.eval()


def _reference_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Un-ReLU'd class maps computed by hand from the backbone features."""
    features = model.backbone(x)
    if model.head.moana is not None:
        features = model.head.moana(features)
    weight = model.head.classifier.weight[:, :, 0, 0]
    return torch.einsum("kc,nchw->nkhw", weight, features)


@pytest.fixture(scope="module")
def cam_net() -> CAMNet:
    model = _cam_net()
    _warm_moana(model)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(3))


def test_logits_and_cam_shapes(cam_net, images):
    with torch.no_grad():
        assert cam_net(images).shape == (2, K)
        assert cam_net.cams(images).shape == (2, K, 2, 4)
    assert cam_net.output_stride == 16
    assert cam_net.head.classifier.in_channels == 512
    assert cam_net.head.classifier.bias is None


def test_cam_is_relu_of_classifier_on_features(cam_net, images):
    with torch.no_grad():
        expected = _reference_maps(cam_net, images).clamp(min=0)
        torch.testing.assert_close(cam_net.cams(images), expected)


@pytest.mark.parametrize("moana", [True, False])
def test_gap_of_class_maps_equals_logits(moana, images):
    model = _cam_net(moana=moana)
    _warm_moana(model)
    with torch.no_grad():
        maps = _reference_maps(model, images)
        torch.testing.assert_close(model(images), maps.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_flip_merged_cams(cam_net, images):
    with torch.no_grad():
        expected = cam_net.cams(images) + cam_net.cams(images.flip(-1)).flip(-1)
        merged = cam_net.flip_merged_cams(images)
    assert merged.shape == (2, K, 2, 4)
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)


def test_loss_matches_torch_and_hand_value():
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 1]])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731  -log(sigmoid(-v))
    # y = 1 costs softplus(-x), y = 0 costs softplus(x); mean over classes, then samples.
    sample1 = (softplus(-1.0) + softplus(-2.0) + softplus(-0.5)) / 3
    sample2 = (softplus(0.0) + softplus(-3.0) + softplus(1.0)) / 3
    loss = CAMNet.loss(logits, labels)
    assert loss.item() == pytest.approx((sample1 + sample2) / 2, rel=1e-6)
    torch.testing.assert_close(loss, nn.MultiLabelSoftMarginLoss()(logits, labels.float()))


def _assert_partition(model: nn.Module, groups: list[dict]) -> None:
    """Every trainable parameter in exactly one group, nothing else."""
    listed = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(trainable)


def test_cam_param_groups():
    model = _cam_net()
    groups = model.param_groups(0.1, weight_decay=1e-4)
    _assert_partition(model, groups)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == 0.1
    assert by_name["moana"]["lr"] == 0.1
    assert by_name["classifier"]["lr"] == pytest.approx(1.0)
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    assert {id(p) for p in by_name["moana"]["params"]} == {
        id(p) for p in model.head.moana.parameters()}
    assert by_name["classifier"]["params"] == [model.head.classifier.weight]
    frozen = {id(p) for m in (model.backbone.conv1, model.backbone.layer1) for p in m.parameters()}
    assert frozen and frozen.isdisjoint(id(p) for p in by_name["backbone"]["params"])

    groups = model.param_groups(0.01, classifier_lr_mult=20, weight_decay=0, moana_lr_mult=10)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"backbone": 0.01, "moana": 0.1, "classifier": 0.2})
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)


def test_without_moana_there_are_no_moana_parameters():
    with_moana, without = _cam_net(), _cam_net(moana=False)
    assert without.head.moana is None
    assert not any(isinstance(m, MoANA) for m in without.modules())
    assert [g["name"] for g in without.param_groups(0.1)] == ["backbone", "classifier"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Dense MoANA at C = 512: 3 + 2 * 512 * 512 * 3 + 6 * 512.
    assert count(with_moana) - count(without) == 3 + 2 * 512 * 512 * 3 + 6 * 512
    _assert_partition(without, without.param_groups(0.1))


def test_wsol_net_defaults_and_shapes(images):
    model = _wsol_net()
    assert model.backbone.strides == (2, 2, 1, 1) and model.output_stride == 8
    assert any(isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad
               for m in model.backbone.modules())
    assert model.backbone.conv1.weight.requires_grad
    assert isinstance(model.head.moana, MoANA)
    _warm_moana(model)
    with torch.no_grad():
        assert model(images).shape == (2, K)
        maps = _reference_maps(model, images)
        assert maps.shape == (2, K, 4, 8)
        torch.testing.assert_close(model(images), maps.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
        idx = torch.tensor([3, 1])
        torch.testing.assert_close(model.cams(images, idx), maps[torch.arange(2), idx])
        idx2 = torch.tensor([[0, 4], [2, 2]])
        expected = torch.stack([maps[0, [0, 4]], maps[1, [2, 2]]])
        torch.testing.assert_close(model.cams(images, idx2), expected)
    with pytest.raises(ValueError, match="class_idx"):
        model.cams(images, torch.tensor([1, 2, 3]))


def test_wsol_param_groups():
    model = _wsol_net()
    groups = model.param_groups(0.002, 0.02, 5e-4)
    _assert_partition(model, groups)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == 0.002 and by_name["new"]["lr"] == 0.02
    assert all(g["weight_decay"] == 5e-4 for g in groups)
    new = {id(p) for m in (model.head.moana, model.head.classifier) for p in m.parameters()}
    assert {id(p) for p in by_name["new"]["params"]} == new


def test_resnet50_feature_width():
    model = CAMNet(20, backbone="resnet50", weights="none", moana_view_conv="depthwise")
    assert model.head.classifier.weight.shape == (20, 2048, 1, 1)
    assert model.head.moana.channels == 2048


def test_invalid_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        CAMNet(0, backbone="resnet18", weights="none")
