"""The benchmark's reference-style loop computes make_cams' CAMs; its figures; gpu_check without a GPU."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import benchmark as bench
import gpu_check
from benchmark import (
    ALLOCATOR_VARIABLES,
    allocator_setting,
    cam_model,
    conv_peak_gflops,
    pyramid_flops,
    round_robin,
    seed_miou,
    summarize_walk_rows,
    synthetic_cams,
)
from irnet_moana.config import load_config
from irnet_moana.data.cams import label_keys
from irnet_moana.data.synthetic import generate_voc_demo
from irnet_moana.data.voc import VOCData
from irnet_moana.models.cam_net import CAMNet
from irnet_moana.precision import Precision
from irnet_moana.stages.eval_cams import seed_labels
from irnet_moana.stages.make_cams import image_cams, inference_model
from reference import reference_style_cams
from tolerances import assert_close_to_scale


def test_reference_style_loop_gives_make_cams_output(one_torch_thread):
    torch.manual_seed(0)
    model = CAMNet(4, backbone="resnet18", weights="none", moana=True).eval()
    size, keys = (37, 50), np.array([0, 2])
    pyramid = []
    for scale in (1.0, 0.5):
        image = torch.rand(1, 3, round(size[0] * scale), round(size[1] * scale))
        pyramid.append(torch.cat([image, image.flip(-1)]))
    fp32 = inference_model(copy.deepcopy(model), Precision("fp32", "test"))
    expected = image_cams(fp32, pyramid, size, keys, torch.device("cpu"))
    got = reference_style_cams(model, pyramid, size, keys)
    assert got[0].shape == (2, 10, 13) and got[1].shape == (2, *size)
    for a, b in zip(got, expected):
        # folded BatchNorm, channels-last and another batch against the plain network; maps scaled to max 1
        assert_close_to_scale(a, b, layers=18, fan_in=3 * 3 * 512)
        assert np.isclose(a.reshape(2, -1).max(1), 1, atol=1e-4).all()  # each class map divided by its max


def test_bf16_inference_model_gives_close_cams(one_torch_thread):
    torch.manual_seed(0)
    model = CAMNet(3, backbone="resnet18", weights="none", moana=True).eval()
    size, keys = (40, 48), np.array([0, 1, 2])
    image = torch.rand(1, 3, *size)
    pyramid = [torch.cat([image, image.flip(-1)])]
    bf16 = inference_model(copy.deepcopy(model), Precision("bf16", "test"))
    assert next(bf16.parameters()).dtype == torch.bfloat16
    got = image_cams(bf16, pyramid, size, keys, torch.device("cpu"))
    expected = reference_style_cams(model, pyramid, size, keys)
    for a, b in zip(got, expected):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=0.05)


def test_pyramid_flops_add_over_scales_and_grow_with_area():
    model = CAMNet(2, backbone="resnet18", weights="none", moana=True).eval()
    small, large = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    both = pyramid_flops(model, [small, large])
    assert both == pyramid_flops(model, [small]) + pyramid_flops(model, [large])
    # the convolutions, nearly all of the work, scale with the pixel count
    assert 3.5 < pyramid_flops(model, [large]) / pyramid_flops(model, [small]) <= 4.0


def test_round_robin_times_every_input_of_every_method():
    calls = []
    totals = round_robin({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, 3)
    # one warm-up call each on input 0, then the methods alternate on each input
    assert calls == [("a", 0), ("b", 0), ("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert set(totals) == {"a", "b"} and all(t >= 0 for t in totals.values())


def test_synthetic_cams_peak_at_one_inside_each_region():
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12], mask[20:30, 18:30] = 1, 3
    cams = synthetic_cams(mask, np.array([0, 2]))
    assert cams.shape == (2, 32, 32)
    assert np.isclose(cams.reshape(2, -1).max(1), 1, atol=1e-4).all()
    assert cams[0, 8, 8] > cams[0, 25, 24] and cams[1, 25, 24] > cams[1, 8, 8]


def _walk_row(height: int, width: int, classes: int, speedup: float | None, argmax: bool | None = True) -> dict:
    dense = None if speedup is None else 0.01 * speedup
    return {"height": height, "width": width, "num_classes": classes, "sparse_s": 0.01, "sparse_median_s": 0.012,
            "sparse_calls": 40, "sparse_cold_s": 0.012, "sparse_peak_rss_bytes": 2 ** 20,
            "sparse_matrix_bytes": 2 ** 21, "dense_matrix_bytes": 2 ** 22, "dense_s": dense,
            "dense_median_s": dense, "dense_calls": None if dense is None else 3,
            "dense_peak_rss_bytes": None if dense is None else 2 ** 23, "speedup": speedup,
            "speedup_cold": None if dense is None else speedup / 1.2,
            "argmax_equal": None if dense is None else argmax, "max_rel_error": None if dense is None else 1e-5}


def test_walk_summary_takes_the_worst_case_at_the_target_shape():
    rows = [_walk_row(32, 32, 3, 20.0, argmax=False), _walk_row(48, 64, 3, 150.0), _walk_row(48, 64, 20, 105.0),
            _walk_row(48, 64, 20, None)]
    summary = summarize_walk_rows(rows)
    # the 32x32 case's argmax does not count; the sparse-only row keeps its own key
    assert summary["speedup_sparse_vs_dense"] == 105.0 and summary["argmax_equal"] is True
    assert summary["speedup_cold_sparse_vs_dense"] == 87.5
    assert set(summary["cases"]) == {"32x32_3cls", "48x64_3cls", "48x64_20cls", "48x64_20cls_sparse_only"}
    assert summary["cases"]["48x64_20cls"]["dense_calls"] == 3
    assert summary["cases"]["48x64_20cls_sparse_only"]["sparse_peak_rss_mib"] == 1.0
    assert summary["large_shape"] == [48, 64] and summary["large_sparse_s"] == 0.01


def test_walk_target_is_not_decided_without_the_target_shape():
    summary = summarize_walk_rows([_walk_row(32, 32, 3, 300.0)])
    assert summary["speedup_sparse_vs_dense"] is None and summary["argmax_equal"] is None
    assert summary["speedup_cold_sparse_vs_dense"] is None


def test_seed_miou_scores_only_images_with_masks(tmp_path):
    root = tmp_path / "voc"
    generate_voc_demo(root, num_classes=2, image_size=32, num_train=2, num_train_aug_extra=0, num_val=0)
    data = VOCData(root)
    stems = data.split("train")
    gt = data.load_mask(stems[0])
    keys = label_keys(data.image_labels(stems)[stems[0]])
    # CAMs that reproduce the mask exactly: 1 on each class's pixels, 0 elsewhere.
    perfect = seed_labels(np.stack([(gt == k + 1).astype(np.float32) for k in keys]), keys, 0.15)
    (root / "SegmentationClass" / f"{stems[1]}.png").unlink()
    all_background = np.zeros(gt.shape, np.uint8)
    assert seed_miou(data, stems, [perfect, all_background]) == 100.0
    assert seed_miou(data, stems[1:], [all_background]) is None


def test_gpu_check_without_a_gpu_says_so_and_exits_with_its_code(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == gpu_check.NO_GPU_EXIT == 3
    assert "no CUDA GPU" in capsys.readouterr().err


def test_allocator_setting_names_the_variables_that_are_set(monkeypatch):
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert allocator_setting() == "default"
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1073741824")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")
    assert allocator_setting() == ("GLIBC_TUNABLES=glibc.malloc.trim_threshold=1 "
                                   "MALLOC_MMAP_THRESHOLD_=1073741824")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_peak_is_a_positive_rate_and_leaves_the_global_generator_alone(one_torch_thread, dtype):
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    assert conv_peak_gflops(dtype, repeats=1) > 0
    assert torch.equal(torch.rand(1), expected_next)
    with pytest.raises(ValueError, match="repeats"):
        conv_peak_gflops(dtype, repeats=0)


def test_random_cam_weights_repeat_and_leave_the_global_generator_alone(tmp_path):
    cfg = load_config("demo", ["seed=3", f"run_dir={tmp_path}"])
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first, weights = cam_model(cfg, 3, tmp_path)
    assert weights.startswith("random")
    assert torch.equal(torch.rand(1), expected_next)
    second, _ = cam_model(cfg, 3, None)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("auto", ["fp32", "bf16"])
def test_make_cams_and_deeplab_parts_time_fp32_beside_auto(tiny_demo_root, monkeypatch, one_torch_thread, auto):
    monkeypatch.setattr(bench, "auto_precision", lambda: Precision(auto, "mocked"))
    monkeypatch.setattr(bench, "conv_peak_gflops", lambda dtype: 1.0)  # tested on its own above; slow in bf16
    cfg = load_config("demo", [f"data.root={tiny_demo_root}", "data.train_list=train"])
    sizes = bench.BenchmarkSizes(cam_images=2, deeplab_depths=(18,), deeplab_size=48, deeplab_images=2, threads=1)
    cams = bench.bench_make_cams(cfg, sizes)
    assert cams["auto_precision"] == auto
    assert set(cams["images_per_s"]) == {"reference_loop_fp32", "fp32", "auto"}
    assert set(cams["conv_peak_gflops_per_s"]) == ({"fp32"} if auto == "fp32" else {"fp32", "auto"})
    if auto == "fp32":  # timed once: the auto figures are the fp32 ones
        assert cams["speedup_auto_vs_fp32"] == 1.0 and cams["seed_pixel_agreement_auto_vs_fp32"] == 1.0
    deeplab = bench.bench_deeplab(sizes, num_classes=7)["resnet18"]
    assert set(deeplab["images_per_s"]) == {"fp32", "fp32_channels_last", "auto_channels_last"}
    assert deeplab["auto_precision"] == auto and 0.0 <= deeplab["argmax_agreement_auto_vs_fp32"] <= 1.0
