"""mAP^r against hand-worked cases and chainercv's eval_instance_segmentation_voc; the eval_instances CLI."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from irnet_moana import io
from irnet_moana.data.voc import DatasetError
from irnet_moana.instance_eval import (average_precision, evaluate_instances, gt_instances, mask_iou,
                                       precision_recall, score_instance_folder, touches_same_class)

REPO = Path(__file__).resolve().parents[1]
EXACT = 1e-12  # APs are sums of products of ratios of small integers


def spans(width: int, *ranges: tuple[int, int]) -> np.ndarray:
    """(K, 1, width) masks, mask k covering columns ranges[k][0] .. ranges[k][1] - 1."""
    masks = np.zeros((len(ranges), 1, width), dtype=bool)
    for k, (start, stop) in enumerate(ranges):
        masks[k, 0, start:stop] = True
    return masks


def inst(masks: np.ndarray, labels, scores=None) -> io.Instances:
    scores = np.ones(len(masks)) if scores is None else np.asarray(scores, dtype=np.float64)
    return io.Instances(masks, np.asarray(labels, dtype=np.int64), scores)


def aps(result: dict, threshold: str, num_classes: int = 1) -> list:
    return [result[threshold]["ap"][c] for c in range(1, num_classes + 1)]


def later_tie_first() -> bool:
    """Whether ``argsort()[::-1]`` puts the later of two equal scores first (NumPy's kernels do: a plain pair)."""
    return np.array([0.5, 0.5]).argsort()[::-1][0] == 1


def test_mask_iou_by_hand():
    a = spans(10, (0, 4), (2, 8))
    b = spans(10, (0, 4), (6, 10), (4, 4))
    expected = [[1, 0, 0], [2 / 8, 2 / 8, 0]]  # {2,3} of {0..7}; {6,7} of {2..9}; an empty mask meets nothing
    np.testing.assert_allclose(mask_iou(a, b), expected, rtol=0, atol=EXACT)
    assert mask_iou(spans(10, (3, 3)), spans(10, (5, 5)))[0, 0] == 0  # two empty masks: 0, not NaN
    assert mask_iou(a, b[:0]).shape == (2, 0)


def test_perfect_predictions_score_one():
    gt1 = inst(spans(12, (0, 3), (4, 8), (9, 12)), [1, 2, 1])
    gt2 = inst(spans(12, (2, 10)), [2])
    preds = [inst(gt1.masks, gt1.labels, [0.3, 0.9, 0.6]), inst(gt2.masks, gt2.labels, [0.1])]
    result = evaluate_instances(preds, [gt1, gt2], num_classes=2)
    assert list(result) == ["0.25", "0.5", "0.75"]
    for key in result:
        assert result[key] == {"map": 1.0, "ap": {1: 1.0, 2: 1.0}}
    json.dumps(result)


def test_duplicate_takes_no_free_instance_and_is_a_false_positive():
    # A = 0..9, B = 10..19. The duplicate (2..15) overlaps A by 8/16 and B by 6/18: chainercv pairs it with A,
    # already taken, and counts it false without trying B. Order TP, FP, TP: precision 1, 1/2, 2/3 at recall
    # 1/2, 1/2, 1; the envelope is 1 up to recall 1/2 and 2/3 after: AP = 1/2 + 1/2 * 2/3 = 5/6.
    gt = inst(spans(20, (0, 10), (10, 20)), [1, 1])
    pred = inst(spans(20, (0, 10), (2, 16), (10, 20)), [1, 1, 1], [0.9, 0.8, 0.7])
    result = evaluate_instances([pred], [gt], num_classes=1)
    for key in ("0.25", "0.5"):
        assert aps(result, key)[0] == pytest.approx(5 / 6, abs=EXACT)
    # at 0.75 the duplicate misses the threshold instead: still a false positive in the same place
    assert aps(result, "0.75")[0] == pytest.approx(5 / 6, abs=EXACT)
    prec, rec = precision_recall([pred], [gt], num_classes=1, iou_threshold=0.5)
    np.testing.assert_allclose(prec[1], [1, 1 / 2, 2 / 3], atol=EXACT)
    np.testing.assert_allclose(rec[1], [1 / 2, 1 / 2, 1], atol=EXACT)


def test_missed_instances_cap_recall():
    # 3 instances, 2 found: precision 1 up to recall 2/3, nothing beyond
    gt = inst(spans(12, (0, 4), (4, 8), (8, 12)), [1, 1, 1])
    pred = inst(gt.masks[:2], [1, 1], [0.9, 0.4])
    assert aps(evaluate_instances([pred], [gt], num_classes=1), "0.5")[0] == pytest.approx(2 / 3, abs=EXACT)
    # a false positive ranked first: precision 0 then 1/2 at recall 1/2; envelope 1/2 up to 1/2: AP = 1/4
    gt = inst(spans(12, (0, 4), (4, 8)), [1, 1])
    pred = inst(spans(12, (8, 12), (0, 4)), [1, 1], [0.9, 0.8])
    assert aps(evaluate_instances([pred], [gt], num_classes=1), "0.5")[0] == pytest.approx(1 / 4, abs=EXACT)


def test_map_is_the_mean_over_classes_with_ground_truth():
    # class 1 perfect (1), class 2 with ground truth and no prediction (0), class 3 predicted but absent (excluded),
    # class 4 never seen (excluded)
    gt = inst(spans(12, (0, 4), (4, 8)), [1, 2])
    pred = inst(spans(12, (0, 4), (8, 12)), [1, 3], [0.5, 0.9])
    result = evaluate_instances([pred], [gt], num_classes=4)
    for key in ("0.25", "0.5", "0.75"):
        assert result[key] == {"map": 0.5, "ap": {1: 1.0, 2: 0.0, 3: None, 4: None}}
    assert evaluate_instances([inst(pred.masks, pred.labels)], [inst(gt.masks[:0], [])], num_classes=3)["0.5"] == {
        "map": None, "ap": {1: None, 2: None, 3: None}}
    prec, rec = precision_recall([pred], [gt], num_classes=4)
    assert sorted(prec) == [1, 2, 3] and rec[3] is None and len(prec[2]) == 0
    assert math.isnan(average_precision(prec[3], rec[3])) and average_precision(prec[2], rec[2]) == 0


def test_tied_scores_follow_reversed_argsort():
    # Two copies of one instance with equal scores in one image: the first visited is true, the other a
    # duplicate. argsort()[::-1] visits the later copy first and, over the class, ranks the later entry
    # (the duplicate) first: precision 0 then 1/2 at recall 1, AP 1/2 (1 if the kernel broke the tie the other way).
    gt = inst(spans(8, (0, 4)), [1])
    pred = inst(spans(8, (0, 4), (0, 4)), [1, 1], [0.5, 0.5])
    prec, rec = precision_recall([pred], [gt], num_classes=1)
    later = later_tie_first()
    np.testing.assert_array_equal(prec[1], [0, 0.5] if later else [1, 0.5])
    assert aps(evaluate_instances([pred], [gt], num_classes=1), "0.5")[0] == (0.5 if later else 1.0)
    # A tie across images: the later image's false positive ranks first; recall 1/2 at precision 1/2: AP 1/4.
    gts = [inst(spans(8, (0, 4)), [1]), inst(spans(8, (0, 4)), [1])]
    preds = [inst(spans(8, (0, 4)), [1], [0.5]), inst(spans(8, (4, 8)), [1], [0.5])]
    assert aps(evaluate_instances(preds, gts, num_classes=1), "0.5")[0] == (0.25 if later else 0.5)
    # ties between equal outcomes do not matter
    preds = [inst(spans(8, (0, 4)), [1], [0.5]), inst(spans(8, (0, 4)), [1], [0.5])]
    assert aps(evaluate_instances(preds, gts, num_classes=1), "0.5")[0] == 1.0


def test_iou_threshold_is_reached_at_equality_and_a_miss_takes_no_instance():
    gt = inst(spans(8, (0, 4)), [1])
    half = inst(spans(8, (0, 8)), [1])  # IoU exactly 1/2
    result = evaluate_instances([half], [gt], num_classes=1)
    assert [aps(result, k)[0] for k in ("0.25", "0.5", "0.75")] == [1.0, 1.0, 0.0]
    # 0.4 IoU ranked first: a false positive at 0.5 that leaves the instance to the exact copy (AP 1/2);
    # at 0.25 it takes the instance and the exact copy is the duplicate (AP 1)
    gt = inst(spans(10, (0, 4)), [1])
    pred = inst(spans(10, (0, 10), (0, 4)), [1, 1], [0.9, 0.8])
    result = evaluate_instances([pred], [gt], num_classes=1)
    assert [aps(result, k)[0] for k in ("0.25", "0.5", "0.75")] == [1.0, 0.5, 0.5]


def test_iou_is_compared_in_float32_as_chainercv_stores_it():
    # IoU 3/10 against 0.1 + 0.2 = 0.30000000000000004: below it in float64, equal to it in float32
    gt = inst(spans(10, (0, 3)), [1])
    pred = inst(spans(10, (0, 10)), [1])
    result = evaluate_instances([pred], [gt], (0.1 + 0.2, 0.31), num_classes=1)
    assert aps(result, f"{0.1 + 0.2:g}")[0] == 1.0 and aps(result, "0.31")[0] == 0.0


def test_inputs_are_checked():
    gt = inst(spans(8, (0, 4)), [1])
    with pytest.raises(ValueError, match="outside classes 1..1"):
        evaluate_instances([inst(spans(8, (0, 4)), [2])], [gt], num_classes=1)
    with pytest.raises(ValueError, match="differ in size"):
        evaluate_instances([inst(spans(9, (0, 4)), [1])], [gt], num_classes=1)
    with pytest.raises(ValueError):
        evaluate_instances([gt, gt], [gt], num_classes=1)


# --- parity with chainercv -------------------------------------------------------------------------------------

def _rectangle(rng, h, w):
    y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
    y1, x1 = rng.integers(y0 + 3, h + 1), rng.integers(x0 + 3, w + 1)
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _jitter(rng, mask):
    """The mask's bounding box with each side moved by -1..1 pixels (inside the image, at least 1x1)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0 = min(max(ys.min() + rng.integers(-1, 2), 0), h - 1)
    x0 = min(max(xs.min() + rng.integers(-1, 2), 0), w - 1)
    y1 = max(min(ys.max() + 1 + rng.integers(-1, 2), h), y0 + 1)
    x1 = max(min(xs.max() + 1 + rng.integers(-1, 2), w), x0 + 1)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = True
    return out


def parity_case(seed: int, levels: int | None = None, images: int = 5, classes: int = 3, h: int = 20, w: int = 24):
    """The recipe of the parity inputs: per image 1-5 rectangles of random classes; each found 0, 1 or 2 times
    (a jittered copy, relabelled at random 15% of the time) plus 0-2 spurious rectangles; scores uniform, or
    drawn from ``levels`` values (ties)."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(images):
        k = int(rng.integers(1, 6))
        gt_masks = np.stack([_rectangle(rng, h, w) for _ in range(k)])
        gt_labels = rng.integers(1, classes + 1, k)
        masks, labels = [], []
        for mask, label in zip(gt_masks, gt_labels):
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                masks.append(_jitter(rng, mask))
                labels.append(label if rng.random() < 0.85 else rng.integers(1, classes + 1))
        for _ in range(int(rng.integers(0, 3))):
            masks.append(_rectangle(rng, h, w))
            labels.append(rng.integers(1, classes + 1))
        masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        scores = rng.random(len(labels)) if levels is None else rng.integers(1, levels + 1, len(labels)) / levels
        preds.append(io.Instances(masks, np.array(labels, dtype=np.int64), scores))
        gts.append(io.Instances(gt_masks, gt_labels.astype(np.int64), np.ones(k)))
    return preds, gts


# chainercv's eval_instance_segmentation_voc (commit 7159616, labels shifted to 0-based), run outside this
# repository on parity_case(seed, levels) at each threshold: (ap of classes 1, 2, 3; map). The tied case was
# chosen so that every order of its ties gives the same numbers (checked with 42 tie-breaking orders), so
# they hold on any NumPy sort kernel.
CHAINERCV = {
    (26, None): {
        0.25: ([0.6923076923076923, 0.5948051948051949, 0.7200000000000001], 0.6690376290376291),
        0.5: ([0.47962962962962963, 0.48251748251748255, 0.52], 0.4940490373823707),
        0.75: ([0.1111111111111111, 0.009090909090909092, 0.18000000000000002], 0.10006734006734008),
    },
    (277, 8): {
        0.25: ([0.4, 0.3333333333333333, 0.7142857142857143], 0.4825396825396826),
        0.5: ([0.4, 0.3333333333333333, 0.7142857142857143], 0.4825396825396826),
        0.75: ([0.1, 0.0, 0.2571428571428571], 0.11904761904761903),
    },
}


@pytest.mark.parametrize("seed, levels", list(CHAINERCV))
def test_matches_chainercv_eval_instance_segmentation_voc(seed, levels):
    preds, gts = parity_case(seed, levels)
    if levels is not None:
        assert any(len(np.unique(p.scores)) < len(p.scores) for p in preds)  # the case does have ties
    result = evaluate_instances(preds, gts, num_classes=3)
    for threshold, (ap, map_) in CHAINERCV[(seed, levels)].items():
        key = f"{threshold:g}"
        np.testing.assert_allclose(aps(result, key, 3), ap, rtol=0, atol=EXACT)
        assert result[key]["map"] == pytest.approx(map_, abs=EXACT)


# --- ground truth files and the CLI ----------------------------------------------------------------------------

def write_gt(root: Path, stem: str, objects: np.ndarray, classes: np.ndarray) -> None:
    io.save_label_png(root / "SegmentationObject" / f"{stem}.png", objects)
    io.save_label_png(root / "SegmentationClass" / f"{stem}.png", classes)


def test_touching_same_class_means_within_the_void_band_of_a_shared_outline():
    # a shared outline leaves one void pixel on each side: columns 2, 3 void, nearest pixels 1 and 4
    assert touches_same_class(inst(spans(8, (0, 2), (4, 6)), [1, 1]))
    assert not touches_same_class(inst(spans(8, (0, 2), (4, 6)), [1, 2])), "other classes"
    assert not touches_same_class(inst(spans(8, (0, 2), (5, 7)), [1, 1])), "background between them"
    # only the first and the last are of one class, and they touch
    assert touches_same_class(inst(spans(9, (4, 5), (0, 2), (7, 9)), [2, 1, 2]))
    assert not touches_same_class(inst(spans(8, (0, 2)), [1]))
    diagonal = np.zeros((2, 5, 5), dtype=bool)
    diagonal[0, 0, 0] = diagonal[1, 2, 2] = True  # sqrt(8) apart
    assert touches_same_class(inst(diagonal, [4, 4]))


def test_gt_instances_from_voc_pngs(tmp_path):
    objects = np.array([[0, 1, 1, 255, 3],
                        [0, 1, 255, 3, 3],
                        [2, 2, 0, 0, 255]], dtype=np.uint8)
    classes = np.array([[0, 15, 15, 255, 7],
                        [0, 15, 255, 9, 7],
                        [4, 4, 0, 0, 255]], dtype=np.uint8)
    write_gt(tmp_path, "a", objects, classes)
    got = gt_instances(tmp_path, "a")
    np.testing.assert_array_equal(got.masks, objects[None] == np.array([1, 2, 3])[:, None, None])
    np.testing.assert_array_equal(got.labels, [15, 4, 7])  # instance 3 covers classes 7 and 9: the smallest
    np.testing.assert_array_equal(got.scores, [1, 1, 1])
    assert got.masks.dtype == bool

    write_gt(tmp_path, "empty", np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8))
    assert gt_instances(tmp_path, "empty").masks.shape == (0, 2, 3)

    classes[0, 1] = 0
    write_gt(tmp_path, "bg", objects, classes)
    with pytest.raises(DatasetError, match="instance 1 of .*bg.png covers background"):
        gt_instances(tmp_path, "bg")
    (tmp_path / "SegmentationObject" / "a.png").unlink()
    with pytest.raises(DatasetError, match="SegmentationObject/a.png is missing; .*VOC 2012 devkit"):
        gt_instances(tmp_path, "a")


