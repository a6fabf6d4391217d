"""torchvision ResNet feature extractor with configurable strides and freezing.

The stages are exposed one by one (stem = conv1 + bn1 + relu + maxpool, then
layer1 .. layer4) because IRNet's boundary and displacement branches read the
features of all five. Module names are torchvision's, so a torchvision ResNet
state dict loads directly (its ``fc.*`` entries are ignored).

Strides follow IRNet's convention ``(conv1, layer2, layer3, layer4)``; layer1
and the max pool keep stride 1 and 2. Changing a stride only changes the
``stride`` attribute of existing convolutions (no dilation), so it never
changes the parameter shapes and pretrained weights still load.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision import models
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

_ARCHS: dict[str, tuple[Callable[..., models.ResNet], models.WeightsEnum]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
}
ARCHS: tuple[str, ...] = tuple(_ARCHS)

_STEM = ("conv1", "bn1", "relu", "maxpool")


def _validate_strides(strides: Sequence[int]) -> tuple[int, int, int, int]:
    values = tuple(strides)
    if len(values) != 4 or any(
            isinstance(s, bool) or not isinstance(s, int) or s not in (1, 2) for s in values):
        raise ValueError(
            "strides must be 4 values in {1, 2} for (conv1, layer2, layer3, layer4), "
            f"got {strides!r}")
    return values  # type: ignore[return-value]


def _set_layer_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of the first block of a ResNet layer (main path and shortcut)."""
    block = layer[0]
    if isinstance(block, Bottleneck):
        block.conv2.stride = (stride, stride)
    elif isinstance(block, BasicBlock):
        block.conv1.stride = (stride, stride)
    else:
        raise TypeError(f"unsupported ResNet block {type(block).__name__}")
    block.stride = stride
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_conv = block.conv3 if isinstance(block, Bottleneck) else block.conv2
    return last_conv.out_channels


def imagenet_state_dict(arch: str) -> dict[str, Tensor]:
    """ImageNet weights from torch's hub cache, downloading them if absent."""
    url = _ARCHS[arch][1].url
    try:
        return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        raise RuntimeError(
            f"could not obtain the ImageNet weights of {arch} ({err}). Without network "
            f"access, download {url} elsewhere and either put it at {cached} or pass "
            "weights: /path/to/file.pth") from err


