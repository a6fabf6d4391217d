"""WSOL box geometry and metrics against hand-computed values, and the eval_wsol CLI end to end."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from irnet_moana.cli import main_guard
from irnet_moana.wsol.boxes import (box_iou, boxes_at_thresholds, boxes_from_scoremap, centre_scoremap,
                                    normalize_scoremap, resize_boxes)
from irnet_moana.wsol.evaluation import BoxAccumulator, format_one_line, format_results
from irnet_moana.wsol.metadata import WSOLMetadata, write_metadata

REPO = Path(__file__).resolve().parents[1]


def square_map(*regions: tuple[int, int, float], size: int = 224) -> np.ndarray:
    """A map that is ``value`` on rows and columns start..stop-1 of each (start, stop, value), 0 elsewhere."""
    scoremap = np.zeros((size, size))
    for start, stop, value in regions:
        scoremap[start:stop, start:stop] = value
    return scoremap


def box_set(boxes: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in box) for box in boxes}


# ---------------------------------------------------------------- IoU
def test_iou_uses_the_plus_one_pixel_convention():
    a = np.array([[0, 0, 9, 9], [3, 3, 3, 3], [0, 0, 0, 0]])
    b = np.array([[5, 5, 14, 14], [0, 0, 9, 9], [20, 20, 29, 29], [0, 0, 1, 1]])
    iou = box_iou(a, b)
    assert iou.shape == (3, 4)
    # 10x10 boxes overlapping on 5x5 pixels: 25 / (100 + 100 - 25).
    assert iou[0, 0] == pytest.approx(25 / 175)
    assert iou[0, 1] == 1.0
    assert iou[0, 2] == 0.0
    # (0,0,0,0) is one pixel, (0,0,1,1) four: 1 / 4.
    assert iou[0, 3] == pytest.approx(4 / 100)
    assert iou[1, 1] == pytest.approx(1 / 100)
    assert iou[2, 3] == pytest.approx(1 / 4)
    assert iou[1, 0] == 0.0


def test_iou_of_malformed_boxes_with_non_positive_union_is_zero():
    box = np.array([[5, 5, 3, 5]])  # area (3-5+1) * 1 = -1
    assert box_iou(box, box)[0, 0] == 0.0


def test_resize_boxes_truncates_each_scaled_coordinate():
    # 10*224/200 = 11.2, 20*224/300 = 14.93, 99*224/200 = 110.88, 149*224/300 = 111.25,
    # 199*224/200 = 222.88, 299*224/300 = 223.25
    resized = resize_boxes([[10, 20, 99, 149], [0, 0, 199, 299]], (200, 300))
    assert resized.tolist() == [[11, 14, 110, 111], [0, 0, 222, 223]]


# ---------------------------------------------------------------- score maps
def test_normalize_scoremap_resizes_and_min_max_normalises():
    exact = np.full((224, 224), 2.0)
    exact[10:20, 10:20] = 6.0
    normalised = normalize_scoremap(exact)
    assert normalised[0, 0] == 0.0 and normalised[15, 15] == 1.0
    small = normalize_scoremap(np.arange(28 * 28, dtype=np.float32).reshape(28, 28))
    assert small.shape == (224, 224) and small.min() == 0.0 and small.max() == 1.0
    # Increasing along rows stays increasing after bicubic resizing.
    assert small[0, 0] < small[112, 0] < small[223, 0]


def test_normalize_scoremap_zeroes_constant_and_nan_maps():
    assert not normalize_scoremap(np.full((7, 9), 3.0)).any()
    broken = np.ones((5, 5))
    broken[2, 2] = np.nan
    assert not normalize_scoremap(broken).any()
    with pytest.raises(ValueError, match="2-D"):
        normalize_scoremap(np.ones((2, 2, 2)))


def test_one_blob_gives_its_box_with_the_reference_far_corner():
    # Rows 10..19, columns 30..59: boundingRect (30, 10, w=30, h=10) -> far corner x + w, y + h.
    scoremap = np.zeros((224, 224))
    scoremap[10:20, 30:60] = 1.0
    boxes, largest = boxes_from_scoremap(scoremap, 0.5)
    assert boxes.tolist() == [[30, 10, 60, 20]]
    assert largest.tolist() == [30, 10, 60, 20]


def test_two_blobs_give_two_boxes_and_the_larger_one_as_largest():
    scoremap = np.zeros((224, 224))
    scoremap[10:20, 30:60] = 1.0        # polygon area 29 * 9
    scoremap[100:140, 100:140] = 0.6    # quantised 153; polygon area 39 * 39
    boxes, largest = boxes_from_scoremap(scoremap, 0.5)  # level int(0.5 * 255) = 127
    assert box_set(boxes) == {(30, 10, 60, 20), (100, 100, 140, 140)}
    assert largest.tolist() == [100, 100, 140, 140]
    boxes, largest = boxes_from_scoremap(scoremap, 0.7)  # level 178: only the 1.0 blob
    assert boxes.tolist() == [[30, 10, 60, 20]] and largest.tolist() == [30, 10, 60, 20]


def test_foreground_is_strictly_above_the_threshold_level():
    scoremap = square_map((0, 10, 1.0), (50, 60, 0.5))  # 0.5 quantises to 127
    at_50 = boxes_at_thresholds(scoremap, [0.49, 0.5])
    assert box_set(at_50[0][0]) == {(0, 0, 10, 10), (50, 50, 60, 60)}  # level 124
    assert box_set(at_50[1][0]) == {(0, 0, 10, 10)}                    # level 127, 127 > 127 fails


def test_empty_map_gives_the_single_zero_box():
    boxes, largest = boxes_from_scoremap(np.zeros((224, 224)), 0.0)
    assert boxes.tolist() == [[0, 0, 0, 0]] and largest.tolist() == [0, 0, 0, 0]


def test_boxes_are_clipped_to_the_map_and_holes_count_as_contours():
    scoremap = np.zeros((224, 224))
    scoremap[200:224, 200:224] = 1.0            # x + w = 224 is clipped to 223
    scoremap[50:90, 50:90] = 1.0
    scoremap[60:80, 60:80] = 0.0                # a hole: its contour runs on pixels 59..80
    boxes, largest = boxes_from_scoremap(scoremap, 0.5)
    assert box_set(boxes) == {(200, 200, 223, 223), (50, 50, 90, 90), (59, 59, 81, 81)}
    assert largest.tolist() == [50, 50, 90, 90]


def test_boxes_from_scoremap_rejects_unnormalised_maps():
    with pytest.raises(ValueError, match="normalise"):
        boxes_from_scoremap(np.full((4, 4), 2.0), 0.5)


def test_centre_scoremap_box_covers_the_central_half():
    boxes, largest = boxes_from_scoremap(centre_scoremap(), 0.3)
    assert boxes.tolist() == [[56, 56, 168, 168]] and largest.tolist() == [56, 56, 168, 168]


# ---------------------------------------------------------------- metrics on a hand-made split
def hand_made_split() -> tuple[WSOLMetadata, dict[str, np.ndarray], dict[str, list[int]]]:
    """Six images whose correctness per threshold index k (t = k / 100) is worked out by hand.

    A  GT 40..99. Map 0.5 on 40..99, 1.0 on 50..89. k<=49: box (40,40,100,100), IoU 3600/3721 = .967;
       k>=50: box (50,50,90,90), IoU 1681/3600 = .467 (right at IoU 30 only).
    B  GT left half (0,0,111,223). Map 0.3 on the right half but 0 in its last pixel (so that min-max
       normalisation keeps 0.3), 1.0 on the left half. k<=29 (level < 76): the whole map but one
       pixel, box (0,0,223,223), IoU 25088/50176 = .5 exactly; k>=30: box (0,0,112,223), IoU .991.
    C  448 x 448 image, two GT boxes -> (0,0,49,49) and (150,150,199,199) at 224. Map 1.0 on 150..199:
       box (150,150,200,200), IoU 2500/2601 = .961 with the second GT box, at every k.
    D  GT 10..59. Map 0.5 on 10..59 (box IoU .961) and 1.0 on 100..199 (IoU 0). k<=49: some box is
       right but the largest is not; k>=50: only the wrong blob.
    E  GT 100..199, all-zero map: box (0,0,0,0), never right.
    F  GT 0..99. Map 1.0 on 0..59: box (0,0,60,60), IoU 3721/10000 = .372 (IoU 30 only), every k.
    """
    left_half = np.full((224, 224), 0.3)
    left_half[:, :112] = 1.0
    left_half[223, 223] = 0.0
    maps = {
        "a.jpg": square_map((40, 100, 0.5), (50, 90, 1.0)),
        "b.jpg": left_half,
        "c.jpg": square_map((150, 200, 1.0)),
        "d.jpg": square_map((10, 60, 0.5), (100, 200, 1.0)),
        "e.jpg": np.zeros((224, 224)),
        "f.jpg": square_map((0, 60, 1.0)),
    }
    boxes = {
        "a.jpg": [(40, 40, 99, 99)], "b.jpg": [(0, 0, 111, 223)],
        "c.jpg": [(0, 0, 98, 98), (300, 300, 398, 398)], "d.jpg": [(10, 10, 59, 59)],
        "e.jpg": [(100, 100, 199, 199)], "f.jpg": [(0, 0, 99, 99)],
    }
    ids = list(maps)
    sizes = {i: (224, 224) for i in ids}
    sizes["c.jpg"] = (448, 448)
    labels = dict(zip(ids, [0, 1, 2, 0, 1, 2]))
    # Top-1 right for a, d, e; label in the first five for a, b, d, e (f's label is sixth).
    topk = {"a.jpg": [0, 1, 2, 3, 4], "b.jpg": [2, 1, 0, 3, 4], "c.jpg": [0, 1, 3, 4, 5],
            "d.jpg": [0, 1, 2, 3, 4], "e.jpg": [1, 0, 2, 3, 4], "f.jpg": [5, 6, 7, 8, 9, 2]}
    return WSOLMetadata(ids, labels, sizes, boxes), maps, topk


def filled(with_predictions: bool = True) -> BoxAccumulator:
    metadata, maps, topk = hand_made_split()
    accumulator = BoxAccumulator(metadata)
    for image_id, scoremap in maps.items():
        accumulator.add(image_id, scoremap, topk[image_id] if with_predictions else None)
    return accumulator


def test_gt_boxes_are_resized_to_224():
    assert filled().gt_boxes("c.jpg").tolist() == [[0, 0, 49, 49], [150, 150, 199, 199]]


def test_max_box_acc_v2_and_gt_known_curve_match_hand_counts():
    accumulator = filled()
    # IoU 30: a b c d f right for k<=49 -> 5/6. IoU 50: a b c d for k<=49 -> 4/6.
    # IoU 70: k<=29 a c d, k 30..49 a b c d -> 4/6 first reached at t = 0.30.
    result = accumulator.result("test")
    assert result["num_images"] == 6
    assert result["MaxBoxAccV2_per_iou"] == pytest.approx({"30": 500 / 6, "50": 400 / 6, "70": 400 / 6})
    assert result["MaxBoxAccV2_best_threshold"] == {"30": 0.0, "50": 0.0, "70": 0.3}
    assert result["MaxBoxAccV2"] == pytest.approx(1300 / 18)
    # Largest contour at IoU 50: a b c for k<=49, b c after.
    curve = accumulator.gt_known_curve()
    assert curve[:50] == pytest.approx(np.full(50, 50.0))
    assert curve[50:] == pytest.approx(np.full(50, 200 / 6))
    assert result["MaxBoxAcc"] == pytest.approx(50.0) and result["MaxBoxAcc_threshold"] == 0.0


def test_loc_metrics_at_the_threshold_chosen_on_the_split():
    result = filled().result("test")
    assert result["threshold"] == 0.0 and result["threshold_split"] == "test"
    assert result["gt_known_loc"] == pytest.approx(50.0)          # a b c
    assert result["top1_loc"] == pytest.approx(100 / 6)           # a (b, c have the wrong top-1)
    assert result["top5_loc"] == pytest.approx(200 / 6)           # a b (c's label is not in its top 5)
    assert result["top1_cls"] == pytest.approx(50.0)              # a d e
    assert result["top5_cls"] == pytest.approx(400 / 6)           # a b d e


def test_loc_metrics_at_a_given_threshold():
    result = filled().result("test", threshold=0.5, threshold_split="val")
    assert result["threshold"] == 0.5 and result["threshold_split"] == "val"
    assert result["gt_known_loc"] == pytest.approx(200 / 6)       # b c
    assert result["top1_loc"] == 0.0
    assert result["top5_loc"] == pytest.approx(100 / 6)           # b
    # MaxBoxAccV2 does not depend on the localisation threshold.
    assert result["MaxBoxAccV2"] == pytest.approx(1300 / 18)


def test_threshold_chosen_on_another_split():
    # Map 0.2 (quantised 51; one pixel 0 so normalisation keeps it) and 1.0 on the GT square 60..99:
    # wrong while the whole map passes (k <= 19), box (60,60,100,100) with IoU 1600/1681 from t = 0.20.
    val_map = np.full((224, 224), 0.2)
    val_map[60:100, 60:100] = 1.0
    val_map[0, 0] = 0.0
    val = BoxAccumulator(WSOLMetadata(["v.jpg"], {"v.jpg": 0}, {"v.jpg": (224, 224)}, {"v.jpg": [(60, 60, 99, 99)]}))
    val.add("v.jpg", val_map)
    assert val.best_threshold() == pytest.approx(0.2)
    result = filled().result("test", val.best_threshold(), "val")
    assert result["threshold"] == 0.2 and result["gt_known_loc"] == pytest.approx(50.0)


def test_without_predictions_class_dependent_metrics_are_none():
    result = filled(with_predictions=False).result("test")
    assert result["top1_loc"] is None and result["top5_loc"] is None and result["top1_cls"] is None
    assert result["gt_known_loc"] == pytest.approx(50.0)
    table = format_results(result)
    assert "MaxBoxAccV2" in table and "n/a" in table and "72.22" in table
    assert "threshold 0 from test" in format_one_line(result)


def test_merge_equals_one_accumulator():
    metadata, maps, topk = hand_made_split()
    first, second = BoxAccumulator(metadata), BoxAccumulator(metadata)
    for index, (image_id, scoremap) in enumerate(maps.items()):
        (first if index % 2 else second).add(image_id, scoremap, topk[image_id])
    first.merge(second)
    assert first.result("test") == filled().result("test")
    with pytest.raises(ValueError, match="in both"):
        first.merge(second)


def test_accumulator_rejects_misuse():
    metadata, maps, topk = hand_made_split()
    accumulator = BoxAccumulator(metadata)
    with pytest.raises(ValueError, match="no images"):
        accumulator.result("test")
    accumulator.add("a.jpg", maps["a.jpg"], topk["a.jpg"])
    with pytest.raises(ValueError, match="twice"):
        accumulator.add("a.jpg", maps["a.jpg"])
    with pytest.raises(KeyError, match="zzz"):
        accumulator.add("zzz.jpg", maps["a.jpg"])
    accumulator.add("b.jpg", maps["b.jpg"])
    with pytest.raises(ValueError, match="for all images or for none"):
        accumulator.result("test")
    with pytest.raises(ValueError, match="not on the grid"):
        accumulator.threshold_index(0.005)


def test_centre_baseline_on_a_centred_box():
    # GT 56..167 vs the baseline box (56,56,168,168): IoU 112^2 / 113^2 = 0.982.
    metadata = WSOLMetadata(["x.jpg"], {"x.jpg": 0}, {"x.jpg": (224, 224)}, {"x.jpg": [(56, 56, 167, 167)]})
    accumulator = BoxAccumulator(metadata)
    accumulator.add("x.jpg", centre_scoremap())
    assert accumulator.result("test")["MaxBoxAccV2"] == pytest.approx(100.0)


# ---------------------------------------------------------------- CLI
def write_split(root: Path, with_maps: bool = True) -> Path:
    """Metadata with nested ids plus score maps <id>.npy (one 224 map, one 28 x 28 map)."""
    ids = ["001.Bird/a.jpg", "002.Fish/b.jpg"]
    metadata = WSOLMetadata(ids, {ids[0]: 0, ids[1]: 1}, {ids[0]: (224, 224), ids[1]: (448, 224)},
                            {ids[0]: [(40, 40, 99, 99)], ids[1]: [(0, 0, 447, 223)]})
    write_metadata(root / "meta" / "test", metadata)
    if with_maps:
        maps = root / "maps"
        (maps / "001.Bird").mkdir(parents=True)
        (maps / "002.Fish").mkdir(parents=True)
        np.save(maps / "001.Bird" / "a.jpg.npy", square_map((40, 100, 1.0)).astype(np.float32))
        np.save(maps / "002.Fish" / "b.jpg.npy", np.random.default_rng(0).random((28, 28)))
    return root / "meta" / "test"


@pytest.fixture
def main(monkeypatch):
    """eval_wsol.main, imported the way the script runs (pipelines/ on the path)."""
    monkeypatch.syspath_prepend(str(REPO / "pipelines"))
    return importlib.import_module("eval_wsol").main


def test_cli_writes_json_with_the_expected_keys(tmp_path, main):
    meta = write_split(tmp_path)
    predictions = tmp_path / "pred.json"
    predictions.write_text(json.dumps({"001.Bird/a.jpg": [0, 3, 4, 5, 6], "002.Fish/b.jpg": [0, 1, 2, 3, 4]}))
    out = tmp_path / "out" / "wsol.json"
    main(["--scoremap-root", str(tmp_path / "maps"), "--metadata-root", str(meta), "--predictions",
          str(predictions), "--out", str(out), "--no-progress"])
    result = json.loads(out.read_text())
    assert {"MaxBoxAccV2", "MaxBoxAccV2_per_iou", "MaxBoxAccV2_best_threshold", "MaxBoxAcc", "top1_loc",
            "top5_loc", "gt_known_loc", "threshold", "threshold_split", "num_images"} <= set(result)
    assert result["num_images"] == 2 and result["threshold_split"] == "test"
    # Image a is right at every threshold (IoU 3600/3721), so GT-known Loc is at least 50.
    assert result["gt_known_loc"] >= 50.0
    assert result["top1_loc"] <= 50.0 and result["top5_loc"] <= result["gt_known_loc"]


def test_cli_threshold_from_another_split_and_fixed_threshold(tmp_path, main):
    meta = write_split(tmp_path)
    maps = str(tmp_path / "maps")
    chosen = main(["--scoremap-root", maps, "--metadata-root", str(meta), "--threshold-metadata-root", str(meta),
                   "--threshold-scoremap-root", maps, "--no-progress"])
    assert chosen["threshold_split"] == "test" and chosen["top1_loc"] is None
    fixed = main(["--scoremap-root", maps, "--metadata-root", str(meta), "--threshold", "0.35",
                  "--threshold-split", "val", "--no-progress"])
    assert fixed["threshold"] == 0.35 and fixed["threshold_split"] == "val"
    with pytest.raises(SystemExit):
        main(["--scoremap-root", maps, "--metadata-root", str(meta), "--threshold", "0.355"])


def test_cli_names_a_missing_score_map(tmp_path, main, monkeypatch, capsys):
    meta = write_split(tmp_path, with_maps=False)
    (tmp_path / "maps").mkdir()
    monkeypatch.setattr(sys, "argv", ["eval_wsol.py", "--scoremap-root", str(tmp_path / "maps"),
                                      "--metadata-root", str(meta), "--no-progress"])
    with pytest.raises(SystemExit) as stopped:
        main_guard(main)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "001.Bird/a.jpg.npy" in err and "not found" in err
