"""Helpers shared by the per-image stages: which outputs are still to do, progress, loaders."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from .. import distributed, io
from ..data.voc import DatasetError, VOCData


def pending(stems: Sequence[str], out_dir: Path, suffix: str, log=None) -> list[str]:
    """This rank's share of ``stems`` whose output is missing or unreadable.

    A corrupted output left by something else is removed and redone rather
    than trusted, and so are the temporary files a killed run left behind.
    """
    mine = distributed.shard(stems)
    io.remove_stale_temps(out_dir, {f"{stem}{suffix}" for stem in mine})
    todo = []
    for stem in mine:
        path = out_dir / f"{stem}{suffix}"
        if io.output_is_valid(path):
            continue
        if path.exists():
            if log is not None:
                log.warning("redoing corrupt output %s", path)
            path.unlink()
        todo.append(stem)
    return todo


def progress(items: Iterable, total: int, desc: str) -> tqdm:
    return tqdm(items, total=total, desc=desc, disable=not distributed.is_main(), dynamic_ncols=True, leave=False)


def load_cam(path: Path, expected_keys: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A CAM file, checked against the image's class labels when given."""
    cam = io.load_npz(path, keys=("keys", "cam", "high_res"))
    if expected_keys is not None and not np.array_equal(cam["keys"], expected_keys):
        raise DatasetError(
            f"{path}: its classes {cam['keys'].tolist()} do not match the image's labels "
            f"{expected_keys.tolist()}; it was made by a different run setting. Delete the folder "
            f"{path.parent} (or use another run directory) and rerun make_cams")
    return cam


def label_keys(labels: np.ndarray) -> np.ndarray:
    """0-based indices of the classes present in a multi-hot label vector."""
    return np.flatnonzero(labels).astype(np.int64)


def class_names_with_background(data: VOCData) -> list[str]:
    return ["background", *data.names]



def resolve_weights(value: str, run_dir: Path) -> str:
    """Weights setting with ``{run_dir}`` replaced, so a setting can reuse an earlier stage's file."""
    return value.replace("{run_dir}", str(run_dir))
