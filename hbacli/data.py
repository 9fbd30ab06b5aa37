"""Batches on the device: loaders that shuffle by (seed, epoch) and the baseline pipelines.

``DeviceLoader`` keeps a whole split on the device as uint8 and slices shuffled batches from
it (no DataLoader, no host round trip). ``StreamingLoader`` has the same interface for data
too large for memory (full ImageNet): DataLoader workers decode files into uint8 256×256
batches. ``BaselinePipeline`` is everything after the policy in the paper's §4.2 order,
batched with per-example randomness and without host syncs.

Dataset finding, caching and splitting live in ``datasets.py``; ``ImageSplits`` and
``load_dataset`` are re-exported here, where the rest of the package expects them.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import FAMILIES, choices
from .datasets import STREAM_SIDE, ImageSplits, load_dataset
from .errors import HbaError
from .seeds import Stream, derive_seed
from .space import FILL

__all__ = ["ImageSplits", "load_dataset", "DeviceLoader", "StreamingLoader", "make_loader",
           "BaselinePipeline"]

MaybeGenerator = Optional[torch.Generator]   # on the images' device; None: torch's default RNG


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device) -> torch.Tensor:
    """A small constant tensor, copied to each device once: a fresh copy per batch would
    block the host on every step (a host-to-device copy from pageable memory syncs)."""
    return torch.tensor(values, dtype=torch.float32, device=device)


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
                 seed: int):
        self.paths, self.labels, self.side = list(paths), labels, side
        self.random_crop, self.seed, self.epoch = random_crop, seed, 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

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
                 num_workers: int | None = None, side: int = STREAM_SIDE):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        _check_batching(len(paths), batch_size, drop_last)
        self.device = torch.device(device)
        self.files = _ImageFiles(paths, labels.to(torch.int64), side, random_crop=shuffle,
                                 seed=seed)
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
        return StreamingLoader(splits.files[split], labels, batch_size, device, shuffle,
                               drop_last, seed)
    return DeviceLoader(getattr(splits, f"{split}_images"), labels, batch_size, device, shuffle,
                        drop_last, seed)


# --------------------------------------------------------------------------- augmentation pieces
# Every piece takes float N×C×H×W and draws per-example randomness on the images' device.

def _uniform(n: int, like: torch.Tensor, generator: MaybeGenerator,
             low: float = 0.0, high: float = 1.0, *shape: int) -> torch.Tensor:
    u = torch.rand((n, *shape), generator=generator, device=like.device, dtype=torch.float32)
    return low + (high - low) * u


def _randint(high: int, n: int, like: torch.Tensor, generator: MaybeGenerator) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=like.device)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x/255 − mean)/std for uint8 input, (x − mean)/std for 0..1 floats."""
    mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    if x.dtype == torch.uint8:   # one new tensor, then in place: 7× faster than four temporaries
        return x.float().sub_(mean * 255.0).div_(std * 255.0)
    return (x - mean) / std


def random_flip(x: torch.Tensor, generator: MaybeGenerator = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _uniform(len(x), x, generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: torch.Tensor, pad: int, generator: MaybeGenerator = None) -> torch.Tensor:
    """Zero-pad by ``pad`` on every side, then crop back to H×W at a random offset per image.

    Offsets are 0..2·pad inclusive (shifts of −pad..pad, as torchvision's RandomCrop).
    """
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    shifts = 2 * pad + 1
    padded = F.pad(x, (pad, pad, pad, pad))
    # Every crop of every image as one strided view (no copy): [image, top, left, C, H, W];
    # indexing it copies exactly the chosen crops, 4× faster than a per-pixel gather on CPU.
    sn, sc, sh, sw = padded.stride()
    windows = padded.as_strided((n, shifts, shifts, c, h, w), (sn, sh, sw, sc, sh, sw))
    top = _randint(shifts, n, x, generator)
    left = _randint(shifts, n, x, generator)
    return windows[torch.arange(n, device=x.device), top, left]


def cutout(x: torch.Tensor, size: int, generator: MaybeGenerator = None,
           fill: torch.Tensor | None = None) -> torch.Tensor:
    """Paint a size×size square per image, centred anywhere on it and clipped at the borders.

    ``fill``: per-channel values (C,); None paints zero, the dataset mean after
    standardisation (DeVries & Taylor). The baseline pipeline passes grey 128 standardised.
    """
    if size <= 0:
        return x
    n, _, h, w = x.shape
    top = _randint(h, n, x, generator) - size // 2
    left = _randint(w, n, x, generator) - size // 2
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_rows = (r >= top[:, None]) & (r < top[:, None] + size)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + size)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    if fill is None:
        return x.masked_fill(hole[:, None], 0.0)
    return torch.where(hole[:, None], fill.to(x.dtype).view(1, -1, 1, 1), x)


