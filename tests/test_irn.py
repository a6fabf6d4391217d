import numpy as np
import pytest
import torch

from irnet_moana.models.irn import IRNet, irn_losses
from irnet_moana.relations import PathIndex
from irnet_moana.stages.make_ir_labels import confident_labels
from irnet_moana.stages.make_pseudo_masks import walk_to_labels


@pytest.fixture(scope="module")
def irn():
    torch.manual_seed(0)
    return IRNet("resnet18", "none").eval()


def test_outputs_at_stride_4(irn):
    edge, dp = irn(torch.randn(2, 3, 64, 96))
    assert edge.shape == (2, 1, 16, 24) and dp.shape == (2, 2, 16, 24)


def test_backbone_frozen_and_branch_groups(irn):
    assert not any(p.requires_grad for p in irn.backbone.parameters())
    groups = irn.param_groups(0.1, 10, 1e-4)
    assert [g["lr"] for g in groups] == [0.1, 1.0]
    trainable = {id(p) for p in irn.parameters() if p.requires_grad}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable) and len(grouped) == len(set(grouped))
    irn.train()
    assert not irn.backbone.training
    irn.eval()


def test_inference_crops_and_merges_flip(irn):
    image = torch.randn(1, 3, 50, 70)
    pair = torch.cat([image, image.flip(-1)])
    b, dp = irn.infer(pair, pad_to=64)
    assert b.shape == (13, 18) and dp.shape == (2, 13, 18)
    assert float(b.min()) > 0 and float(b.max()) < 1
    with torch.no_grad():
        # padded to 64 x 80: at least pad_to, and multiples of 16
        edge, displacement = irn(torch.nn.functional.pad(pair, (0, 10, 0, 14)))
    # cropped, then the flip's logits un-flipped and averaged; the displacement is the image's alone
    expected = torch.sigmoid(edge[0, 0, :13, :18] / 2 + edge[1, 0, :13, :18].flip(-1) / 2)
    torch.testing.assert_close(b, expected)
    torch.testing.assert_close(dp, displacement[0, :, :13, :18])


def test_losses_by_hand():
    index = PathIndex(2)  # one direction (0, 1) and (1,-1),(1,0),(1,1)
    logits = torch.full((1, 1, 3, 4), -100.0)  # boundary 0 everywhere -> affinity 1
    dp = torch.zeros(1, 2, 3, 4)
    shape = (1, index.num_directions, *index.source_shape(3, 4))
    bg = torch.zeros(shape)
    bg[0, 0, 0, 0] = 1
    fg = torch.zeros(shape)
    neg = torch.zeros(shape)
    neg[0, 1, 0, 0] = 1
    losses = irn_losses(logits, dp, bg, fg, neg, index)
    assert losses["pos_aff"].item() == pytest.approx(-np.log(1 + 1e-5) / 2, abs=1e-6)
    # affinity 1 on a negative pair: -log(1e-5)
    assert losses["neg_aff"].item() == pytest.approx(-np.log(1e-5), rel=1e-3)
    assert losses["dp_bg"].item() == 0.0
    fg[0, 2, 0, 0] = 1  # direction (1, 0): zero field differs from target (1, 0) by 1 in L1
    losses = irn_losses(logits, dp, bg, fg, neg, index)
    assert losses["dp_fg"].item() == pytest.approx(1 / 2, rel=1e-4)


def test_confident_labels_combination():
    image = np.full((8, 8, 3), 128, np.uint8)
    high_res = np.zeros((1, 8, 8), np.float32)
    high_res[0, :, :4] = 1.0   # confident class on the left
    high_res[0, :, 4:6] = 0.1  # uncertain middle: above the bg pass, below the fg pass
    out = confident_labels(image, high_res, np.array([2]), iterations=0)
    assert (out[:, :4] == 3).all()
    assert (out[:, 4:6] == 255).all()
    assert (out[:, 6:] == 0).all()


def test_walk_to_labels_spreads_inside_boundary():
    cam = np.zeros((1, 6, 8), np.float32)
    cam[0, 1, 1] = 1.0
    edge = torch.zeros(6, 8)
    edge[:, 4] = 1.0  # a wall at column 4
    mask = walk_to_labels(cam, np.array([0]), edge, (24, 32), radius=3, exp_times=4, bg_threshold=0.25)
    assert mask.shape == (24, 32)
    assert (mask[:, :12] == 1).mean() > 0.8   # spread over the left region
    assert (mask[:, 20:] == 0).all()          # not across the wall


def test_eval_mode_subtracts_the_displacement_mean(irn):
    x = torch.randn(1, 3, 32, 32)
    irn.train()
    _, raw = irn(x)
    irn.eval()
    try:
        irn.displacement_mean.copy_(torch.tensor([0.5, -2.0]))
        _, shifted = irn(x)
    finally:
        irn.displacement_mean.zero_()
    torch.testing.assert_close(shifted, raw - torch.tensor([0.5, -2.0]).view(1, 2, 1, 1))


class _FieldIsTheImage(torch.nn.Module):
    """A stand-in IRNet whose displacement is the first two input channels at stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("displacement_mean", torch.full((2,), 7.0))

    def forward(self, x):
        return None, x[:, :2, ::4, ::4] - self.displacement_mean.view(1, 2, 1, 1)


@pytest.mark.parametrize("crop", [48, 80])  # the 64 px images cut, and padded with zeros
def test_displacement_mean_as_irnet_measures_it(tiny_demo_root, crop):
    from irnet_moana.data.voc import VOCData
    from irnet_moana.precision import FP32
    from irnet_moana.stages.train_irn import measure_displacement_mean

    data = VOCData(tiny_demo_root)
    stems = data.split("train")[:5]
    model = _FieldIsTheImage()
    got = measure_displacement_mean(model, data, stems, crop, 2, torch.device("cpu"), FP32)

    def field(stem):  # by hand: normalise, place top-left in a zero crop x crop window, every 4th pixel
        window = np.zeros((crop, crop, 3), np.float32)
        image = (data.load_image(stem) / np.float32(255) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        window[:64, :64] = image[:crop, :crop]
        return window[::4, ::4, :2]

    # two full batches; the fifth image is dropped; the old mean is not subtracted
    batch_means = [np.mean([field(s) for s in stems[i:i + 2]], axis=(0, 1, 2)) for i in (0, 2)]
    np.testing.assert_allclose(got.numpy(), np.mean(batch_means, axis=0), rtol=1e-5, atol=1e-6)
    assert torch.equal(model.displacement_mean, got)
