"""Datasets by name: ``load_dataset`` and the seeded train / validation / test splits.

``load_dataset(name)`` turns a name (``reduced-cifar10``, ``imagefolder:PATH``, …; the names
and their sizes are ``catalogue.DATASETS``) into an ``ImageSplits``: uint8 images and int64
labels for train / validation / test, plus the per-channel mean and std of the training split.
Where the images come from, in order:

1. torchvision's own files in the data directory (``cifar-10-batches-py/``,
   ``train_32x32.mat``…), read by the ``SOURCES`` readers here;
2. an ImageFolder tree or archive there (``cifar10/``, ``cifar10.tar.gz``, ``cifar10.zip``,
   ``cifar10-jpeg.tar.gz``…) with ``train/<class>/*`` and ``test/<class>/*`` (``val/`` stands
   in for a missing ``test/``): ``imagefolder.py``;
3. a torchvision download into the data directory.

The embedded digits are read from package data; full ImageNet, and an imagefolder tree too
large for memory, are listed, not decoded, and streamed by ``loaders.StreamingLoader``.
Decoding is ``decode.py``, the decoded-image cache ``dataset_cache.py``. Nothing is ever
written into a folder data is read from (except torchvision's own download, which the user
asked for); a download that fails removes the folders it created.

Over 400 lines on purpose: every way a name becomes splits (read, decoded, or streamed) is
here side by side, so each path's sizes, stats and errors can be checked against the others.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import IMAGEFOLDER_PREFIX, dataset_entry
from .dataset_cache import Pool, cached, store
from .decode import decode_file
from .errors import HbaError, one_line
from .files import cache_dir, outermost_missing, remove_created
from .imagefolder import (
    FileList,
    StreamedFolder,
    folder_candidates,
    folder_pool,
    imagefolder_pool,
    looked_for,
    tree_file_list,
)

log = logging.getLogger("hba.data")

STREAM_SIDE = 256          # full ImageNet: workers hand out 256×256 uint8 crops
# A streamed imagefolder's mean and std come from a sample of its training images: at most
# this many, and at most this many bytes.
STATS_SAMPLE_IMAGES = 5000
STATS_SAMPLE_BYTES = 256 * 2**20
REDUCED_IMAGENET_SIDE = 32
REDUCED_IMAGENET_CLASSES = 120
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_TEST_SIZE = 397
DIGITS_TEST_SEED = 0               # fixed: the digits test set never depends on --split-seed


@dataclass
class ImageSplits:
    """Train / validation / test images of one dataset, uint8 N×3×H×W on the CPU.

    ``train_index`` and ``val_index`` say which images of the source's training pool (in its
    file order) went where, so a split can be audited and reproduced. For full ImageNet the
    image tensors are empty and ``files`` lists the image paths of each split (streamed).
    """

    name: str
    family: str
    classes: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    files: dict[str, list[str]] | None = None
    image_size: int | None = None    # side of the (square) images; None: not square

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------- where things live

def default_data_dir() -> Path:
    """$HBA_DATA, else <cache>/datasets (where downloads go when nothing else is said)."""
    if os.environ.get("HBA_DATA"):
        return Path(os.environ["HBA_DATA"]).expanduser()
    return cache_dir() / "datasets"


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class _TorchvisionFiles:
    """torchvision's own on-disk layout of a dataset and how to read (or download) it."""

    files: tuple[str, ...]                       # relative to the root; all must exist
    read: Callable[[Path, bool], Pool]           # (root, download) -> pool


@dataclass(frozen=True)
class _Source:
    """Where a named dataset's images are found and how its ImageFolder form is read."""

    key: str                                     # names the cache entries
    folder_names: tuple[str, ...]                # ImageFolder tree/archive stems to look for
    torchvision: _TorchvisionFiles | None = None
    train_folders: tuple[str, ...] = ("train",)  # ImageFolder splits that form the training pool
    side: int | None = None                      # resize every image to side×side
    class_subset: int | None = None              # keep this many classes (seeded, fixed)
    streamed: bool = False                       # too large for memory: list files only


def _nchw(hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))


def _read_cifar(class_name: str) -> Callable[[Path, bool], Pool]:
    def read(root: Path, download: bool) -> Pool:
        from torchvision import datasets

        cls = getattr(datasets, class_name)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
        return Pool(list(train.classes), _nchw(train.data), np.asarray(train.targets, np.int64),
                    _nchw(test.data), np.asarray(test.targets, np.int64))

    return read


