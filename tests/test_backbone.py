"""Backbone: strides, freezing and weight loading against torchvision's own ResNet."""
import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from irnet_moana.models.backbone import Backbone
from tolerances import assert_close_to_scale

# (layers, largest fan-in) of the backbones compared against another evaluation
RESNET18 = (17, 3 * 3 * 512)
RESNET50 = (53, 3 * 3 * 512)


def _random_resnet18(seed: int = 0) -> torchvision.models.ResNet:
    """A torchvision resnet18 with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(module.weight, 1.0, 0.1)
            nn.init.normal_(module.bias, 0.0, 0.1)
    return model.eval()


def _torchvision_features(model: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    """Independent reference: torchvision's modules up to layer4, called directly."""
    return nn.Sequential(*list(model.children())[:-2])(x)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    model = _random_resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("strides, sizes", [
    ((2, 2, 2, 1), [(16, 24), (16, 24), (8, 12), (4, 6), (4, 6)]),
    ((2, 2, 1, 1), [(16, 24), (16, 24), (8, 12), (8, 12), (8, 12)]),
    ((1, 1, 1, 1), [(32, 48)] * 5),
])
def test_stage_shapes_and_strides(strides, sizes):
    backbone = Backbone("resnet18", strides=strides).eval()
    with torch.no_grad():
        outs = backbone.forward_stages(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[2:]) for o in outs] == sizes
    assert [o.shape[1] for o in outs] == [64, 64, 128, 256, 512]
    assert list(backbone.out_channels) == [64, 64, 128, 256, 512]
    assert [64 // s for s in backbone.stage_strides] == [h for h, _ in sizes]
    assert backbone(torch.randn(1, 3, 64, 96)).shape == outs[-1].shape


def test_resnet50_channels_and_output_stride_16():
    backbone = Backbone("resnet50", strides=(2, 2, 2, 1)).eval()
    assert backbone.out_channels == (64, 256, 512, 1024, 2048)
    assert backbone.feature_channels == 2048
    assert backbone.stage_strides == (4, 4, 8, 16, 16)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 32, 48))
    assert out.shape == (1, 2048, 2, 3)


def test_frozen_bn_stays_frozen_in_train_mode(resnet18_file):
    _, path = resnet18_file
    backbone = Backbone("resnet18", weights=str(path), freeze_bn=True, freeze_stem=False)
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    buffers = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    backbone.train()
    out_train = backbone(x)
    out_train.sum().backward()
    backbone.eval()
    torch.testing.assert_close(backbone(x), out_train)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    names = [name for name, _ in backbone.named_parameters()]
    assert not any("bn" in n or "downsample.1" in n for n in names)
    assert all(p.grad is not None for p in backbone.parameters())


def test_trainable_bn_updates_statistics():
    backbone = Backbone("resnet18", freeze_bn=False, freeze_stem=False).train()
    before = backbone.layer2[0].bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 32, 32))
    assert not torch.equal(backbone.layer2[0].bn1.running_mean, before)
    assert backbone.layer2[0].bn1.weight.requires_grad


@pytest.mark.parametrize("arch, freeze_bn", [("resnet18", True), ("resnet50", False)])
def test_folded_batchnorm_keeps_every_stage(arch, freeze_bn):
    torch.manual_seed(1)
    backbone = Backbone(arch, weights="none", freeze_bn=freeze_bn).eval()
    for module in backbone.modules():
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.normal_(1.0, 0.1)
            module.bias.data.normal_(0.0, 0.1)
    x = torch.randn(2, 3, 48, 64)
    expected = backbone.forward_stages(x)
    assert backbone.fold_batchnorm() is backbone
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    depth = RESNET18 if arch == "resnet18" else RESNET50
    for got, want in zip(backbone.forward_stages(x), expected):
        assert_close_to_scale(got, want, *depth)
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.fold_batchnorm()  # a second fold finds nothing left to fold
    assert_close_to_scale(backbone(x), expected[-1], *depth)


def test_folding_needs_evaluation_mode():
    with pytest.raises(RuntimeError, match="eval"):
        Backbone("resnet18", weights="none").train().fold_batchnorm()


def test_freeze_stem():
    backbone = Backbone("resnet18", freeze_bn=False, freeze_stem=True).train()
    stem = [backbone.conv1, backbone.bn1, backbone.layer1]
    stem_params = {id(p) for m in stem for p in m.parameters()}
    assert all(not p.requires_grad for m in stem for p in m.parameters())
    assert {id(p) for p in backbone.trainable_parameters()}.isdisjoint(stem_params)
    assert len(backbone.trainable_parameters()) == len(list(backbone.parameters())) - len(
        stem_params)
    # The stem's BatchNorms keep their running statistics; later ones train.
    assert not backbone.bn1.training and not backbone.layer1[0].bn1.training
    assert backbone.layer2[0].bn1.training
    before = backbone.bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 32, 32)).sum().backward()
    assert torch.equal(backbone.bn1.running_mean, before)
    assert backbone.conv1.weight.grad is None and backbone.layer1[0].conv1.weight.grad is None
    assert backbone.layer2[0].conv1.weight.grad is not None


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_load_local_file_matches_torchvision(resnet18_file, freeze_bn):
    model, path = resnet18_file
    backbone = Backbone("resnet18", weights=path, strides=(2, 2, 2, 2),
                        freeze_bn=freeze_bn).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close_to_scale(backbone(x), _torchvision_features(model, x), *RESNET18)


def test_strides_do_not_change_loaded_weights(resnet18_file):
    model, path = resnet18_file
    backbone = Backbone("resnet18", weights=path, strides=(2, 2, 1, 1))
    reference = model.state_dict()
    for name, tensor in backbone.state_dict().items():
        torch.testing.assert_close(tensor, reference[name])


def test_file_without_batch_counter_loads(tmp_path):
    model = _random_resnet18()
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    backbone = Backbone("resnet18", weights=path, freeze_bn=False)
    torch.testing.assert_close(backbone.layer3[1].bn2.running_var,
                               model.layer3[1].bn2.running_var)


def test_missing_file_error(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        Backbone("resnet18", weights=str(path))


def test_wrong_keys_error(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(ValueError, match=r"resnet18\.pth.*resnet50.*missing keys"):
        Backbone("resnet50", weights=path)


def test_not_a_state_dict_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file .*garbage.pth"):
        Backbone("resnet18", weights=garbage)
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(ValueError, match="list.pth does not hold a state dict"):
        Backbone("resnet18", weights=a_list)


def test_imagenet_offline_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as info:
        Backbone("resnet18", weights="imagenet")
    message = str(info.value)
    assert "checkpoints" in message and "resnet18-f37072fd.pth" in message
    assert "weights: /path/to/file.pth" in message and "no network" in message


def test_imagenet_uses_torchvision_weights(monkeypatch):
    model = _random_resnet18()
    urls = []

    def cached(url, *args, **kwargs):
        urls.append(url)
        return model.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", cached)
    backbone = Backbone("resnet18", weights="imagenet", strides=(2, 2, 2, 2)).eval()
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close_to_scale(backbone(x), _torchvision_features(model, x), *RESNET18)


@pytest.mark.parametrize("kwargs", [
    {"arch": "resnet152"}, {"strides": (2, 2, 2)}, {"strides": (2, 2, 3, 1)},
    {"strides": (2, 2, 2.0, 1)},
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        Backbone(**kwargs)
