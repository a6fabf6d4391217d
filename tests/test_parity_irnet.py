"""Parity with the original IRNet code (jiwoon-ahn/irn), from numbers it produced.

``tests/fixtures/README.md`` says how each fixture was made. Weights are not
stored: both sides fill every tensor from a generator seeded by its name
(:func:`seeded_weight`), so a ResNet-50 needs no 100 MB file.
"""
from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from irnet_moana import io
from irnet_moana.data.datasets import InferenceDataset
from irnet_moana.data.voc import VOCData
from irnet_moana.instances import cluster_centroids, instance_masks, refine_centroids
from irnet_moana.models.cam_net import CAMNet
from irnet_moana.models.irn import IRNet, irn_losses
from irnet_moana.precision import FP32
from irnet_moana.relations import PathIndex
from irnet_moana.stages.eval_cams import seed_labels
from irnet_moana.stages.make_cams import image_cams, inference_model
from irnet_moana.stages.make_ir_labels import confident_labels
from irnet_moana.stages.make_pseudo_masks import walk_to_labels

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def seeded_weight(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The fixture's weight recipe, by torchvision-style name: BatchNorm near identity, He-scaled convolutions."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.endswith("running_var"):
        return 1.0 + 0.5 * rng.random(shape)
    if name.endswith("running_mean"):
        return 0.1 * rng.standard_normal(shape)
    if len(shape) == 1 and name.endswith("weight"):
        return 0.3 + 0.2 * rng.random(shape)
    if len(shape) == 1:
        return 0.05 * rng.standard_normal(shape)
    return rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))


@pytest.fixture(scope="module")
def voc_two(voc_sample, tmp_path_factory) -> Path:
    """The fixture's two photographs in a writable VOC layout (VOCData caches its labels there)."""
    fixture = np.load(FIXTURES / "irnet_make_cam.npz")
    root = tmp_path_factory.mktemp("voc_two")
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        (root / folder).mkdir()
        for stem in fixture["ids"]:
            shutil.copy(voc_sample / folder / f"{stem}{suffix}", root / folder / f"{stem}{suffix}")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{s}\n" for s in fixture["ids"]))
    return root


def test_make_cams_matches_irnet_make_cam(voc_two):
    """ResNet-50 CAM network (MoANA off, strides 2,2,2,1) at equal weights, scales 1.0 and 0.5, fp32."""
    fixture = np.load(FIXTURES / "irnet_make_cam.npz")
    model = CAMNet(20, "resnet50", weights="none", strides=(2, 2, 2, 1), moana=False)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            canonical = name.removeprefix("backbone.").replace("head.classifier", "classifier")
            tensor.copy_(torch.from_numpy(seeded_weight(canonical, tuple(tensor.shape))))
    model = inference_model(model, FP32)
    data = VOCData(voc_two)
    stems = [str(s) for s in fixture["ids"]]
    dataset = InferenceDataset(data, stems, [float(s) for s in fixture["scales"]], data.image_labels(stems))
    for index, stem in enumerate(stems):
        sample = dataset[index]
        keys = np.flatnonzero(sample["label"])
        assert np.array_equal(keys, fixture[f"{stem}/keys"])
        cam, high_res = image_cams(model, sample["pyramid"], sample["size"], keys, torch.device("cpu"))
        # Both are max-normalised sums of float32 maps computed in another order (BatchNorm folded
        # here, separate there): float32 noise, well under 1e-4 of the maximum 1.
        np.testing.assert_allclose(cam, fixture[f"{stem}/cam"], rtol=0, atol=1e-4)
        np.testing.assert_allclose(high_res[:, ::4, ::4], fixture[f"{stem}/high_res_every4"], rtol=0, atol=1e-4)
        assert np.array_equal(seed_labels(high_res, keys, 0.15), fixture[f"{stem}/seeds"])


@pytest.mark.parametrize("fg_threshold, bg_threshold", [(0.30, 0.05), (0.6, 0.3)])
def test_relation_labels_match_irnet_cam_to_ir_label(fg_threshold, bg_threshold):
    """Both CRF passes and their combination, on the fixture's image and CAM-like maps: identical labels."""
    fixture = np.load(FIXTURES / "irnet_cam_to_ir_label.npz")
    seen: set[int] = set()
    for stem in ("2007_000648", "2007_000129"):
        labels = confident_labels(fixture[f"{stem}/image"], fixture[f"{stem}/high_res"].astype(np.float32),
                                  fixture[f"{stem}/keys"], fg_threshold, bg_threshold)
        expected = fixture[f"{stem}/ir_label_{fg_threshold:.2f}_{bg_threshold:.2f}"]
        assert np.array_equal(labels, expected)
        seen |= set(np.unique(expected).tolist())
    assert {0, 255} <= seen, "the cases should hold background and ignored pixels"


def test_pseudo_masks_match_irnet_make_sem_seg_labels():
    """The walk over a boundary map, x4 upsampling, global max division, background 0.25, argmax.

    The sparse walk agrees with IRNet's dense one to 7e-5 of the maximum (see
    test_random_walk), so labels must agree wherever IRNet's top two scores
    differ by more than 1e-3 of the maximum; closer pixels may go either way.
    """
    fixture = np.load(FIXTURES / "irnet_sem_seg_labels.npz")
    for stem in ("2007_000648", "2007_000129"):
        labels = walk_to_labels(fixture[f"{stem}/cam"], fixture[f"{stem}/keys"],
                                torch.from_numpy(fixture[f"{stem}/boundary"]), tuple(fixture[f"{stem}/size"]))
        expected = fixture[f"{stem}/labels"]
        clear = fixture[f"{stem}/margin"].astype(np.float32) > 1e-3
        assert clear.mean() > 0.99 and len(np.unique(expected)) >= 2
        assert np.array_equal(labels[clear], expected[clear])


