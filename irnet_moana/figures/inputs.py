"""A run's outputs and trained networks as the figures read them: what is missing or unreadable yet becomes
None with a log line, so a figure can be drawn after any stage."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import io
from ..data import transforms as T
from ..data.voc import VOCData
from ..io import CorruptFileError, DatasetError
from ..training import TrainingError

NUM_IMAGES = 6

# Errors that mean "this input is not there (or not usable) yet", as opposed to bugs.
UNAVAILABLE = (OSError, CorruptFileError, DatasetError, TrainingError)


def attempt(what: str, log: logging.Logger, fn: Callable, *args) -> Any:
    """``fn(*args)``, or None with a log line when its input is missing or unreadable."""
    try:
        return fn(*args)
    except UNAVAILABLE as exc:
        log.info("figures: %s unavailable (%s)", what, exc)
        return None


class LazyModel:
    """A stage's trained model, loaded on first use; None (logged once) when its weights are missing."""

    def __init__(self, what: str, load: Callable[[], torch.nn.Module], log: logging.Logger) -> None:
        self.what, self.load, self.log = what, load, log

    @functools.cached_property
    def model(self) -> torch.nn.Module | None:
        return attempt(self.what, self.log, self.load)


def example_stems(cfg: dict, num_images: int = NUM_IMAGES) -> list[str]:
    """The images the pipeline and MoANA figures show: the first ``num_images`` ids of ``data.eval_list``."""
    return VOCData(cfg["data"]["root"]).split(cfg["data"]["eval_list"])[:num_images]


def optional_label_png(path: Path) -> np.ndarray | None:
    """The label map at ``path``, None when the file is not there."""
    return io.load_label_png(path) if path.is_file() else None


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """An RGB uint8 image as the networks take it: normalised, (3, h, w)."""
    return torch.from_numpy(T.to_chw(T.normalize(image)))
