"""MoANA against hand-written references of each step of the paper's module."""
import copy
import math

import pytest
import torch

from irnet_moana.models.moana import CALIBRATIONS, MoANA

N, C, H, W = 3, 6, 5, 7


def _randomize_bn(module: MoANA, gen: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for bn in (module.bn_c, module.bn_h, module.bn_w):
        bn.running_mean.copy_(torch.randn(C, generator=gen))
        bn.running_var.copy_(torch.rand(C, generator=gen) + 0.5)
        with torch.no_grad():
            bn.weight.copy_(torch.randn(C, generator=gen))
            bn.bias.copy_(torch.randn(C, generator=gen))


def _bn_eval(v: float, bn: torch.nn.BatchNorm2d, channel: int) -> float:
    mean = bn.running_mean[channel].item()
    var = bn.running_var[channel].item()
    return ((v - mean) / math.sqrt(var + bn.eps) * bn.weight[channel].item()
            + bn.bias[channel].item())


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.fixture
def module_and_input():
    gen = torch.Generator().manual_seed(0)
    module = MoANA(C).double().eval()
    _randomize_bn(module, gen)
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)
    return module, x


def test_submodule_names_and_types():
    m = MoANA(C)
    assert m.conv_c.in_channels == 1 and m.conv_c.out_channels == 1
    for conv in (m.conv_c, m.conv_h, m.conv_w):
        assert isinstance(conv, torch.nn.Conv1d)
        assert conv.bias is None and conv.padding == (1,) and conv.kernel_size == (3,)
    assert m.conv_h.in_channels == m.conv_h.out_channels == C and m.conv_h.groups == 1
    assert MoANA(C, view_conv="depthwise").conv_w.groups == C
    for bn in (m.bn_c, m.bn_h, m.bn_w):
        assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == C


def test_shapes_odd_non_square(module_and_input):
    module, x = module_and_input
    att = module.attention(x)
    assert att["z_c"].shape == (N, C)
    assert att["z_h"].shape == (N, C, H)
    assert att["z_w"].shape == (N, C, W)
    assert att["M"].shape == (N, C, H, W)
    assert module(x).shape == x.shape
    assert 0 < att["M"].min() and att["M"].max() < 3


def test_outer_sum_elementwise(module_and_input):
    module, x = module_and_input
    att = module.attention(x)
    for n in range(N):
        for i in range(C):
            for j in range(H):
                for k in range(W):
                    expected = (att["z_c"][n, i] + att["z_h"][n, i, j]
                                + att["z_w"][n, i, k]).item()
                    assert att["M"][n, i, j, k].item() == pytest.approx(expected, abs=1e-12)


def test_channel_view_against_manual_eca(module_and_input):
    module, x = module_and_input
    kernel = module.conv_c.weight.flatten().tolist()
    z_c = module.attention(x)["z_c"]
    for n in range(N):
        pooled = [x[n, i].mean().item() for i in range(C)]
        for i in range(C):
            # Cross-correlation along channels with zero padding 1.
            conv = sum(kernel[t] * pooled[i + t - 1] for t in range(3) if 0 <= i + t - 1 < C)
            expected = _sigmoid(_bn_eval(conv, module.bn_c, i))
            assert z_c[n, i].item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("view_conv", ["dense", "depthwise"])
def test_spatial_views_against_manual_conv(view_conv):
    gen = torch.Generator().manual_seed(1)
    module = MoANA(C, view_conv=view_conv).double().eval()
    _randomize_bn(module, gen)
    x = torch.randn(2, C, H, W, generator=gen, dtype=torch.float64)
    att = module.attention(x)
    for name, conv, bn, axis, length in (("z_h", module.conv_h, module.bn_h, 3, H),
                                         ("z_w", module.conv_w, module.bn_w, 2, W)):
        pooled = x.mean(dim=axis)  # (N, C, length)
        weight = conv.weight  # dense: (C, C, 3); depthwise: (C, 1, 3)
        for n in range(2):
            for o in range(C):
                inputs = range(C) if view_conv == "dense" else [o]
                for j in range(length):
                    total = 0.0
                    for a, i in enumerate(inputs):
                        for t in range(3):
                            if 0 <= j + t - 1 < length:
                                total += weight[o, a, t].item() * pooled[n, i, j + t - 1].item()
                    expected = _sigmoid(_bn_eval(total, bn, o))
                    assert att[name][n, o, j].item() == pytest.approx(expected, abs=1e-12)


