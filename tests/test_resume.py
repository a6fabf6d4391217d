"""Kill and resume: a stage killed with SIGKILL and rerun ends with the outputs of an uninterrupted run.

Each test runs a stage's CLI in a child process, kills its whole process
group (worker processes included) part way through, reruns the stage and
compares every output with the session's uninterrupted run of the same
setting (``tiny_demo_run``). The child holds each atomic write open for a
moment after the temporary file is complete and before the rename, so the
kill lands mid-write and leaves a temporary file behind, the case that an
unlucky real kill produces. The child is forked from the test process, as
DataLoader forks its workers: a fresh interpreter would spend seconds
importing torch before the stage starts.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import runpy
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from irnet_moana import io, outputs
from irnet_moana.config import load_config, setting_path
from irnet_moana.data.datasets import ClassificationDataset
from irnet_moana.data.voc import VOCData
from irnet_moana.stages import make_cams, make_ir_labels, make_pseudo_masks, train_cam
from irnet_moana.training import TrainSpec, load_state, make_loader

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = setting_path("demo")
HOLD_S = 0.4
KILL_TIMEOUT_S = 180


def cli_args(overrides: list[str], run_dir: Path, *flags: str) -> list[str]:
    sets = [arg for override in overrides for arg in ("--set", override)]
    return ["--config", str(DEMO_CONFIG), *sets, "--run-dir", str(run_dir), *flags]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def files_in(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []


def contents(folder: Path) -> dict[str, bytes]:
    """Every file in a folder, hidden ones included, by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _run_held(script: Path, args: list[str], log_path: Path) -> None:
    """The forked child: ``script args`` in a process group of its own, output to ``log_path``, every
    atomic write held open for ``HOLD_S`` after its temporary file is complete."""
    os.setsid()
    log = open(log_path, "w", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    real = io.atomic_path

    @contextlib.contextmanager
    def held(path, suffix=None):
        with real(path, suffix) as tmp:
            yield tmp
            time.sleep(HOLD_S)

    io.atomic_path = held
    os.chdir(REPO)
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


def kill_when(stage: str, args: list[str], ready: Callable[[], bool], log_path: Path) -> None:
    """Run ``pipelines/<stage>.py`` with held writes and SIGKILL its process group once ``ready()``."""
    # forked, the child keeps this process's torch thread count: results do not depend on who computed them
    proc = multiprocessing.get_context("fork").Process(
        target=_run_held, args=(REPO / "pipelines" / f"{stage}.py", args, log_path))
    proc.start()
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while not ready():
            if not proc.is_alive():
                pytest.fail(f"{stage} ended (exit {proc.exitcode}) before it could be killed:\n"
                            f"{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{stage} did not reach the kill point in {KILL_TIMEOUT_S} s")
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.join()
    assert proc.exitcode == -signal.SIGKILL


pytestmark = pytest.mark.usefixtures("one_torch_thread")

PER_IMAGE_STAGES = [
    # stage, folders it reads from the reference run, its output folder, output suffix
    (make_cams, ("cam",), outputs.CAMS, ".npz"),
    (make_ir_labels, ("cams",), outputs.IR_LABELS, ".png"),
    (make_pseudo_masks, ("cams", outputs.IRN), outputs.PSEUDO_MASKS, ".png"),
]


@pytest.mark.slow
@pytest.mark.parametrize("stage, inputs, out_name, suffix", PER_IMAGE_STAGES,
                         ids=[s[0].__name__.rsplit(".", 1)[1] for s in PER_IMAGE_STAGES])
def test_killed_stage_resumes_to_identical_outputs(stage, inputs, out_name, suffix, tiny_demo_run,
                                                   tiny_demo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    for folder in inputs:
        shutil.copytree(tiny_demo_run / folder, run_dir / folder)
    overrides = tiny_demo_overrides(run_dir)
    out = run_dir / out_name
    expected = contents(tiny_demo_run / out_name)
    name = stage.__name__.rsplit(".", 1)[1]

    kill_when(name, cli_args(overrides, run_dir), lambda: bool(files_in(out, suffix)) and bool(temporaries(out)),
              tmp_path / "killed.log")
    finished = {p.name: p.stat().st_mtime_ns for p in files_in(out, suffix)}
    assert 0 < len(finished) < len(expected)
    assert temporaries(out), "the kill should have interrupted a write"
    # a finished output damaged by something else must be redone, not trusted
    damaged = out / sorted(finished)[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    del finished[damaged.name]

    stage.run(load_config(DEMO_CONFIG, overrides))

    assert temporaries(out) == []
    assert contents(out) == expected
    # the outputs that survived the kill were kept, not recomputed
    assert {file: (out / file).stat().st_mtime_ns for file in finished} == finished
    assert f"redoing corrupt output {damaged}" in (run_dir / "logs" / f"{name}.log").read_text()


@pytest.mark.slow
def test_killed_training_resumes_to_identical_weights(tiny_demo_run, tiny_demo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_demo_overrides(run_dir)
    cam_dir = run_dir / outputs.CAM
    checkpoint = cam_dir / "checkpoint.pth"

    kill_when("train_cam", cli_args(overrides, run_dir), checkpoint.is_file, tmp_path / "killed.log")
    assert not (cam_dir / "model.pth").exists()
    killed_at = load_state(checkpoint)["step"]

    final = train_cam.run(load_config(DEMO_CONFIG, overrides), resume=True)

    resumed, reference = load_state(final), load_state(tiny_demo_run / outputs.CAM / "model.pth")
    assert 0 < killed_at < reference["steps"]
    assert resumed["steps"] == reference["steps"]
    assert resumed["model"].keys() == reference["model"].keys()
    different = [k for k in reference["model"] if not torch.equal(resumed["model"][k], reference["model"][k])]
    assert different == []
    assert f"resumed from {checkpoint} at step {killed_at}/" in (run_dir / "logs" / "train_cam.log").read_text()
    assert temporaries(cam_dir) == []


def test_same_config_gives_identical_cams(tiny_demo_run, tiny_demo_overrides, tmp_path):
    run_dir = tmp_path / "again"
    shutil.copytree(tiny_demo_run / outputs.CAM, run_dir / outputs.CAM)
    make_cams.run(load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir)))
    assert contents(run_dir / outputs.CAMS) == contents(tiny_demo_run / outputs.CAMS)


def test_run_directory_records_config_and_provenance(tiny_demo_run, tiny_demo_overrides):
    logs = tiny_demo_run / "logs"
    for stage in ("train_cam", "make_cams", "make_ir_labels", "train_irn", "make_pseudo_masks"):
        saved = load_config(logs / f"{stage}.config.yaml")
        assert saved == load_config(DEMO_CONFIG, tiny_demo_overrides(tiny_demo_run))
        provenance = io.read_json(logs / f"{stage}.provenance.json")
        assert provenance["versions"]["torch"] == torch.__version__.split("+")[0]
        assert provenance["versions"]["numpy"] == np.__version__
        assert provenance["git_commit"] and provenance["command"][0] == sys.executable
        assert "started" in provenance and provenance["cwd"]


def test_loader_workers_see_the_same_samples(tiny_demo_root):
    data = VOCData(tiny_demo_root)
    stems = data.split("train_aug")
    dataset = ClassificationDataset(data, stems, data.image_labels(stems), seed=3, resize_long=(48, 80),
                                    crop_size=64, color_jitter=True)
    # each sample is a function of (seed, epoch, index) alone
    order = np.random.default_rng([3, 1]).permutation(len(stems)).reshape(-1, 2)
    expected = [[dataset[(int(i), 1)] for i in pair] for pair in order]

    for workers in (0, 2):
        loader, sampler = make_loader(dataset, TrainSpec(batch_size=2, num_workers=workers), seed=3)
        sampler.set_epoch(1)
        batches = list(loader)
        assert len(batches) == len(expected) == 4
        for batch, samples in zip(batches, expected):
            assert batch["name"] == [s["name"] for s in samples]
            assert torch.equal(batch["image"], torch.stack([s["image"] for s in samples]))
            assert torch.equal(batch["label"], torch.stack([s["label"] for s in samples]))
    assert not torch.equal(dataset[(0, 1)]["image"], dataset[(0, 2)]["image"])