def _read_svhn(with_extra: bool) -> Callable[[Path, bool], Pool]:
    def read(root: Path, download: bool) -> Pool:
        from torchvision.datasets import SVHN

        try:
            parts = [SVHN(str(root), split=s, download=download)
                     for s in (("train", "extra") if with_extra else ("train",))]
            test = SVHN(str(root), split="test", download=download)
        except ImportError:
            raise HbaError("reading SVHN's .mat files needs scipy: pip install scipy") from None
        return Pool([str(d) for d in range(10)],
                    np.concatenate([p.data for p in parts]),
                    np.concatenate([p.labels for p in parts]).astype(np.int64),
                    test.data, test.labels.astype(np.int64))

    return read


_CIFAR10_FILES = tuple(f"cifar-10-batches-py/{f}" for f in
                       ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                        "data_batch_5", "test_batch", "batches.meta"))
_CIFAR100_FILES = tuple(f"cifar-100-python/{f}" for f in ("train", "test", "meta"))
_SVHN_CORE = ("train_32x32.mat", "test_32x32.mat")

# The readers of ``catalogue.Dataset.source`` (besides the embedded digits and imagefolder).
SOURCES: dict[str, _Source] = {
    "cifar10": _Source("cifar10", ("cifar10",), _TorchvisionFiles(_CIFAR10_FILES,
                                                                  _read_cifar("CIFAR10"))),
    "cifar100": _Source("cifar100", ("cifar100",), _TorchvisionFiles(_CIFAR100_FILES,
                                                                     _read_cifar("CIFAR100"))),
    "svhn-core": _Source("svhn-core", ("svhn",), _TorchvisionFiles(_SVHN_CORE, _read_svhn(False))),
    "svhn-full": _Source("svhn-full", ("svhn",),
                         _TorchvisionFiles(_SVHN_CORE + ("extra_32x32.mat",), _read_svhn(True)),
                         train_folders=("train", "extra")),
    "reduced-imagenet": _Source("reduced-imagenet", ("reduced-imagenet", "imagenet32", "imagenet"),
                                side=REDUCED_IMAGENET_SIDE,
                                class_subset=REDUCED_IMAGENET_CLASSES),
    "imagenet": _Source("imagenet", ("imagenet", "ILSVRC2012"), streamed=True),
}


# --------------------------------------------------------------------------- public entry

