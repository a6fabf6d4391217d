"""Shared fixtures: the real VOC sample (skipped when absent) and a tiny synthetic dataset."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

from irnet_moana.config import load_config, setting_path
from irnet_moana.stages import make_cams, make_ir_labels, make_pseudo_masks, train_cam, train_irn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def torch_threads_per_worker() -> int:
    """The cores this process may use shared among pytest-xdist's workers, at most 2: the tests' tensors
    are tiny, so more threads mostly synchronise more, and workers that together ask for more threads
    than there are cores slow each other down."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, len(os.sched_getaffinity(0)) // workers))


torch.set_num_threads(torch_threads_per_worker())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding slow tests run first (each file keeping its order): pytest-xdist hands out whole
    files, and a long one handed out last would leave the other workers idle at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def voc_sample() -> Path:
    root = SHARED_DATA / "voc12_sample"
    if not root.is_dir():
        pytest.skip("../shared/data/voc12_sample is not present in this clone")
    return root


DEMO_CONFIG = setting_path("demo")
TINY_CAM_EPOCHS = 3  # several end-of-epoch checkpoints, so a training run can be killed between two


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny stage runs: one thread is fastest on a shared CPU and computes the same bits as the
    tiny_demo_run fixture and the subprocesses started with OMP_NUM_THREADS=1."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_demo_root(tmp_path_factory) -> Path:
    """A 10-image, 64 px synthetic VOC-layout set (train 6, train_aug 8, val 2); copy it before changing it."""
    from irnet_moana.data.synthetic import generate_voc_demo

    root = tmp_path_factory.mktemp("tiny_demo")
    generate_voc_demo(root, num_train=6, num_train_aug_extra=2, num_val=2, image_size=64)
    return root


@pytest.fixture(scope="session")
def tiny_demo_overrides(tiny_demo_root):
    """``make(run_dir, *extra, root=None)``: the demo setting shrunk to seconds, as --set overrides."""

    def make(run_dir: Path, *extra: str, root: Path | None = None) -> list[str]:
        return [f"data.root={root or tiny_demo_root}", f"run_dir={run_dir}", f"cam.epochs={TINY_CAM_EPOCHS}",
                "cam.batch_size=2", "cam.crop_size=64", "cam.resize_long=[48,80]", "cam.scales=[1.0,0.5]",
                "irn.crop_size=64", "irn.batch_size=2", "irn.epochs=1", "pseudo.exp_times=4", *extra]

    return make


@pytest.fixture(scope="session")
def tiny_demo_run(tiny_demo_overrides, tmp_path_factory) -> Path:
    """An uninterrupted run of train_cam .. make_pseudo_masks (in-process); treat it as read-only."""
    run_dir = tmp_path_factory.mktemp("tiny_demo_run")
    cfg = load_config(DEMO_CONFIG, tiny_demo_overrides(run_dir))
    with torch_threads(1):
        for stage in (train_cam, make_cams, make_ir_labels, train_irn, make_pseudo_masks):
            stage.run(cfg)
    return run_dir


@pytest.fixture
def interrupt_on_call(monkeypatch):
    """``interrupt_on_call(module, name, call)``: a block in which the ``call``-th call of ``module.name``
    raises KeyboardInterrupt, as a training killed part way; the function is restored afterwards."""

    @contextlib.contextmanager
    def interrupt(module, name: str, call: int) -> Iterator[None]:
        real, calls = getattr(module, name), []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, interrupted)
        try:
            yield
        finally:
            monkeypatch.setattr(module, name, real)

    return interrupt