def test_calibrations(module_and_input):
    module, x = module_and_input
    m = module.attention(x)["M"]
    torch.testing.assert_close(module(x), x + x * m)
    wsss = MoANA(C, calibration="wsss_code").double().eval()
    wsss.load_state_dict(module.state_dict())
    torch.testing.assert_close(wsss(x), x * (0.35 + 0.65 * m))


@pytest.mark.parametrize("calibration", sorted(CALIBRATIONS))
@pytest.mark.parametrize("shape", [(N, C, H, W), (2, C, 1, W), (2, C, H, 1), (2, C, 2, 3)])
@pytest.mark.parametrize("training", [False, True])
def test_channels_last_input_gives_same_views_and_output(calibration, shape, training):
    """Channels-last maps take their own pooling and product path; the numbers and layout must match."""
    gen = torch.Generator().manual_seed(1)
    module = MoANA(C, calibration=calibration).double().train(training)
    _randomize_bn(module, gen)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    last = x.contiguous(memory_format=torch.channels_last)
    reference = module.attention(x)
    for name, value in module.attention(last).items():
        torch.testing.assert_close(value, reference[name], rtol=1e-12, atol=1e-12, msg=name)
    out = module(last)
    torch.testing.assert_close(out, module(x), rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_bf16_close_to_float64_and_to_nchw_bf16(module_and_input):
    module, x = module_and_input
    low = copy.deepcopy(module).to(torch.bfloat16)
    out = low(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    # bf16 keeps 8 bits of mantissa: a few roundings of values up to |x| * 4
    torch.testing.assert_close(out.double(), module(x), rtol=0.03, atol=0.03)
    # The channels-last path rounds its pooled sums once more than the NCHW means: about one bf16 step.
    torch.testing.assert_close(out.double(), low(x.to(torch.bfloat16)).double(), rtol=0.02, atol=0.02)


def test_channels_last_gradients_match(module_and_input):
    module, x = module_and_input
    module.train()
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        module.zero_grad()
        inputs = x.clone(memory_format=layout).requires_grad_(True)
        (module(inputs) * torch.arange(x.numel(), dtype=x.dtype).view_as(x)).sum().backward()
        grads.append([inputs.grad] + [p.grad.clone() for p in module.parameters()])
    for plain, last in zip(*grads):
        torch.testing.assert_close(last, plain, rtol=1e-10, atol=1e-10)


def test_batchnorm_follows_train_and_eval(module_and_input):
    module, x = module_and_input
    stats = {k: v.clone() for k, v in module.state_dict().items() if "running" in k}
    out1, out2 = module(x), module(x)
    assert torch.equal(out1, out2)
    # Eval output of a sample does not depend on the rest of the batch.
    torch.testing.assert_close(module(x[:1]), out1[:1])
    for k, v in stats.items():
        assert torch.equal(module.state_dict()[k], v)
    module.train()
    module(x)
    for k, v in stats.items():
        assert not torch.equal(module.state_dict()[k], v), k


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    module = MoANA(C).train()
    x = torch.randn(N, C, H, W, requires_grad=True)
    (module(x) * torch.randn(N, C, H, W)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("channels, view_conv, expected", [
    # conv_c k + conv_h, conv_w 2 * C * C * k + three BN affine 3 * 2 * C
    # = 3 + 25_165_824 + 12_288
    (2048, "dense", 25_178_115),
    # conv_c k + depthwise 2 * C * k + BN affine 3 * 2 * C
    (2048, "depthwise", 24_579),
    (6, "dense", 3 + 216 + 36),
    (6, "depthwise", 3 + 36 + 36),
])
def test_parameter_count(channels, view_conv, expected):
    module = MoANA(channels, view_conv=view_conv)
    assert sum(p.numel() for p in module.parameters()) == expected


@pytest.mark.parametrize("kwargs", [
    {"channels": 0}, {"channels": 2.0}, {"channels": 4, "kernel_size": 2},
    {"channels": 4, "kernel_size": 0}, {"channels": 4, "calibration": "residual"},
    {"channels": 4, "view_conv": "sparse"},
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        MoANA(**kwargs)


def test_wrong_input_shape():
    with pytest.raises(ValueError, match="expected input"):
        MoANA(4)(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="expected input"):
        MoANA(4)(torch.randn(4, 3, 3))