def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 train_size: int | None = None, val_size: int | None = None,
                 split_seed: int = 0, download: bool = True,
                 cache: str | os.PathLike | None = None,
                 image_size: int | None = None) -> ImageSplits:
    """Find (or download), decode (or read from the cache) and split a dataset.

    The validation set is drawn first from the source's training pool, then the training set
    from the rest, both by ``split_seed``; the test set is the source's own and never sampled.
    ``val_size=0`` gives an empty validation set. HbaError (one line) when the data is not
    found or the sizes do not fit.

    ``image_size`` (``imagefolder:`` data only) resizes every image (shorter side) and
    centre-crops it to image_size × image_size; None keeps the images' own size when they all
    share one square size, else resizes them to decode.MIXED_SIZE_SIDE (32, the scale the paper
    searches at and the size of CIFAR; predictable in memory and time whatever the photos
    are). How the images were sized is printed once, one line on stderr, and kept in
    ``ImageSplits.image_size``.
    """
    data_root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cache_root = Path(cache).expanduser() if cache is not None else cache_dir()
    for size, what in ((train_size, "train_size"), (val_size, "val_size")):
        if size is not None and size < 0:
            raise HbaError(f"{what} must be >= 0, got {size}")
    if image_size is not None and not name.startswith(IMAGEFOLDER_PREFIX):
        raise HbaError(f"--image-size applies to imagefolder:PATH datasets only; {name} has its "
                       "own size (leave image_size unset)")
    if image_size is not None and (isinstance(image_size, bool) or image_size < 1):
        raise HbaError(f"image_size must be a positive number of pixels, got {image_size!r}")
    entry = dataset_entry(name)
    family, default_train, default_val = entry.family, entry.train_size, entry.val_size
    if entry.source == "digits":
        pool = _digits_pool()
    elif entry.source == "imagefolder":
        pool = imagefolder_pool(name[len(IMAGEFOLDER_PREFIX):], data_root, cache_root,
                                image_size)
        if isinstance(pool, StreamedFolder):
            return _streamed_folder_splits(name, pool, train_size, val_size, split_seed)
        if pool.note:
            print(f"imagefolder: {pool.note}", file=sys.stderr, flush=True)
        # A user's data has no published split: a fifth (at most 10,000) validates.
        default_val = min(10000, len(pool.train_labels) // 5)
    else:
        source = SOURCES[entry.source]
        if source.streamed:
            files = _find_file_list(name, source, data_root)
            return _streamed_splits(name, family, files, train_size, val_size if val_size
                                    is not None else default_val, split_seed)
        pool = _find_pool(name, source, data_root, cache_root, download)
    val_n = default_val if val_size is None else val_size
    train_n = default_train if train_size is None else train_size
    train_idx, val_idx = split_indices(len(pool.train_labels), train_n, val_n, split_seed, name)
    train_images = pool.train_images[train_idx]
    mean, std = channel_stats(train_images)
    return ImageSplits(
        name=name, family=family, classes=list(pool.classes),
        train_images=torch.from_numpy(train_images),
        train_labels=torch.from_numpy(pool.train_labels[train_idx].astype(np.int64)),
        val_images=torch.from_numpy(pool.train_images[val_idx]),
        val_labels=torch.from_numpy(pool.train_labels[val_idx].astype(np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(pool.test_images)),
        test_labels=torch.from_numpy(pool.test_labels.astype(np.int64)),
        mean=mean, std=std, train_index=train_idx, val_index=val_idx,
        image_size=_square_side(pool.test_images if len(pool.test_images) else pool.train_images))


def _square_side(images: np.ndarray) -> int | None:
    h, w = images.shape[-2:]
    return int(h) if h == w else None


# --------------------------------------------------------------------------- splits, statistics

def split_indices(pool_size: int, train_size: int | None, val_size: int, seed: int,
                  name: str = "the dataset") -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint (train, val) positions in a pool; validation is drawn first.

    Drawing validation first keeps it the same whatever ``train_size`` is. ``train_size=None``
    takes every remaining image. Both index arrays are sorted (pool order).
    """
    if val_size > pool_size:
        raise HbaError(f"val_size {val_size} exceeds the {pool_size} training images of {name}")
    rest = pool_size - val_size
    if train_size is None:
        train_size = rest
    if train_size > rest:
        raise HbaError(f"train_size {train_size} + val_size {val_size} exceed the {pool_size} "
                       f"training images of {name}")
    order = np.random.default_rng(seed).permutation(pool_size)
    return np.sort(order[val_size:val_size + train_size]), np.sort(order[:val_size])


def channel_stats(images: np.ndarray, chunk: int = 8192) -> tuple[tuple[float, float, float],
                                                                   tuple[float, float, float]]:
    """Exact per-channel mean and std (0..1 scale) of uint8 N×3×H×W, from value histograms.

    Histograms keep memory flat for SVHN's 600k images where a float copy would not fit.
    """
    if len(images) == 0:
        raise HbaError("the training split is empty")
    counts = np.zeros((3, 256), np.int64)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk]
        for c in range(3):
            counts[c] += np.bincount(block[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum(axis=1)
    mean = counts @ values / n
    std = np.sqrt(np.maximum(counts @ values**2 / n - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# --------------------------------------------------------------------------- digits

def _digits_pool() -> Pool:
    """scikit-learn's 8×8 digits (UCI), 0..16 → 0..255, bilinear to 32×32, grey → RGB.

    The 397-image test set is fixed (seed DIGITS_TEST_SEED); the other 1,400 are the pool.
    """
    with resources.files("hbacli").joinpath("assets/digits.npz").open("rb") as f:
        data = np.load(f)
        images, labels = data["images"], data["labels"].astype(np.int64)
    scaled = torch.from_numpy(images).float()[:, None] * (255.0 / 16.0)
    upsampled = F.interpolate(scaled, size=(32, 32), mode="bilinear", align_corners=False)
    rgb = upsampled.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).numpy()
    order = np.random.default_rng(DIGITS_TEST_SEED).permutation(len(labels))
    test, pool = np.sort(order[:DIGITS_TEST_SIZE]), np.sort(order[DIGITS_TEST_SIZE:])
    return Pool([str(d) for d in range(10)], np.ascontiguousarray(rgb[pool]), labels[pool],
                np.ascontiguousarray(rgb[test]), labels[test])


# --------------------------------------------------------------------------- finding named data

def _find_pool(name: str, source: _Source, root: Path, cache: Path, download: bool) -> Pool:
    tv = source.torchvision
    looked = []
    if tv is not None:
        looked.append("torchvision's " + ", ".join(sorted({f.split("/")[0] + "/" * ("/" in f)
                                                           for f in tv.files})))
        for tv_root in (root, root / source.folder_names[0]):
            present = [tv_root / f for f in tv.files]
            if all(p.is_file() for p in present):
                return cached(cache, source.key, present, {},
                              lambda r=tv_root: _torchvision_read(tv, r, False, name))
    looked.append(looked_for(source.folder_names))
    for candidate in folder_candidates(root, source.folder_names):
        if candidate.exists():
            return folder_pool(candidate, cache, source.key, source.train_folders, source.side,
                               source.class_subset)
    failure = "download not allowed"
    if tv is not None and download:
        log.info("%s not found in %s: downloading with torchvision", name, root)
        created = outermost_missing(root)   # torchvision makes root before it downloads
        try:
            pool = _torchvision_read(tv, root, True, name)
        except BaseException as exc:
            remove_created(created)         # a failed download leaves no folder behind
            if isinstance(exc, HbaError) or not isinstance(exc, Exception):
                raise
            # network, permissions, disk: all one line for the user
            failure = f"download failed ({one_line(exc)})"
        else:
            present = [root / f for f in tv.files]
            store(cache, source.key, present, {}, pool)
            return pool
    elif tv is None:
        failure = "torchvision cannot download it"
    raise HbaError(f"dataset {name} not found in {root}: looked for {' and '.join(looked)}; "
                   f"{failure}; put the data there, or point --data-dir or HBA_DATA at it")


def _torchvision_read(tv: _TorchvisionFiles, root: Path, download: bool, name: str) -> Pool:
    try:
        return tv.read(root, download)
    except RuntimeError as exc:   # torchvision's "Dataset not found or corrupted"
        if download:
            raise
        raise HbaError(f"torchvision could not read {name} in {root}: {one_line(exc)}") from None


def _find_file_list(name: str, source: _Source, root: Path) -> FileList:
    """Full ImageNet: a directory tree (torchvision's ImageNet layout is one), never decoded."""
    for candidate in folder_candidates(root, source.folder_names, archives=False):
        if candidate.is_dir():
            return tree_file_list(candidate)
    raise HbaError(f"dataset {name} not found in {root}: looked for "
                   f"{looked_for(source.folder_names, archives=False)} (val/ stands for test/); "
                   "torchvision cannot download it; unpack ImageNet there, or point --data-dir or "
                   "HBA_DATA at it")


# --------------------------------------------------------------------------- streamed data

def _streamed_folder_splits(name: str, streamed: StreamedFolder, train_size: int | None,
                            val_size: int | None, split_seed: int) -> ImageSplits:
    """An imagefolder tree too large for memory, streamed at its side; mean and std from a
    sample of its training split (STATS_SAMPLE_IMAGES, STATS_SAMPLE_BYTES)."""
    files, side = streamed.files, streamed.side
    default_val = min(10000, len(files.train_labels) // 5)
    splits = _streamed_splits(name, "imagefolder", files, train_size,
                              default_val if val_size is None else val_size, split_seed, side)
    paths = splits.files["train"]
    count = max(1, min(len(paths), STATS_SAMPLE_IMAGES, STATS_SAMPLE_BYTES // (3 * side * side)))
    sample = np.random.default_rng(split_seed).choice(len(paths), count, replace=False)
    images = np.stack([decode_file(paths[i], side) for i in np.sort(sample)])
    splits.mean, splits.std = channel_stats(images)
    print(f"imagefolder: {len(files.train_labels) + len(files.test_labels):,} images at "
          f"{side}×{side} would overfill memory: streamed from their files (mean and std from "
          f"{count:,} training images)", file=sys.stderr, flush=True)
    return splits


def _streamed_splits(name: str, family: str, files: FileList, train_size: int | None,
                     val_size: int, split_seed: int, side: int = STREAM_SIDE) -> ImageSplits:
    train_idx, val_idx = split_indices(len(files.train_labels), train_size, val_size,
                                       split_seed, name)
    empty = torch.zeros((0, 3, side, side), dtype=torch.uint8)
    return ImageSplits(
        name=name, family=family, classes=files.classes,
        train_images=empty, train_labels=torch.from_numpy(files.train_labels[train_idx]),
        val_images=empty, val_labels=torch.from_numpy(files.train_labels[val_idx]),
        test_images=empty, test_labels=torch.from_numpy(files.test_labels),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, train_index=train_idx, val_index=val_idx,
        files={"train": [files.train_paths[i] for i in train_idx],
               "val": [files.train_paths[i] for i in val_idx],
               "test": list(files.test_paths)},
        image_size=side)