@pytest.fixture
def eval_main(monkeypatch):
    """eval_instances.main, imported the way the script runs (pipelines/ on the path)."""
    monkeypatch.syspath_prepend(str(REPO / "pipelines"))
    return importlib.import_module("eval_instances").main


def test_cli_end_to_end(tmp_path, eval_main, capsys):
    gt_root, pred_dir = tmp_path / "voc", tmp_path / "pred"
    objects = np.array([[1, 1, 0, 2, 2, 2],
                        [1, 1, 0, 2, 2, 2]], dtype=np.uint8)
    classes = np.where(objects == 1, 3, np.where(objects == 2, 1, 0)).astype(np.uint8)
    write_gt(gt_root, "x", objects, classes)
    write_gt(gt_root, "y", np.where(objects == 1, 1, 0).astype(np.uint8), np.where(objects == 1, 1, 0).astype(np.uint8))
    (gt_root / "classes.txt").write_text("cat\ndog\ncow\n")
    # x: both found; y: its instance missed, a false positive instead
    io.save_instances(pred_dir / "x", inst(np.stack([objects == 1, objects == 2]), [3, 1], [0.9, 0.8]))
    io.save_instances(pred_dir / "y", inst((objects == 2)[None], [1], [0.95]))
    io.write_json(pred_dir / "summary.json", {"not": "an image"})  # a JSON without a PNG is not listed

    out = tmp_path / "result.json"
    summary = eval_main(["--pred", str(pred_dir), "--gt", str(gt_root), "--out", str(out)])
    printed = capsys.readouterr().out
    # cat: FP (0.95, y) then TP (0.8, x) of 2 instances: precision 1/2 up to recall 1/2, AP 25 %;
    # cow: 100 %; dog: no ground truth, left out of the mean
    expected = {"map": 62.5, "ap": {"cat": 25.0, "dog": None, "cow": 100.0}}
    assert summary["0.5"] == expected and summary["num_images"] == 2
    assert json.loads(out.read_text()) == summary
    assert "mAP^r 0.25 / 0.5 / 0.75: 62.5 / 62.5 / 62.5" in printed and f"wrote {out}" in printed
    assert "AP@0.75" in printed and "dog" in printed

    listed = tmp_path / "list.txt"
    listed.write_text("x\n")
    assert eval_main(["--pred", str(pred_dir), "--gt", str(gt_root), "--list", str(listed)])["0.5"]["map"] == 100.0

    with pytest.raises(DatasetError, match="none of the 2 images has touching instances of one class"):
        eval_main(["--pred", str(pred_dir), "--gt", str(gt_root), "--touching"])
    # z: two cows across a shared outline, predicted as one merged instance over the band (IoU 4/12 with each):
    # at 0.25 it finds one of the two (recall 1/2 at precision 1), at 0.5 none
    cows = np.array([[1, 1, 255, 255, 2, 2]] * 2, dtype=np.uint8)
    write_gt(gt_root, "z", cows, np.where(cows == 255, 255, np.where(cows > 0, 3, 0)).astype(np.uint8))
    io.save_instances(pred_dir / "z", inst((cows > 0)[None], [3], [0.7]))
    touching = eval_main(["--pred", str(pred_dir), "--gt", str(gt_root), "--touching"])
    assert touching["num_images"] == 1 and touching["0.25"]["map"] == 50.0 and touching["0.5"]["map"] == 0.0


def test_folder_errors_name_the_files(tmp_path):
    gt_root, pred_dir = tmp_path / "voc", tmp_path / "pred"
    write_gt(gt_root, "x", np.ones((2, 3), np.uint8), np.ones((2, 3), np.uint8))
    pred_dir.mkdir()
    with pytest.raises(DatasetError, match=r"pred/x.json is missing; run the make_instance_masks stage"):
        score_instance_folder(pred_dir, gt_root, ["x"])
    io.save_instances(pred_dir / "x", inst(np.ones((1, 3, 3), bool), [1]))
    with pytest.raises(DatasetError, match=r"pred/x.png is 3x3 but ground truth .*SegmentationObject/x.png is 3x2"):
        score_instance_folder(pred_dir, gt_root, ["x"])
    io.save_instances(pred_dir / "x", inst(np.ones((1, 2, 3), bool), [2]))
    with pytest.raises(DatasetError, match=r"pred/x.json: class labels \[2\] are outside 1..1"):
        score_instance_folder(pred_dir, gt_root, ["x"], ["cat"])
    with pytest.raises(DatasetError, match="nothing to evaluate"):
        score_instance_folder(tmp_path / "voc", gt_root)
