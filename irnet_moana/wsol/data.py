"""Torch datasets over a WSOL metadata split and its image root.

Training follows the WSOL recipe (docs/design.md, WSOL): a square resize to
``resize_size``, a random ``crop_size`` crop and a horizontal flip; testing
resizes the whole image to ``test_size`` x ``test_size``. Both normalise with
the ImageNet statistics. The training set reuses
:class:`~irnet_moana.data.datasets.TrainingDataset`, so it is indexed by
``(index, epoch)``, draws its augmentation from the per-sample generator and
skips (and reports) unreadable images exactly like the segmentation stages.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from irnet_moana import io
from irnet_moana.data import transforms as T
from irnet_moana.data.datasets import TrainingDataset
from irnet_moana.data.voc import DatasetError
from irnet_moana.wsol.metadata import WSOLMetadata


class ImageRoot:
    """Images addressed by their metadata id, a path relative to ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"image root {self.root} does not exist; set wsol.image_root to the folder the "
                               "metadata's image ids are relative to")

    def path(self, image_id: str) -> Path:
        return self.root / image_id

    def load_image(self, image_id: str) -> np.ndarray:
        """uint8 (H, W, 3) RGB; a missing file names the id and the root."""
        path = self.path(image_id)
        if not path.is_file():
            raise DatasetError(f"image {path} (id {image_id!r}) is missing under wsol.image_root {self.root}")
        return io.load_image(path)


def _check_classes(metadata: WSOLMetadata, num_classes: int) -> None:
    bad = [i for i in metadata.image_ids if not 0 <= metadata.class_labels[i] < num_classes]
    if bad:
        raise DatasetError(f"image {bad[0]!r} has class {metadata.class_labels[bad[0]]}, outside 0..{num_classes - 1}; "
                           f"set wsol.num_classes to the dataset's number of classes")


class WSOLTrainDataset(TrainingDataset):
    """Training samples: ``{"image": (3, crop, crop) float, "label": int64 scalar, "name": id}``."""

    def __init__(self, image_root: str | os.PathLike, metadata: WSOLMetadata, num_classes: int, seed: int,
                 resize_size: int, crop_size: int, skip_corrupt: bool = True) -> None:
        _check_classes(metadata, num_classes)
        # TrainingDataset only calls ``data.load_image(stem)``, which ImageRoot provides for metadata ids.
        super().__init__(ImageRoot(image_root), metadata.image_ids, seed, skip_corrupt)  # type: ignore[arg-type]
        self.labels = metadata.class_labels
        self.resize_size, self.crop_size = resize_size, crop_size

    def make_sample(self, stem: str, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        image = T.resize(image, (self.resize_size, self.resize_size))
        (image,) = T.random_hflip([image], rng)
        (image,) = T.random_crop([T.normalize(image)], self.crop_size, [0.0], rng)
        return {"image": torch.from_numpy(T.to_chw(image)), "label": torch.tensor(self.labels[stem])}


class WSOLTestDataset(Dataset):
    """Test samples: ``{"image": (3, size, size) float, "label": int64 scalar, "name": id}``.

    Unreadable images raise: an evaluation must not silently drop images.
    """

    def __init__(self, image_root: str | os.PathLike, metadata: WSOLMetadata, num_classes: int, test_size: int,
                 image_ids: list[str] | None = None) -> None:
        _check_classes(metadata, num_classes)
        self.images = ImageRoot(image_root)
        self.labels = metadata.class_labels
        self.image_ids = list(metadata.image_ids if image_ids is None else image_ids)
        self.test_size = test_size

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        image = T.resize(self.images.load_image(image_id), (self.test_size, self.test_size))
        return {"name": image_id, "image": torch.from_numpy(T.to_chw(T.normalize(image))),
                "label": torch.tensor(self.labels[image_id])}