def test_instances_match_irnet_make_ins_seg_labels():
    """Centroid refinement, clustering, the instance-class walk and the detections of make_ins_seg_labels.

    Centroids and clusters are integer results of the same float32 arithmetic:
    identical. Detections go through the walk, hence the same 1e-3 margin rule
    as the pseudo masks; scores are walked maxima, equal to the walk's 7e-5.
    """
    fixture = np.load(FIXTURES / "irnet_ins_seg_labels.npz")
    semantic = np.load(FIXTURES / "irnet_sem_seg_labels.npz")
    for stem in ("2007_000648", "2007_000129"):
        displacement = fixture[f"{stem}/displacement"]
        centroids = refine_centroids(displacement)
        assert np.array_equal(centroids, fixture[f"{stem}/centroids"])
        clusters = cluster_centroids(centroids, displacement)
        assert np.array_equal(clusters.argmax(0), fixture[f"{stem}/clusters"]) and clusters.sum(0).max() == 1
        found = instance_masks(semantic[f"{stem}/cam"], semantic[f"{stem}/keys"],
                               torch.from_numpy(semantic[f"{stem}/boundary"]), displacement,
                               tuple(semantic[f"{stem}/size"]))
        ids = io.instance_id_map(found.masks)
        clear = fixture[f"{stem}/margin"].astype(np.float32) > 1e-3
        assert clear.mean() > 0.99
        assert np.array_equal(ids[clear], fixture[f"{stem}/instance_ids"][clear])
        assert found.labels.tolist() == (fixture[f"{stem}/classes"] + 1).tolist()
        np.testing.assert_allclose(found.scores, fixture[f"{stem}/scores"], rtol=0, atol=1e-4)


def test_affinity_labels_and_losses_match_irnet():
    """IRNet's pair labels of a 128 px label crop (radius 10, stride 4) and its four training losses."""
    fixture = np.load(FIXTURES / "irnet_affinity_losses.npz")
    path_index = PathIndex(int(fixture["radius"]))
    # RelationDataset's reduction to stride 4: the centre pixel of every 4 x 4 cell, as PIL nearest picks it
    reduced = fixture["label"][2::4, 2::4]
    pairs = path_index.pair_labels(reduced)
    order = [path_index.directions.tolist().index(list(d)) for d in fixture["search_dst"].tolist()]
    names = ("bg_pos", "fg_pos", "neg")
    for key in names:
        assert np.array_equal(getattr(pairs, key)[order].reshape(len(order), -1), fixture[key]), key
    masks = [torch.from_numpy(getattr(pairs, key).astype(np.float32))[None] for key in names]
    losses = irn_losses(torch.from_numpy(fixture["edge_logits"]), torch.from_numpy(fixture["displacement"]),
                        *masks, path_index)
    got = [losses[key].item() for key in ("pos_aff", "neg_aff", "dp_fg", "dp_bg")]
    # float32 sums of some 10^4 terms in another order
    np.testing.assert_allclose(got, fixture["losses"], rtol=1e-5)


def irnet_name(name: str) -> str:
    """The original IRNet's name of one of this project's IRNet tensors (torchvision names for the backbone)."""
    part, _, rest = name.partition(".")
    if name == "displacement_mean":
        return "mean_shift.running_mean"
    if part == "backbone":
        return rest
    if part == "edge_units":
        index, _, rest = rest.partition(".")
        return f"fc_edge{int(index) + 1}.{rest}"
    if part == "dp_units":
        index, _, rest = rest.partition(".")
        return f"fc_dp{int(index) + 1}.{rest}"
    return {"edge_out": "fc_edge6", "dp_fuse": "fc_dp6", "dp_out": "fc_dp7"}[part] + f".{rest}"


def test_boundary_and_displacement_match_irnet_edge_displacement(voc_two):
    """ResNet-50 IRNet at equal weights on a VOC photograph and its flip, padded to 512: both maps."""
    fixture = np.load(FIXTURES / "irnet_boundary.npz")
    model = IRNet("resnet50", weights="none", strides=(2, 2, 2, 1))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(torch.from_numpy(seeded_weight(irnet_name(name), tuple(tensor.shape))))
    model.eval()
    data = VOCData(voc_two)
    stem = str(fixture["id"])
    sample = InferenceDataset(data, [stem], [1.0])[0]
    boundary, displacement = (t.numpy() for t in model.infer(sample["pyramid"][0], pad_to=512))
    # a sigmoid (slope <= 1/4) of float32 logits summed in another order
    np.testing.assert_allclose(boundary, fixture["boundary"][0], rtol=0, atol=1e-5)
    # float32 sums of about 1e3 terms through GroupNorms: relative noise well under 1e-4 of the range
    scale = np.abs(fixture["displacement"]).max()
    np.testing.assert_allclose(displacement, fixture["displacement"], rtol=0, atol=1e-4 * scale)