def random_resized_crop(x: torch.Tensor, out_size: int, generator: MaybeGenerator = None,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        tries: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop, batched: a box per image, bilinear to out_size².

    Ten candidate boxes per image; the first that fits is used, else the whole image.
    """
    n, _, h, w = x.shape
    area = h * w * _uniform(n, x, generator, scale[0], scale[1], tries)
    log_ratio = _uniform(n, x, generator, math.log(ratio[0]), math.log(ratio[1]), tries)
    aspect = torch.exp(log_ratio)
    box_w = torch.sqrt(area * aspect).round()
    box_h = torch.sqrt(area / aspect).round()
    fits = (box_w >= 1) & (box_w <= w) & (box_h >= 1) & (box_h <= h)
    first = fits.int().argmax(dim=1, keepdim=True)
    any_fit = fits.any(dim=1)
    box_w = torch.where(any_fit, box_w.gather(1, first).squeeze(1), float(w))
    box_h = torch.where(any_fit, box_h.gather(1, first).squeeze(1), float(h))
    top = torch.floor(_uniform(n, x, generator) * (h - box_h + 1))
    left = torch.floor(_uniform(n, x, generator) * (w - box_w + 1))
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = box_w / w
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 1] = box_h / h
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def colour_jitter(x: torch.Tensor, strength: float = 0.4,
                  generator: MaybeGenerator = None) -> torch.Tensor:
    """Brightness, contrast, saturation, each ×U[1−s, 1+s] per image, on 0..1 floats.

    A fixed order (fb.resnet.torch shuffles it per image) keeps it one batched pass.
    """
    n = len(x)
    factor = _uniform(n, x, generator, 1 - strength, 1 + strength, 3).view(n, 3, 1, 1, 1)
    x = (x * factor[:, 0]).clamp(0, 1)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factor[:, 1] + mean).clamp(0, 1)
    grey = _grey(x)
    return ((x - grey) * factor[:, 2] + grey).clamp(0, 1)


# AlexNet's PCA lighting noise: eigenvalues/vectors of ImageNet's RGB covariance (0..1 scale).
_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
               (-0.5808, -0.0045, -0.8140),
               (-0.5836, -0.6948, 0.4203))


def pca_lighting(x: torch.Tensor, alpha_std: float = 0.1,
                 generator: MaybeGenerator = None) -> torch.Tensor:
    """Add eigvec · (α ⊙ eigval) to every pixel, α ~ N(0, alpha_std²) per image."""
    alpha = torch.randn((len(x), 3), generator=generator, device=x.device) * alpha_std
    eigval = _constant(_PCA_EIGVAL, x.device)
    eigvec = _constant(_PCA_EIGVEC, x.device)
    shift = (alpha * eigval) @ eigvec.T                  # N×3: Σ_j eigvec[c, j]·α_j·λ_j
    return x + shift[:, :, None, None]


class BaselinePipeline:
    """Everything after the policy (paper §4.2), uint8 in, standardised float32 out.

    cifar: standardise → flip → zero-pad-4 random crop → Cutout 16. svhn: standardise →
    Cutout 20. imagenet: random-resized-crop → flip → colour jitter → PCA lighting →
    standardise. digits: standardise → pad-4 crop → Cutout 6; imagefolder: as cifar; pad and
    Cutout scale by side/32 (``catalogue.FAMILIES``). ``flip`` None takes the family's default.
    cutout=False drops Cutout. Images of side > 64 in the imagenet family (streamed 256²)
    come out at 7/8 of their side (224), smaller ones keep their size (reduced ImageNet: 32).

    Fill: Cutout paints grey ``space.FILL`` (128), the policy's fill for exposed pixels and
    its own Cutout, so every fill in hba follows one rule (see ``space.FILL``).
    """

    def __init__(self, family: str, mean, std, cutout: bool = True, flip: bool | None = None):
        if family not in FAMILIES:
            raise HbaError(f"unknown dataset family '{family}' (known: {choices(FAMILIES)})")
        self.family, self.cutout = family, cutout
        self.recipe = FAMILIES[family]
        self.flip = self.recipe.flip if flip is None else flip
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # What a grey-FILL pixel becomes after standardise(), computed by standardise itself
        # so a painted pixel equals a grey image pixel bit for bit.
        grey = torch.full((1, len(self.mean), 1, 1), FILL, dtype=torch.uint8)
        self.fill = tuple(standardise(grey, *self._stats(torch.device("cpu"))).flatten().tolist())

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return _constant(self.mean, device), _constant(self.std, device)

    @staticmethod
    def output_side(side: int) -> int:
        """ImageNet-family crop size: 224 for 256² streamed images, unchanged for ≤ 64."""
        return side * 7 // 8 if side > 64 else side

    @staticmethod
    def _scaled(size_at_32: int, h: int, w: int) -> int:
        return round(size_at_32 * min(h, w) / 32)

    def train(self, images_uint8: torch.Tensor, generator: MaybeGenerator = None) -> torch.Tensor:
        mean, std = self._stats(images_uint8.device)
        h, w = images_uint8.shape[-2:]
        if self.family == "imagenet":
            x = images_uint8.float() / 255.0
            x = random_resized_crop(x, self.output_side(min(h, w)), generator)
            if self.flip:
                x = random_flip(x, generator)
            x = colour_jitter(x, 0.4, generator)
            x = pca_lighting(x, 0.1, generator)
            return standardise(x, mean, std)
        x = standardise(images_uint8, mean, std)
        if self.flip:
            x = random_flip(x, generator)
        x = random_crop(x, self._scaled(self.recipe.pad_at_32, h, w), generator)
        if self.cutout:
            x = cutout(x, self._scaled(self.recipe.cutout_at_32, h, w), generator,
                       fill=_constant(self.fill, x.device))
        return x

    def eval(self, images_uint8: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(images_uint8.device)
        x = images_uint8
        if self.family == "imagenet":
            side = min(x.shape[-2:])
            if self.output_side(side) != side:
                x = centre_crop(x, self.output_side(side))
        return standardise(x, mean, std)
