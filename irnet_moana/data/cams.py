"""CAM files as make_cams writes them and the later stages read them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..io import DatasetError


def label_keys(labels: np.ndarray) -> np.ndarray:
    """0-based indices of the classes present in a multi-hot label vector."""
    return np.flatnonzero(labels).astype(np.int64)


def load_cam(path: Path, expected_keys: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A CAM file, checked against the image's class labels when given."""
    cam = io.load_npz(path, keys=("keys", "cam", "high_res"))
    if expected_keys is not None and not np.array_equal(cam["keys"], expected_keys):
        raise DatasetError(
            f"{path}: its classes {cam['keys'].tolist()} do not match the image's labels "
            f"{expected_keys.tolist()}; it was made by a different run setting. Delete the folder "
            f"{path.parent} (or use another run directory) and rerun make_cams")
    return cam
