"""Which samples each training step sees: a resumable, rank-sharded epoch order and its collate.

Training datasets are indexed by the ``(index, epoch)`` pairs this sampler
yields and seed each sample's augmentation from them, so the data a step
sees depends neither on the number of workers or ranks nor on where a run
was resumed.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from . import distributed
from .io import DatasetError


class EpochSampler(Sampler):
    """Per-epoch reshuffled, rank-sharded order that can start part way into an epoch.

    Like ``DistributedSampler`` (a permutation seeded by seed + epoch, split
    across ranks; the last incomplete global batch dropped so every rank runs
    the same number of steps), but yields ``(index, epoch)`` and can skip the
    batches a resumed run has already seen.
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None) -> None:
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        default_rank, default_world = distributed.world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.epoch, self.skip_batches = 0, 0
        global_batch = batch_size * self.world_size
        if size < global_batch:
            raise DatasetError(f"{size} training images are fewer than one global batch "
                               f"({batch_size} x {self.world_size} ranks); lower batch_size")
        self.steps_per_epoch = size // global_batch

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        global_batch = self.batch_size * self.world_size
        order = order[:self.steps_per_epoch * global_batch].reshape(self.steps_per_epoch, global_batch)
        mine = order[self.skip_batches:, self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return iter([(int(i), self.epoch) for i in mine.reshape(-1)])

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip_batches) * self.batch_size


def collate_training(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors and names; unreadable images the dataset skipped are listed in ``skipped``."""
    out: dict[str, Any] = {"name": [b["name"] for b in batch],
                           "skipped": [stem for b in batch for stem in b.get("skipped", ())]}
    for key, value in batch[0].items():
        if isinstance(value, torch.Tensor):
            out[key] = torch.stack([b[key] for b in batch])
    return out

