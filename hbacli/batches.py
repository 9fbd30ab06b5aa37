"""Where the training batches of ``hba evaluate`` come from, this rank's shard of each.

Two sources, both uint8 images on the device at the end, then the baseline pipeline:

- ``DeviceBatches``: the training set resident on the device, a batched policy (a schedule
  replayed by ``replay.ScheduleAugmenter``) applied to whole batches. The fast path.
- ``PerImageBatches``: a per-image policy (torchvision's baselines, or a schedule with
  ``--replay per-image``) run by DataLoader workers on each image, the batch then moved to the
  device. Workers are started per epoch and seeded from (seed, epoch, rank).

Every rank walks the same global batches (the order depends on (seed, epoch) only) and takes
its contiguous shard (``distributed.shard_size``), so the recipe does not change with the number
of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch

from .distributed import Ranks, shard_size
from .loaders import DeviceLoader
from .replay import ScheduleAugmenter
from .seeds import Stream, derive_seed


class DeviceBatches:
    """The training set resident on the device; the policy (if any) applied to whole batches."""

    def __init__(self, images, labels, batch_size: int, device: torch.device, seed: int,
                 ranks: Ranks, augmenter: ScheduleAugmenter | None = None):
        # Same seed on every rank: all ranks walk the same global batches, each takes its shard.
        self.loader = DeviceLoader(images, labels, batch_size, device, shuffle=True,
                                   drop_last=True, seed=seed)
        size = shard_size(batch_size, ranks)
        self.shard = slice(ranks.rank * size, (ranks.rank + 1) * size)
        self.augmenter = augmenter

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)
        if self.augmenter is not None:
            self.augmenter.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images, labels = images[self.shard], labels[self.shard]
            if self.augmenter is not None:
                images = self.augmenter(images)
            yield images, labels


class _TransformedImages(torch.utils.data.Dataset):
    """uint8 C×H×W images through a per-image transform, as tensors: a schedule's transform
    (C kernels) and torchvision's AutoAugment/RandAugment/TrivialAugment are faster on tensors
    than through PIL and back."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class ShardedBatchSampler(torch.utils.data.Sampler):
    """This rank's shard of every full global batch of a permutation that depends on
    (seed, epoch) only."""

    def __init__(self, size: int, batch_size: int, seed: int, ranks: Ranks):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        shard = shard_size(batch_size, ranks)
        self.shard = slice(ranks.rank * shard, (ranks.rank + 1) * shard)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, Stream.ORDER))
        order = torch.randperm(self.size, generator=generator)
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size][self.shard].tolist()


class PerImageBatches:
    """A per-image policy run by DataLoader workers on each image, then the batch moved to the
    device as uint8. Workers are started per epoch and seeded from (seed, epoch, rank)."""

    def __init__(self, images, labels, transform: Callable, batch_size: int,
                 device: torch.device, seed: int, ranks: Ranks, workers: int):
        self.dataset = _TransformedImages(images, labels, transform)
        self.sampler = ShardedBatchSampler(images.shape[0], batch_size, seed, ranks)
        self.transform, self.device, self.seed, self.ranks = transform, device, seed, ranks
        self.workers = workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker_seeds = torch.Generator().manual_seed(
            derive_seed(self.seed, self.epoch, self.ranks.rank, Stream.WORKERS))
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", generator=worker_seeds)
        for images, labels in loader:
            yield (images.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))


def default_workers(ranks: Ranks) -> int:
    """DataLoader workers per process for per-image policies: the cores left after training."""
    return max(1, min(8, (os.cpu_count() or 2) // ranks.world_size - 1))
