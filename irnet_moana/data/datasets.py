"""Torch datasets for each stage and a collate for one image at its own size.

Training datasets are indexed by ``(index, epoch)`` pairs produced by
:class:`irnet_moana.sampling.EpochSampler`: each sample's augmentation RNG is seeded from
``(seed, epoch, index)``, so the data a step sees does not depend on the
number of workers, on the number of ranks or on where a run was resumed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import io
from ..io import IGNORE, CorruptFileError
from ..relations import PathIndex
from . import transforms as T
from .voc import DatasetError, VOCData, check_mask

log = logging.getLogger("irnet_moana.data")




def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


class TrainingDataset(Dataset):
    """Common part of the training datasets: stems, per-sample RNG, corrupt-image policy.

    An unreadable image is skipped: its slot is filled by the next readable
    image of the list (augmented with the slot's own RNG), so batches keep
    their size (a batch of one breaks BatchNorm) and the sample reports the
    skipped ids under "skipped" for the training summary.
    """

    def __init__(self, data: VOCData | None, stems: Sequence[str], seed: int, skip_corrupt: bool = True) -> None:
        self.data, self.stems, self.seed, self.skip_corrupt = data, list(stems), seed, skip_corrupt

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        skipped = []
        for offset in range(len(self.stems)):
            position = (index + offset) % len(self.stems)
            stem = self.stems[position]
            try:
                loaded = self.load(position)
            except CorruptFileError as exc:
                if not self.skip_corrupt:
                    raise DatasetError(f"{exc}; replace the file, or set data.skip_corrupt=true to skip it") from exc
                log.warning("skipping unreadable training image: %s", exc)
                skipped.append(stem)
                continue
            sample = self.make_sample(stem, loaded, sample_rng(self.seed, epoch, index))
            sample.update(name=stem, skipped=skipped)
            return sample
        raise DatasetError(f"none of the {len(self.stems)} training images can be read (e.g. {skipped[0]}); "
                           "check the dataset")

    def load(self, position: int) -> Any:
        """What :meth:`make_sample` gets for ``stems[position]``: the image; CorruptFileError if unreadable."""
        return self.data.load_image(self.stems[position])

    def make_sample(self, stem: str, image: Any, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError


class ClassificationDataset(TrainingDataset):
    """CAM training as IRNet: random long-side resize (PIL bicubic), flip, optional colour jitter, padded crop."""

    def __init__(self, data: VOCData, stems: Sequence[str], labels: dict[str, np.ndarray], seed: int,
                 resize_long: Sequence[int], crop_size: int, color_jitter: bool = False,
                 skip_corrupt: bool = True) -> None:
        super().__init__(data, stems, seed, skip_corrupt)
        self.labels, self.resize_long, self.crop_size, self.color_jitter = labels, resize_long, crop_size, color_jitter

    def make_sample(self, stem: str, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        image = T.random_resize_long(image, self.resize_long[0], self.resize_long[1], rng)
        (image,) = T.random_hflip([image], rng)
        if self.color_jitter:
            image = T.color_jitter(image, rng)
        # padding with 0 after normalisation is padding with the mean colour
        (image,) = T.random_crop([T.normalize(image)], self.crop_size, [0.0], rng)
        return {"image": torch.from_numpy(T.to_chw(image)), "label": torch.from_numpy(self.labels[stem])}


class SegmentationDataset(TrainingDataset):
    """Image + label map (ground truth or pseudo masks): random scale, flip, pad (mean / 255), crop.

    ``resizer`` is deeplab-pytorch's OpenCV resize by default (DeepLab
    training); IRNet's training passes PIL's (:func:`transforms.pil_resize`).
    """

    def __init__(self, data: VOCData, stems: Sequence[str], label_dir: str | Path | None, seed: int,
                 scale_range: Sequence[float], crop_size: int, skip_corrupt: bool = True,
                 resizer: T.Resize = T.resize) -> None:
        super().__init__(data, stems, seed, skip_corrupt)
        self.label_dir = Path(label_dir) if label_dir else None
        self.scale_range, self.crop_size, self.resizer = scale_range, crop_size, resizer

    def load_label(self, stem: str, image_shape: tuple[int, ...]) -> np.ndarray:
        if self.label_dir is None:
            return self.data.load_mask(stem, image_shape)
        path = self.label_dir / f"{stem}.png"
        if not path.is_file():
            raise DatasetError(f"label {path} is missing for training image '{stem}'; "
                               "run the stage that writes these labels, or pass another --labels folder")
        label = io.load_label_png(path)
        check_mask(label, self.data.num_classes, path, image_shape)
        return label

    def make_sample(self, stem: str, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        label = self.load_label(stem, image.shape)
        image, label = T.random_scale([image, label], self.scale_range[0], self.scale_range[1], rng,
                                      nearest=(False, True), resizer=self.resizer)
        image, label = T.random_hflip([image, label], rng)
        image, label = T.random_crop([T.normalize(image), label], self.crop_size, [0.0, IGNORE], rng)
        return {"image": torch.from_numpy(T.to_chw(image)), "label": torch.from_numpy(label.astype(np.int64))}


class RelationDataset(SegmentationDataset):
    """IRNet training: a segmentation sample plus its pair sets at stride 4.

    The cropped label map is subsampled at the centres of the 4 x 4 cells (a
    nearest-neighbour downscale, as IRNet does) and turned into boolean
    background-positive, foreground-positive and negative pair maps.
    """

    def __init__(self, data: VOCData, stems: Sequence[str], label_dir: str | Path, seed: int,
                 scale_range: Sequence[float], crop_size: int, radius: int, skip_corrupt: bool = True) -> None:
        super().__init__(data, stems, label_dir, seed, scale_range, crop_size, skip_corrupt, resizer=T.pil_resize)
        self.path_index = PathIndex(radius)

    def make_sample(self, stem: str, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        sample = super().make_sample(stem, image, rng)
        reduced = sample.pop("label").numpy()[2::4, 2::4].astype(np.uint8)
        pairs = self.path_index.pair_labels(reduced)
        sample.update({key: torch.from_numpy(getattr(pairs, key).astype(np.float32))
                       for key in ("bg_pos", "fg_pos", "neg")})
        return sample


class InferenceDataset(Dataset):
    """One image at several scales, each stacked with its horizontal flip, plus the original.

    Each scale's size is rounded as IRNet rounds it; ``rescale`` makes the
    normalised input at that size: IRNet's PIL bicubic on the uint8 image by
    default, :func:`transforms.linear_rescale` for DeepLab's evaluation.
    """

    def __init__(self, data: VOCData, stems: Sequence[str], scales: Sequence[float],
                 labels: dict[str, np.ndarray] | None = None, with_mask: bool = False,
                 rescale: Callable[[np.ndarray, tuple[int, int]], np.ndarray] = T.irnet_rescale) -> None:
        self.data, self.stems, self.scales = data, list(stems), list(scales)
        self.labels, self.with_mask, self.rescale = labels, with_mask, rescale

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        image = self.data.load_image(stem)
        pyramid = []
        for scale in self.scales:
            scaled = T.to_chw(self.rescale(image, T.scaled_size(image.shape, scale)))
            pyramid.append(torch.from_numpy(np.stack([scaled, np.ascontiguousarray(scaled[:, :, ::-1])])))
        sample = {"name": stem, "image": image, "pyramid": pyramid, "size": image.shape[:2]}
        if self.labels is not None:
            sample["label"] = self.labels[stem]
        if self.with_mask:
            sample["mask"] = self.data.load_mask(stem, image.shape)
        return sample


def collate_single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Inference runs one image at a time at its original size: unwrap the batch of one."""
    if len(batch) != 1:
        raise ValueError("inference loaders use batch_size=1")
    return batch[0]
