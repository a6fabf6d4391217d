"""The orchestrator's stage lists and summaries, without running a stage."""
from __future__ import annotations

from pathlib import Path

import pytest

from irnet_moana import io
from irnet_moana.config import load_config
from irnet_moana.outputs import EVAL_WSOL, METRICS, PLAIN_CAM
from irnet_moana.pipeline import summary_rows, wsol_stages


def test_wsol_stages_repeat_each_network_per_seed(tmp_path):
    cfg = load_config("demo-wsol", [f"run_dir={tmp_path}", "wsol.seeds=[0,1,2]"])
    stages = wsol_stages(cfg, with_baseline=True)
    assert [s.name for s in stages] == [f"{step}_wsol{network}_seed{seed}" for network in ("_plain", "")
                                        for seed in (0, 1, 2) for step in ("train", "eval")]
    plain, moana = stages[2].config(cfg), stages[8].config(cfg)
    assert (plain["seed"], plain["wsol"]["moana"], plain["run_dir"]) == (1, False, str(tmp_path / PLAIN_CAM / "seed1"))
    assert (moana["seed"], moana["wsol"]["moana"], moana["run_dir"]) == (1, True, str(tmp_path / "seed1"))
    assert stages[2].note == "plain CAM baseline, seed 1" and stages[8].note == "seed 1"
    assert cfg["seed"] == 0 and cfg["run_dir"] == str(tmp_path), "the setting's own configuration is untouched"


def test_wsol_stages_without_seeds_run_once_in_the_run_directory(tmp_path):
    cfg = load_config("cub", [f"run_dir={tmp_path}"])
    stages = wsol_stages(cfg, with_baseline=False)
    assert [s.name for s in stages] == ["train_wsol", "eval_wsol"]
    assert stages[0].config(cfg) is cfg


def _write_metrics(folder: Path, maxboxacc: float, top1_cls: float) -> None:
    io.write_json(folder / METRICS / EVAL_WSOL, {
        "MaxBoxAccV2": maxboxacc, "MaxBoxAccV2_per_iou": {"30": 90.0, "50": 60.0, "70": 20.0},
        "gt_known_loc": 50.0, "top1_loc": 40.0, "top5_loc": 50.0, "top1_cls": top1_cls, "threshold_split": "val",
        "centre_baseline": {"MaxBoxAccV2": 37.0, "MaxBoxAccV2_per_iou": {"30": 78.0, "50": 33.0, "70": 0.0},
                            "gt_known_loc": 33.0, "top1_loc": None}})


def test_wsol_summary_is_the_mean_and_sample_deviation_over_seeds(tmp_path):
    cfg = load_config("demo-wsol", [f"run_dir={tmp_path}", "wsol.seeds=[0,1,2]"])
    for seed, value in zip((0, 1, 2), (60.0, 62.0, 64.0)):
        _write_metrics(tmp_path / f"seed{seed}", value, 100.0)
        _write_metrics(tmp_path / PLAIN_CAM / f"seed{seed}", 50.0, 80.0 + 10 * seed)
    rows = {name: (value, std) for name, value, std in summary_rows(cfg, "wsol")}
    assert rows["MaxBoxAccV2, MoANA"] == (pytest.approx(62.0), pytest.approx(2.0))  # sqrt((4 + 0 + 4) / 2)
    assert rows["MaxBoxAccV2 at IoU 70, MoANA"] == (pytest.approx(20.0), pytest.approx(0.0))
    assert rows["top-1 classification, plain CAM"] == (pytest.approx(90.0), pytest.approx(10.0))
    assert rows["GT-known Loc, centre-box baseline"] == (33.0, None)
    assert rows["MaxBoxAccV2 at IoU 50, centre-box baseline"] == (33.0, None)


def test_wsol_summary_of_one_run_has_no_spread(tmp_path):
    cfg = load_config("demo-wsol", [f"run_dir={tmp_path}", "wsol.seeds=[]"])
    _write_metrics(tmp_path, 61.0, 100.0)
    rows = {name: (value, std) for name, value, std in summary_rows(cfg, "wsol")}
    assert rows["MaxBoxAccV2, MoANA"] == (61.0, None)
    assert rows["MaxBoxAccV2, plain CAM"] == (None, None)
