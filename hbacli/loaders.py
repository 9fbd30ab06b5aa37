"""Batches of a split, on the device, in an order fixed by (seed, epoch).

``DeviceLoader`` keeps a whole split on the device as uint8 and slices shuffled batches from
it (no DataLoader, no host round trip). ``StreamingLoader`` has the same interface for data
too large for memory (full ImageNet): DataLoader workers decode files into uint8 256×256
batches. ``make_loader`` picks the one a split needs. Batches stay uint8; everything after the
policy is ``pipeline.BaselinePipeline``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .datasets import STREAM_SIDE, ImageSplits
from .decode import decode_file
from .errors import HbaError
from .seeds import Stream, derive_seed

__all__ = ["DeviceLoader", "StreamingLoader", "make_loader"]


def _batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _check_batching(n: int, batch_size: int, drop_last: bool) -> None:
    if batch_size <= 0:
        raise HbaError(f"batch size must be positive, got {batch_size}")
    if drop_last and 0 < n < batch_size:
        raise HbaError(f"batch size {batch_size} is larger than the {n} images of the split "
                       "(lower --batch-size or raise the split size)")


class DeviceLoader:
    """A whole split on ``device`` as uint8; batches are slices of a seeded permutation.

    The order of an epoch is a function of (seed, epoch) only, so a resumed run calls
    ``set_epoch(e)`` and sees exactly the batches it would have seen. Each ``iter()`` uses the
    current epoch and then advances it, so a plain ``for epoch: for batch in loader`` also
    reshuffles. The permutation is drawn on the device (orders differ between CPU and CUDA).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("DeviceLoader wants uint8 N×C×H×W images")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        _check_batching(len(images), batch_size, drop_last)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """The positions of the split in the order epoch ``epoch`` visits them."""
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.seed, epoch, Stream.ORDER))
        return torch.randperm(n, generator=generator, device=self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(self.epoch)
        self.epoch += 1
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.images[index], self.labels[index]

    def __len__(self) -> int:
        return _batch_count(len(self.labels), self.batch_size, self.drop_last)


class _ImageFiles(torch.utils.data.Dataset):
    """Image files → uint8 3×side×side: shorter side resized to ``side``, then a square crop.

    Training crops are random along the longer side, seeded by (seed, epoch, index) so any
    number of workers gives the same images; evaluation crops are central.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, side: int, random_crop: bool,
                 seed: int, fit: bool = False):
        self.paths, self.labels, self.side = list(paths), labels, side
        self.random_crop, self.seed, self.epoch, self.fit = random_crop, seed, 0, fit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        if self.fit:   # a streamed imagefolder: the image its in-memory twin would hold
            image = np.ascontiguousarray(decode_file(self.paths[i], self.side))
            return torch.from_numpy(image), self.labels[i]

        with Image.open(self.paths[i]) as im:
            im.draft("RGB", (self.side, self.side))
            im = im.convert("RGB")
            w, h = im.size
            scale = self.side / min(w, h)
            new_w, new_h = max(self.side, round(w * scale)), max(self.side, round(h * scale))
            im = im.resize((new_w, new_h), Image.BILINEAR)
        if self.random_crop:
            rng = np.random.default_rng([derive_seed(self.seed, self.epoch, Stream.ORDER), i])
            left = rng.integers(0, new_w - self.side + 1)
            top = rng.integers(0, new_h - self.side + 1)
        else:
            left, top = (new_w - self.side) // 2, (new_h - self.side) // 2
        im = im.crop((left, top, left + self.side, top + self.side))
        return torch.from_numpy(np.asarray(im).transpose(2, 0, 1).copy()), self.labels[i]


class StreamingLoader:
    """DeviceLoader's interface for data read from files by DataLoader workers (ImageNet).

    Yields uint8 side×side batches (moved to ``device`` without blocking) in the same
    (seed, epoch)-determined order; ``BaselinePipeline`` then crops them to 224.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, batch_size: int, device,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                 num_workers: int | None = None, side: int = STREAM_SIDE, fit: bool = False):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        _check_batching(len(paths), batch_size, drop_last)
        self.device = torch.device(device)
        self.files = _ImageFiles(paths, labels.to(torch.int64), side, random_crop=shuffle,
                                 seed=seed, fit=fit)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.files)
        if not self.shuffle:
            return torch.arange(n)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, Stream.ORDER))
        return torch.randperm(n, generator=generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(self.epoch).tolist()
        self.files.epoch = self.epoch   # workers copy the dataset when the iterator starts
        self.epoch += 1
        batches = [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]
        loader = torch.utils.data.DataLoader(
            self.files, batch_sampler=batches, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda")
        for images, labels in loader:
            yield (images.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))

    def __len__(self) -> int:
        return _batch_count(len(self.files), self.batch_size, self.drop_last)


def make_loader(splits: ImageSplits, split: str, batch_size: int, device,
                shuffle: bool | None = None, drop_last: bool | None = None,
                seed: int = 0) -> DeviceLoader | StreamingLoader:
    """The right loader for one split ('train', 'val', 'test'); shuffles and drops only train."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    shuffle = split == "train" if shuffle is None else shuffle
    drop_last = split == "train" if drop_last is None else drop_last
    labels = getattr(splits, f"{split}_labels")
    if splits.files is not None:
        # full ImageNet: random crops of 256² (then the ImageNet pipeline); a streamed
        # imagefolder: the images its in-memory twin would hold, at its own side
        return StreamingLoader(splits.files[split], labels, batch_size, device, shuffle,
                               drop_last, seed, side=splits.image_size or STREAM_SIDE,
                               fit=splits.family == "imagefolder")
    return DeviceLoader(getattr(splits, f"{split}_images"), labels, batch_size, device, shuffle,
                        drop_last, seed)
