"""torchrun: DDP training and sharded per-image stages give what one process gives.

Every multi-process run here is ``python -m torch.distributed.run --standalone
--nproc_per_node 2`` on the CPU (gloo), one thread per rank. The CLIs are
started through a small wrapper that records which rank wrote which file (and
can stop a run right after a given file is written), so the tests see the
sharding and the rank-0-only writes directly rather than inferring them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from irnet_moana import outputs
from irnet_moana.config import load_config, setting_path
from irnet_moana.data.voc import VOCData
from irnet_moana.models.build import cam_net
from irnet_moana.outputs import CHECKPOINT, MODEL
from irnet_moana.run import pending, seed_everything
from irnet_moana.sampling import EpochSampler
from irnet_moana.stages import eval_cams, train_cam
from irnet_moana.training import load_state

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = setting_path("demo")
NPROC = 2
TIMEOUT_S = 240

WRAPPER = """
import contextlib, json, os, runpy, sys
from pathlib import Path
record_dir, stop_after, repo, commands = sys.argv[1:5]
from irnet_moana import io
real = io.atomic_path

@contextlib.contextmanager
def recorded(path, suffix=None):
    with real(path, suffix) as tmp:
        yield tmp
    with open(Path(record_dir) / f"rank{os.environ.get('RANK', 0)}.txt", "a") as log:
        log.write(Path(path).name + "\\n")
    if Path(path).name == stop_after:
        os._exit(3)

