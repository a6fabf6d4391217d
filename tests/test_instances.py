import numpy as np
import pytest
import torch

from irnet_moana.instances import (cluster_centroids, detect_instances, instance_masks, refine_centroids,
                                   semantic_components)


def field_to(centres: list[tuple[float, float]], owner: np.ndarray) -> np.ndarray:
    """(2, h, w) displacement from each pixel to the centre of the region ``owner`` gives it (-1: none)."""
    yy, xx = np.mgrid[:owner.shape[0], :owner.shape[1]].astype(np.float32)
    field = np.zeros((2, *owner.shape), np.float32)
    for index, (cy, cx) in enumerate(centres):
        region = owner == index
        field[0][region], field[1][region] = cy - yy[region], cx - xx[region]
    return field


def test_zero_field_leaves_every_pixel_at_home():
    centroids = refine_centroids(np.zeros((2, 3, 4), np.float32), steps=5)
    assert np.array_equal(centroids, np.stack(np.mgrid[:3, :4]))


def test_field_to_a_point_gathers_the_pixels_there_and_clips_to_the_map():
    owner = np.zeros((5, 6), int)
    centroids = refine_centroids(field_to([(2.0, 3.0)], owner), steps=1)
    assert (centroids[0] == 2).all() and (centroids[1] == 3).all()
    outside = np.full((2, 3, 3), 10.0, np.float32)  # pushed past the corner, every step
    assert (refine_centroids(outside, steps=3) == 2).all()


def test_bilinear_sampling_between_pixels():
    field = np.zeros((2, 1, 8), np.float32)
    field[1, 0, :4] = [1.0, 0.5, 1.0, 0.0]  # dx per column; dy 0
    # from column 0: 0 + 1 = 1; 1 + 0.5 = 1.5; 1.5 + (0.5 + 1.0) / 2 = 2.25; 2.25 + 0.75 * 1.0 = 3.0
    assert refine_centroids(field, steps=3)[1, 0, 0] == 2
    assert refine_centroids(field, steps=4)[1, 0, 0] == 3
    field[1, 0, :4] = [1.0, 0.5, 0.5, 0.0]  # ends at 2.5, rounded half to even
    assert refine_centroids(field, steps=4)[1, 0, 0] == 2


def test_clusters_follow_the_weak_region_each_centroid_lands_in():
    # two objects side by side; where they meet the field is strong (|D| >= 2.5), so the weak
    # regions around the two centres are apart
    owner = np.zeros((4, 12), int)
    owner[:, 6:] = 1
    field = field_to([(1.5, 2.5), (1.5, 8.5)], owner)
    groups = cluster_centroids(refine_centroids(field), field)
    assert groups.shape == (2, 4, 12) and groups.sum(0).max() == 1
    assert groups[0, :, :6].all() and groups[1, :, 6:].all()


def test_detections_split_components_zero_small_fragments_and_take_the_max():
    scores = np.zeros((2, 4, 10), np.float32)
    scores[0, :, :3] = 0.6      # a 12-pixel component
    scores[0, 0, 2] = 0.9
    scores[0, 0, 9] = 0.5       # a 1-pixel fragment, under 10% of 40 pixels
    scores[1, :, 5:8] = 0.3
    scores[1, 1, 6] = 0.1       # below the background score: not owned
    found = detect_instances(scores, [4, 7], bg_threshold=0.2, min_fragment=0.1)
    assert found.labels.tolist() == [4, 4, 7]
    np.testing.assert_allclose(found.scores, [0.9, 0.0, 0.3])
    assert found.masks[0].sum() == 12 and found.masks[1].sum() == 1 and found.masks[2].sum() == 11


def test_touching_objects_of_one_class_become_two_instances():
    # two touching squares of class 3 (key 2), a field pointing at each centre, a flat CAM over both
    owner = np.full((12, 16), -1)
    owner[2:10, 1:8], owner[2:10, 8:15] = 0, 1
    field = field_to([(5.5, 4.0), (5.5, 11.0)], owner)
    cam = (owner >= 0).astype(np.float32)[None]
    boundary = torch.zeros(12, 16)
    boundary[:, 8] = 1.0  # the boundary between them
    found = instance_masks(cam, np.array([2]), boundary, field, (48, 64), bg_threshold=0.25)
    real = [k for k, s in enumerate(found.scores) if s > 0]
    assert found.labels[real].tolist() == [3, 3]
    left, right = (found.masks[k] for k in real)
    assert left[20, 10] and right[20, 50] and not left[20, 50] and not right[20, 10]


def test_semantic_components_are_instances_scored_by_mean_cam():
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :2], mask[:, 4:] = 5, 5
    mask[0, 3] = 2
    high_res = np.stack([np.full((4, 6), 0.2, np.float32), np.arange(24, dtype=np.float32).reshape(4, 6) / 24])
    found = semantic_components(mask, high_res, np.array([1, 4]))
    assert found.labels.tolist() == [2, 5, 5]
    np.testing.assert_allclose(found.scores, [0.2, np.mean([0, 1, 6, 7, 12, 13, 18, 19]) / 24,
                                              np.mean([4, 5, 10, 11, 16, 17, 22, 23]) / 24])


@pytest.mark.parametrize("steps", [0, 300])
def test_centroid_steps_setting(steps):
    owner = np.zeros((3, 3), int)
    centroids = refine_centroids(field_to([(1.0, 1.0)], owner), steps=steps)
    assert (centroids[:, 1, 1] == 1).all() and (centroids[:, 0, 0] == (1 if steps else 0)).all()
