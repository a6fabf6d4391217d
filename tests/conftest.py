"""Shared fixtures: the real VOC sample (skipped when absent) and a tiny synthetic dataset."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def voc_sample() -> Path:
    root = SHARED_DATA / "voc12_sample"
    if not root.is_dir():
        pytest.skip("../shared/data/voc12_sample is not present in this clone")
    return root