io.atomic_path = recorded
for script, *args in json.loads(commands):
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
"""

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def torchrun(stages: list[tuple[str, list[str]]], record_dir: Path,
             stop_after: str = "") -> subprocess.CompletedProcess:
    """``pipelines/<stage>.py args`` for each stage in turn, in the same NPROC CPU ranks.

    Each rank's writes are listed in record_dir/rank<R>.txt. Sharing the
    processes saves torch's import, seconds on a loaded machine; the stages
    must not read each other's outputs, since ranks do not wait for each other
    between stages.
    """
    record_dir.mkdir(parents=True, exist_ok=True)
    wrapper = record_dir / "wrapper.py"
    wrapper.write_text(WRAPPER)
    commands = [[str(REPO / "pipelines" / f"{stage}.py"), *args] for stage, args in stages]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}",
               str(wrapper), str(record_dir), stop_after, str(REPO), json.dumps(commands)]
    # one thread per rank, as in this process, so that results do not depend on who computed them
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def written(record_dir: Path, suffix: str = "") -> dict[int, list[str]]:
    """Files each rank wrote (ending in ``suffix``), by rank; ranks that wrote nothing are absent."""
    out = {}
    for rank in range(NPROC):
        path = record_dir / f"rank{rank}.txt"
        if path.is_file():
            names = [n for n in path.read_text().split() if n.endswith(suffix)]
            if names:
                out[rank] = names
    return out


def cli_args(overrides: list[str], run_dir: Path, *flags: str) -> list[str]:
    return ["--config", str(DEMO_CONFIG), *[a for o in overrides for a in ("--set", o)], "--run-dir", str(run_dir),
            *flags]


def contents(folder: Path, suffix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"*{suffix}"))}


def test_epoch_sampler_shards_each_global_batch_and_reshuffles():
    # 10 images, global batch 4: 2 steps per epoch, the last 2 images of each permutation dropped
    single = EpochSampler(10, 4, seed=5, rank=0, world_size=1)
    ranks = [EpochSampler(10, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    orders = []
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        whole = [i for i, e in single]
        shards = [[i for i, e in sampler] for sampler in ranks]
        assert all(e == epoch for sampler in (single, *ranks) for _, e in sampler)
        assert len(whole) == 8 and len(set(whole)) == 8
        for step in range(2):
            # the global batch a step sees is the single-process batch, rank 0's part first
            assert shards[0][2 * step:2 * step + 2] + shards[1][2 * step:2 * step + 2] == whole[4 * step:4 * step + 4]
        assert not set(shards[0]) & set(shards[1])
        orders.append(whole)
    assert orders[0] != orders[1], "each epoch must be reshuffled"
    # a resumed run skips the global batches already seen, on every rank alike
    ranks[1].set_epoch(1, skip_batches=1)
    assert [i for i, _ in ranks[1]] == orders[1][6:8] and len(ranks[1]) == 2


def test_pending_shards_by_rank_without_a_process_group(tmp_path, monkeypatch):
    stems = [f"img{i}" for i in range(7)]
    (tmp_path / "img3.npz").write_bytes(b"")  # corrupt: redone by its rank
    shares = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        shares.append(pending(stems, tmp_path, ".npz"))
    assert shares == [["img0", "img2", "img4", "img6"], ["img1", "img3", "img5"]]


def ddp_overrides(root: Path, run_dir: Path, batch_size: int) -> list[str]:
    # Frozen BatchNorm (and no MoANA, whose BatchNorms are always trained): with trainable
    # BatchNorm each rank normalises by its own half batch, so DDP would legitimately differ
    # from one process normalising the whole batch. The demo's lr 0.1 (1.0 for the classifier) on a
    # random, unnormalised network amplifies the rounding of the gradient sums (two half batches vs
    # one batch) to 1e-4 in 4 steps; at 0.01 the runs agree to 1e-7.
    return [f"data.root={root}", f"run_dir={run_dir}", "data.num_workers=0", "cam.moana=false", "cam.freeze_bn=true",
            "cam.freeze_stem=true", "cam.amp=none", "cam.epochs=2", "cam.crop_size=64", "cam.resize_long=[48,80]",
            "cam.lr=0.01", f"cam.batch_size={batch_size}"]


@pytest.mark.filterwarnings("ignore:cam.weights=none with cam.freeze_bn=true")  # frozen on purpose, as above
def test_interrupted_and_resumed_ddp_training_matches_one_process(tiny_demo_root, tmp_path):
    data = VOCData(tiny_demo_root)
    assert len(data.split("train_aug")) == 8  # 2 global batches of 4 per epoch, 4 steps in all

    single_dir = tmp_path / "single"
    reference = load_state(train_cam.run(load_config(DEMO_CONFIG, ddp_overrides(tiny_demo_root, single_dir, 4))))

    ddp_dir = tmp_path / "ddp"
    overrides = ddp_overrides(tiny_demo_root, ddp_dir, 2)
    stopped = torchrun([("train_cam", cli_args(overrides, ddp_dir))], tmp_path / "first", stop_after=CHECKPOINT)
    assert stopped.returncode != 0, "the run should have been stopped after its first checkpoint"
    cam_dir = ddp_dir / outputs.CAM
    assert not (cam_dir / MODEL).exists()
    assert load_state(cam_dir / CHECKPOINT)["step"] == 2  # end of the first epoch
    check_ok(resumed := torchrun([("train_cam", cli_args(overrides, ddp_dir, "--resume"))], tmp_path / "second"))

    # only rank 0 writes: checkpoints, final weights, backbone, logs, timings
    assert set(written(tmp_path / "first")) == set(written(tmp_path / "second")) == {0}
    assert written(tmp_path / "second", ".pth")[0] == [CHECKPOINT, MODEL, outputs.CAM_BACKBONE]
    log = (ddp_dir / "logs" / "train_cam.log").read_text()
    assert log.count("resumed from") == 1 and log.count("step 4/4 ") == 1, log
    assert resumed.stdout.count("[train_cam] trained") == 1

    final = load_state(cam_dir / MODEL)
    assert final["steps"] == reference["steps"] == 4
    assert final["model"].keys() == reference["model"].keys()
    seed_everything(0)  # as start_run does before building the model: the initial weights
    initial = cam_net(load_config(DEMO_CONFIG, overrides), data.num_classes).state_dict()
    key = "head.classifier.weight"
    assert not torch.allclose(initial[key], reference["model"][key], atol=1e-3), "training should change the weights"
    for key, value in reference["model"].items():
        torch.testing.assert_close(final["model"][key], value, rtol=0, atol=1e-5, msg=key)


def test_sharded_per_image_stages_are_byte_identical(tiny_demo_run, tiny_demo_overrides, tiny_demo_root,
                                                      tmp_path):
    cams_dir, masks_dir = tmp_path / "cams_run", tmp_path / "masks_run"
    shutil.copytree(tiny_demo_run / outputs.CAM, cams_dir / outputs.CAM)
    for folder in (outputs.CAM, outputs.CAMS, outputs.IRN):
        shutil.copytree(tiny_demo_run / folder, masks_dir / folder)
    check_ok(torchrun([("make_cams", cli_args(tiny_demo_overrides(cams_dir), cams_dir)),
                       ("make_pseudo_masks", cli_args(tiny_demo_overrides(masks_dir), masks_dir))],
                      tmp_path / "record"))

    for run_dir, out, suffix in ((cams_dir, outputs.CAMS, ".npz"), (masks_dir, outputs.PSEUDO_MASKS, ".png")):
        expected = contents(tiny_demo_run / out, suffix)
        assert contents(run_dir / out, suffix) == expected, out
        by_rank = written(tmp_path / "record", suffix)
        assert set(by_rank) == {0, 1}, f"both ranks should have written {out}"
        assert not set(by_rank[0]) & set(by_rank[1])
        assert sorted(by_rank[0] + by_rank[1]) == sorted(expected)

    # metrics are computed once, by one process, over every rank's outputs
    data = VOCData(tiny_demo_root)
    stems = data.split("train_aug")
    sharded, = eval_cams.evaluate(data, cams_dir / outputs.CAMS, stems, [0.15])
    single, = eval_cams.evaluate(data, tiny_demo_run / outputs.CAMS, stems, [0.15])
    assert np.array_equal(sharded.matrix, single.matrix) and sharded.matrix.sum() > 0