def resnet_weights(arch: str, weights: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The torchvision ResNet state dict ``weights`` names (``imagenet`` or a file), without the classifier ``fc.*``."""
    state = imagenet_state_dict(arch) if weights == "imagenet" else file_state_dict(os.fspath(weights))
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def state_mismatch(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str:
    """How ``state`` fails to fit a module with state dict ``own`` (missing, unexpected, reshaped); "" if it fits."""
    # BatchNorm's step counter is absent from old torchvision checkpoints and
    # from FrozenBatchNorm2d, and it does not affect the outputs.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        return ""
    return (f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(mismatched)} keys with other shapes {mismatched[:5]}")


def file_state_dict(path: str) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights must be 'imagenet', 'none' or the path of a .pth file; "
            f"no such file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a bad file
        raise ValueError(f"cannot read weights file {path}: {err}") from err
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(
            f"weights file {path} does not hold a state dict (name -> tensor) "
            "of a torchvision ResNet")
    return state


class Backbone(nn.Module):
    """A torchvision ResNet without its classifier, stage by stage.

    Args:
        arch: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``.
        weights: ``"imagenet"`` (torchvision IMAGENET1K_V1, from torch's hub
            cache or downloaded into it), ``"none"`` (random initialisation)
            or the path of a torchvision ResNet state dict saved with
            ``torch.save``.
        strides: strides of (conv1, layer2, layer3, layer4), each 1 or 2.
            IRNet uses (2, 2, 2, 1) (output stride 16); WSOL uses (2, 2, 1, 1)
            (output stride 8, 28 x 28 maps at 224 x 224).
        freeze_bn: replace every BatchNorm with ``FrozenBatchNorm2d``: running
            statistics always (also in ``train()``) and affine parameters stored
            as buffers, so they receive no gradient and no weight decay.
        freeze_stem: stop gradients to conv1 .. layer1; their BatchNorms (if not
            frozen anyway) are kept in evaluation mode so that their running
            statistics do not drift either.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str | os.PathLike[str] = "none",
        strides: Sequence[int] = (2, 2, 2, 1),
        freeze_bn: bool = True,
        freeze_stem: bool = True,
    ) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
        self.arch = arch
        self.strides = _validate_strides(strides)
        self.freeze_bn = freeze_bn
        self.freeze_stem = freeze_stem

        norm_layer = FrozenBatchNorm2d if freeze_bn else nn.BatchNorm2d
        resnet = _ARCHS[arch][0](weights=None, norm_layer=norm_layer)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

        self.conv1.stride = (self.strides[0], self.strides[0])
        for layer, stride in zip((self.layer2, self.layer3, self.layer4), self.strides[1:]):
            _set_layer_stride(layer, stride)

        self.out_channels: tuple[int, ...] = (self.conv1.out_channels,) + tuple(
            _out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4))
        """Channels of the five stage outputs (stem, layer1, ..., layer4)."""
        stem_stride = self.strides[0] * 2
        self.stage_strides: tuple[int, ...] = (
            stem_stride,
            stem_stride,
            stem_stride * self.strides[1],
            stem_stride * self.strides[1] * self.strides[2],
            stem_stride * self.strides[1] * self.strides[2] * self.strides[3],
        )
        """Output stride of each of the five stages with respect to the input."""

        self._load_weights(weights)
        if freeze_stem:
            for module in self._stem_modules():
                module.requires_grad_(False)

    @property
    def feature_channels(self) -> int:
        """Channels of the last stage (512 for resnet18/34, 2048 for resnet50/101)."""
        return self.out_channels[-1]

    def _stem_modules(self) -> list[nn.Module]:
        return [getattr(self, name) for name in _STEM] + [self.layer1]

    def _load_weights(self, weights: str | os.PathLike[str]) -> None:
        if weights == "none":
            return
        state = resnet_weights(self.arch, weights)
        source = f"torchvision {self.arch} ImageNet" if weights == "imagenet" else str(weights)
        mismatch = state_mismatch(self.state_dict(), state)
        if mismatch:
            raise ValueError(f"weights {source} do not match a torchvision {self.arch}: {mismatch}")
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> Backbone:
        """Set training mode, keeping a frozen stem's BatchNorms in evaluation mode."""
        super().train(mode)
        if self.freeze_stem:
            for module in self._stem_modules():
                module.eval()
        return self

    def _conv_norm_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(parent, convolution name, the BatchNorm right after it) for every BatchNorm."""
        pairs = [(self, "conv1", "bn1")]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                count = 3 if isinstance(block, Bottleneck) else 2
                pairs += [(block, f"conv{k}", f"bn{k}") for k in range(1, count + 1)]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
        return pairs

    @torch.no_grad()
    def fold_batchnorm(self) -> Backbone:
        """Fold every BatchNorm into the convolution it follows, in place; for inference only.

        Each ``bn(conv(x))`` becomes one convolution with scaled weights and a
        bias, the same function up to float rounding in evaluation mode, with
        one pass over the feature map less. The BatchNorms become identities
        and the folded weights are frozen: the result is not for training.
        """
        if self.training:
            raise RuntimeError("fold_batchnorm() is for inference: call .eval() first, so that "
                               "BatchNorm's running statistics are what gets folded")
        for parent, conv_name, norm_name in self._conv_norm_pairs():
            conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
            if isinstance(norm, nn.Identity):
                continue
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                norm.weight, norm.bias)
            conv.weight, conv.bias = weight.requires_grad_(False), bias.requires_grad_(False)
            setattr(parent, norm_name, nn.Identity())
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive gradients (frozen stem and frozen BN excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Outputs of the stem and of layer1 .. layer4, in that order."""
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(stem)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]

    def forward(self, x: Tensor) -> Tensor:
        """Output of layer4, shape (N, feature_channels, H / s, W / s)."""
        return self.forward_stages(x)[-1]
