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


def test_boundary_crops_and_merges_flip(irn):
    image = torch.randn(1, 3, 50, 70)
    pair = torch.cat([image, image.flip(-1)])
    b = irn.boundary(pair, pad_to=64)
    assert b.shape == (13, 18)
    assert float(b.min()) > 0 and float(b.max()) < 1


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
