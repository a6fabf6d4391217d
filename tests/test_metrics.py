import numpy as np
import pytest

from irnet_moana.metrics import ConfusionMatrix, format_iou_table, format_mean_std, mean_std


def test_hand_computed_iou():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    # class 0: TP 3, FP 1, FN 1 -> 3/5; class 1: TP 3, FP 1, FN 1 -> 3/5; class 2 absent -> NaN
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.6) and iou[1] == pytest.approx(0.6)
    assert np.isnan(iou[2])
    assert cm.miou() == pytest.approx(0.6)
    assert cm.pixel_accuracy() == pytest.approx(6 / 8)


def test_ignore_and_predicted_255():
    gt = np.array([[255, 1], [1, 0]])
    pred = np.array([[1, 255], [1, 0]])
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    # gt 255 ignored; predicted 255 on a class-1 pixel counts as background
    assert cm.matrix.tolist() == [[1, 0], [1, 1]]
    assert cm.iou()[1] == pytest.approx(0.5)
    assert cm.iou()[0] == pytest.approx(0.5)


def test_all_ignore_image_changes_nothing():
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((4, 4), int), np.full((4, 4), 255))
    assert cm.matrix.sum() == 0
    assert np.isnan(cm.miou())


def test_class_only_in_prediction_counts_with_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[2, 0]]), np.array([[0, 0]]))
    iou = cm.iou()
    assert iou[2] == 0.0 and iou[0] == pytest.approx(0.5)
    assert np.isnan(iou[1])
    assert cm.miou() == pytest.approx(0.25)


def test_accumulates_over_images_not_per_image_mean():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[1, 1]]), np.array([[1, 1]]))
    cm.update(np.array([[0, 0, 0, 0, 0, 0]]), np.array([[1, 1, 1, 1, 1, 1]]))
    # set-level class-1 IoU = 2 / 8, not the mean of per-image 1.0 and 0.0
    assert cm.iou()[1] == pytest.approx(0.25)


def test_error_rates_and_summary():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1, 1, 2]]), np.array([[0, 0, 1, 2]]))
    rates = cm.error_rates()
    # bg: TP 1, FP 0, FN 1 -> fn 1/2; class 1: TP1 FP1 FN0 -> fp 1/2; class 2 perfect
    assert rates["bg_fn"] == pytest.approx(0.5) and rates["bg_fp"] == 0
    assert rates["fg_fp"] == pytest.approx(0.25) and rates["fg_fn"] == 0
    summary = cm.summary(["background", "a", "b"])
    assert summary["iou"] == {"background": 50.0, "a": 50.0, "b": 100.0}
    assert summary["miou"] == pytest.approx(66.67)
    assert "mIoU" in format_iou_table(summary)


def test_rejects_bad_input():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="0..1"):
        cm.update(np.full((2, 2), 5), np.zeros((2, 2)))


def test_mean_and_sample_standard_deviation_of_the_runs_that_have_the_figure():
    # mean of 50, 52, 57 = 53; squared deviations 9 + 1 + 16 = 26 over n - 1 = 2: sqrt(13)
    mean, std = mean_std([50.0, None, 52.0, 57.0])
    assert mean == pytest.approx(53.0) and std == pytest.approx(13 ** 0.5)
    assert mean_std([61.5]) == (61.5, None)
    assert mean_std([None, None]) == (None, None)
    assert format_mean_std(53.0, 13 ** 0.5) == "  53.0 ± 3.6"
    assert format_mean_std(61.5, None) == "  61.5"
