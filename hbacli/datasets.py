"""Datasets: names, finding the images on disk, decoding and caching them, seeded splits.

``load_dataset(name)`` turns a name (``reduced-cifar10``, ``imagefolder:PATH``, …) into an
``ImageSplits``: uint8 images and int64 labels for train / validation / test, plus the
per-channel mean and std of the training split. Where the images come from, in order:

1. torchvision's own files in the data directory (``cifar-10-batches-py/``,
   ``train_32x32.mat``…);
2. an ImageFolder tree or archive there (``cifar10/``, ``cifar10.tar.gz``, ``cifar10.zip``,
   ``cifar10-jpeg.tar.gz``…) with ``train/<class>/*`` and ``test/<class>/*`` (``val/`` stands
   in for a missing ``test/``);
3. a torchvision download into the data directory.

Decoded images are cached as uint8 arrays in the cache directory, keyed by the source files'
paths, sizes and modification times, so only the first load decodes. Nothing is ever written
into a folder data is read from (except torchvision's own download, which the user asked for);
a download that fails removes the folders it created.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import struct
import sys
import tarfile
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import IMAGEFOLDER_PREFIX, dataset_entry
from .errors import HbaError
from .files import atomic_write_bytes, cache_dir, outermost_missing, remove_created

log = logging.getLogger("hba.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("train", "extra", "val", "test")
# ImageFolder data keeps its images' own size when they all share one square size; images of
# different sizes, or not square, are resized to MIXED_SIZE_SIDE (the scale the paper searches
# at: CIFAR, reduced ImageNet) unless --image-size says otherwise. Images larger than
# TORCHVISION_MAX_SIDE are decoded by PIL, which checks its decompression-bomb limit first.
TORCHVISION_MAX_SIDE = 64
MIXED_SIZE_SIDE = 32
# Decoded images live in memory (then on the device): a set larger than this fraction of the
# machine's RAM is refused before it is decoded (imagefolder data is not streamed yet).
MEMORY_FRACTION = 0.25
STREAM_SIDE = 256          # full ImageNet: workers hand out 256×256 uint8 crops
REDUCED_IMAGENET_SIDE = 32
REDUCED_IMAGENET_CLASSES = 120
REDUCED_IMAGENET_CLASS_SEED = 0    # fixed: the class subset never depends on --split-seed
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_TEST_SIZE = 397
DIGITS_TEST_SEED = 0               # fixed: the digits test set never depends on --split-seed
CACHE_FORMAT = 2                   # 2: 16-bit images scaled (v >> 8), no longer wrapped modulo 256


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


@dataclass
class _Pool:
    """A dataset before splitting: the training pool and the untouched test set (numpy)."""

    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    note: str = ""      # how the images were sized (imagefolder: printed on every load)


@dataclass
class _FileList:
    """A dataset too large for memory: image paths and labels, streamed by workers."""

    classes: list[str]
    train_paths: list[str]
    train_labels: np.ndarray
    test_paths: list[str]
    test_labels: np.ndarray


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
    read: Callable[[Path, bool], _Pool]          # (root, download) -> pool


@dataclass(frozen=True)
class _Source:
    key: str                                     # names the cache entries
    folder_names: tuple[str, ...]                # ImageFolder tree/archive stems to look for
    torchvision: _TorchvisionFiles | None = None
    train_folders: tuple[str, ...] = ("train",)  # ImageFolder splits that form the training pool
    side: int | None = None                      # resize every image to side×side
    class_subset: int | None = None              # keep this many classes (seeded, fixed)
    streamed: bool = False                       # too large for memory: list files only


def _nchw(hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))


def _read_cifar(class_name: str) -> Callable[[Path, bool], _Pool]:
    def read(root: Path, download: bool) -> _Pool:
        from torchvision import datasets

        cls = getattr(datasets, class_name)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
        return _Pool(list(train.classes), _nchw(train.data), np.asarray(train.targets, np.int64),
                     _nchw(test.data), np.asarray(test.targets, np.int64))

    return read


def _read_svhn(with_extra: bool) -> Callable[[Path, bool], _Pool]:
    def read(root: Path, download: bool) -> _Pool:
        from torchvision.datasets import SVHN

        try:
            parts = [SVHN(str(root), split=s, download=download)
                     for s in (("train", "extra") if with_extra else ("train",))]
            test = SVHN(str(root), split="test", download=download)
        except ImportError:
            raise HbaError("reading SVHN's .mat files needs scipy: pip install scipy") from None
        return _Pool([str(d) for d in range(10)],
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
    share one square size, else resizes them to MIXED_SIZE_SIDE (32, the scale the paper
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
        pool = _imagefolder_pool(name[len(IMAGEFOLDER_PREFIX):], data_root, cache_root,
                                 image_size)
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

def _digits_pool() -> _Pool:
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
    return _Pool([str(d) for d in range(10)], np.ascontiguousarray(rgb[pool]), labels[pool],
                 np.ascontiguousarray(rgb[test]), labels[test])


# --------------------------------------------------------------------------- finding named data

def _folder_candidates(root: Path, stems: Sequence[str], archives: bool = True) -> list[Path]:
    names = [n for stem in stems for n in (stem, f"{stem}-jpeg", f"{stem}-png", f"{stem}-images")]
    suffixes = ("", ".tar", ".tar.gz", ".tgz", ".zip") if archives else ("",)
    return [root / f"{n}{s}" for n in names for s in suffixes]


def _looked_for(stems: Sequence[str], archives: bool = True) -> str:
    forms = "/, .tar, .tar.gz, .tgz, .zip" if archives else "/"
    return (f"an ImageFolder tree{' or archive' if archives else ''} "
            f"{'|'.join(stems)}[-jpeg|-png|-images][{forms}] with train/ and test/")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _find_pool(name: str, source: _Source, root: Path, cache: Path, download: bool) -> _Pool:
    tv = source.torchvision
    looked = []
    if tv is not None:
        looked.append("torchvision's " + ", ".join(sorted({f.split("/")[0] + "/" * ("/" in f)
                                                           for f in tv.files})))
        for tv_root in (root, root / source.folder_names[0]):
            present = [tv_root / f for f in tv.files]
            if all(p.is_file() for p in present):
                return _cached(cache, source.key, present, {},
                               lambda r=tv_root: _torchvision_read(tv, r, False, name))
    looked.append(_looked_for(source.folder_names))
    for candidate in _folder_candidates(root, source.folder_names):
        if candidate.exists():
            return _folder_pool(candidate, source, cache)
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
            failure = f"download failed ({_one_line(exc)})"
        else:
            present = [root / f for f in tv.files]
            _store(cache, source.key, present, {}, pool)
            return pool
    elif tv is None:
        failure = "torchvision cannot download it"
    raise HbaError(f"dataset {name} not found in {root}: looked for {' and '.join(looked)}; "
                   f"{failure}; put the data there, or point --data-dir or HBA_DATA at it")



def _torchvision_read(tv: _TorchvisionFiles, root: Path, download: bool, name: str) -> _Pool:
    try:
        return tv.read(root, download)
    except RuntimeError as exc:   # torchvision's "Dataset not found or corrupted"
        if download:
            raise
        raise HbaError(f"torchvision could not read {name} in {root}: {_one_line(exc)}") from None


def _find_file_list(name: str, source: _Source, root: Path) -> _FileList:
    """Full ImageNet: a directory tree (torchvision's ImageNet layout is one), never decoded."""
    for candidate in _folder_candidates(root, source.folder_names, archives=False):
        if candidate.is_dir():
            return _tree_file_list(candidate)
    raise HbaError(f"dataset {name} not found in {root}: looked for "
                   f"{_looked_for(source.folder_names, archives=False)} (val/ stands for test/); "
                   "torchvision cannot download it; unpack ImageNet there, or point --data-dir or "
                   "HBA_DATA at it")


def _imagefolder_pool(path_text: str, data_root: Path, cache: Path,
                      image_size: int | None = None) -> _Pool:
    if not path_text:
        raise HbaError("imagefolder needs a path: imagefolder:PATH (a directory with train/ and "
                       "test/, or a .tar/.tar.gz/.zip of one)")
    path = Path(path_text).expanduser()
    tried = [path]
    if not path.exists() and not path.is_absolute():
        path = data_root / path_text
        tried.append(path)
    if not path.exists():
        raise HbaError(f"imagefolder path not found: {' or '.join(map(str, tried))} (give a "
                       "directory with train/<class>/ and test/<class>/, or a .tar/.tar.gz/.zip "
                       "of one)")
    return _folder_pool(path, _Source("imagefolder", (), side=image_size), cache)


# --------------------------------------------------------------------------- the decoded cache

def _cache_path(cache: Path, key: str, files: Sequence[Path], params: dict) -> Path:
    """<cache>/decoded/<key>-<digest>.npz; the digest covers every source file's path, size
    and mtime (hashed incrementally: a tree can list a million files)."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "source": key, "params": params},
                                       sort_keys=True).encode())
    for path in files:
        st = path.stat()
        digest.update(f"\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return cache / "decoded" / f"{key}-{digest.hexdigest()[:20]}.npz"


def _cached(cache: Path, key: str, files: Sequence[Path], params: dict,
            read: Callable[[], _Pool]) -> _Pool:
    """The decoded pool from the cache when its source files are unchanged, else read + store."""
    path = _cache_path(cache, key, files, params)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return _Pool([str(c) for c in z["classes"]], z["train_images"], z["train_labels"],
                             z["test_images"], z["test_labels"],
                             str(z["note"]) if "note" in z.files else "")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable cache %s (%s)", path, _one_line(exc))
    pool = read()
    _store(cache, key, files, params, pool)
    return pool


def _store(cache: Path, key: str, files: Sequence[Path], params: dict, pool: _Pool) -> None:
    """Write the cache atomically; a cache that cannot be written only costs time later."""
    path = _cache_path(cache, key, files, params)
    buffer = io.BytesIO()
    np.savez(buffer, classes=np.array(pool.classes, dtype=str), train_images=pool.train_images,
             train_labels=pool.train_labels, test_images=pool.test_images,
             test_labels=pool.test_labels, note=np.array(pool.note))
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as exc:
        warnings.warn(f"could not write the decoded-image cache {path}: {_one_line(exc)}",
                      stacklevel=3)


# --------------------------------------------------------------------------- ImageFolder data

@dataclass
class _Record:
    split: str
    cls: str
    name: str
    payload: bytes | Path
    where: str = ""      # names the file in messages: its path, or "ARCHIVE member MEMBER"


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _empty_class_folder(folder: str) -> HbaError:
    # Refused, not skipped: a class without images would silently drop out of the class list,
    # shifting the label of every class after it and the number of outputs of the net.
    return HbaError(f"empty class folder {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                    "directly in it; add images or remove the folder (a class without images "
                    "would shift the label of every class after it)")


def _tree_records(root: Path) -> list[_Record]:
    """train/<class>/<file> (and extra/, val/, test/) under a directory, names sorted.

    HbaError for a class folder without images, or one that cannot be listed."""
    records = []
    for split in SPLIT_FOLDERS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        try:
            class_dirs = sorted(p for p in split_dir.iterdir()
                                if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            raise HbaError(f"cannot list folder {split_dir}: {exc.strerror or _one_line(exc)}") \
                from None
        for class_dir in class_dirs:
            try:
                entries = sorted(os.scandir(class_dir), key=lambda e: e.name)
            except OSError as exc:
                raise HbaError(f"cannot list folder {class_dir}: "
                               f"{exc.strerror or _one_line(exc)}") from None
            found = len(records)
            for entry in entries:
                if entry.is_file() and _is_image(entry.name):
                    records.append(_Record(split, class_dir.name, entry.name, Path(entry.path),
                                           entry.path))
            if len(records) == found:
                raise _empty_class_folder(str(class_dir))
    return records


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The path parts of an archive member; None (the member is ignored) for an absolute name
    or one with a '..' part. Members are only ever read into memory, never written, so such a
    name could not escape anyway; ignoring it keeps data from outside the tree out of it."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    return path.parts


def _archive_records(path: Path) -> list[_Record]:
    """Members …/<split>/<class>/<file> of a tar (any compression) or zip, read in one pass,
    into memory (nothing is extracted to disk)."""
    records = []
    class_dirs: dict[tuple[str, ...], str] = {}     # (prefix…, split, class) → member name

    def seen(name: str, is_dir: bool, is_file: bool, read: Callable[[], bytes]) -> None:
        parts = _member_parts(name)
        if parts is None:
            return
        if (is_dir and len(parts) >= 2 and parts[-2] in SPLIT_FOLDERS
                and not parts[-1].startswith(".")):
            class_dirs[parts] = name
        if is_file and len(parts) >= 3 and parts[-3] in SPLIT_FOLDERS and _is_image(name):
            records.append(_Record(parts[-3], parts[-2], parts[-1], read(),
                                   f"{path} member {name}"))
            filled.add(parts[:-1])
            prefixes.add(parts[:-3])

    filled, prefixes = set(), set()
    try:
        if zipfile.is_zipfile(path) and not tarfile.is_tarfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    link = stat.S_ISLNK(info.external_attr >> 16)   # a symlink: not followed
                    seen(info.filename, info.is_dir(), not info.is_dir() and not link,
                         lambda info=info: archive.read(info))
        else:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    seen(member.name, member.isdir(), member.isfile(),
                         lambda member=member: tar.extractfile(member).read())
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError,
            NotImplementedError, OSError, EOFError) as exc:
        # RuntimeError: an encrypted zip member; NotImplementedError: an unknown compression
        raise HbaError(f"cannot read archive {path}: {_one_line(exc)}") from None
    for parts in sorted(set(class_dirs) - filled):
        if parts[:-2] in prefixes:      # folders beside the data (another prefix) don't count
            raise _empty_class_folder(f"{path} member {class_dirs[parts].rstrip('/')}")
    return sorted(records, key=lambda r: (r.split, r.cls, r.name))


def _folder_records(path: Path) -> list[_Record]:
    if path.is_dir():
        return _tree_records(path)
    try:
        is_archive = path.is_file() and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path))
    except OSError as exc:
        raise HbaError(f"cannot read archive {path}: {exc.strerror or _one_line(exc)}") from None
    if is_archive:
        return _archive_records(path)
    raise HbaError(f"{path} is neither a directory nor a .tar/.tar.gz/.zip archive")


def _pick_test_split(records: Sequence[_Record], where: Path) -> str:
    splits = {r.split for r in records}
    if "train" not in splits:
        raise HbaError(f"no images in {where}/train/<class>/ (ImageFolder layout: "
                       "train/<class>/*.jpg and test/<class>/*.jpg)")
    for split in ("test", "val"):
        if split in splits:
            return split
    raise HbaError(f"no test/<class>/ (or val/<class>/) images in {where}")


def _train_classes(records: Sequence[_Record], test_split: str, where: Path) -> list[str]:
    """The sorted class folders of train/ (ImageFolder's order); test classes must be among them."""
    classes = sorted({r.cls for r in records if r.split == "train"})
    if len(classes) < 2:
        raise HbaError(f"{where}: train/ has {len(classes)} class ({', '.join(classes)}); a "
                       "classifier needs at least 2 classes (one folder of images per class)")
    unknown = sorted({r.cls for r in records if r.split == test_split} - set(classes))
    if unknown:
        raise HbaError(f"{where}: {test_split}/ has classes missing from train/: "
                       f"{', '.join(unknown[:5])}")
    return classes


def _label_records(records: Sequence[_Record], classes: list[str],
                   split: str) -> tuple[list[_Record], np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    chosen = [r for r in records if r.split == split and r.cls in index]
    return chosen, np.array([index[r.cls] for r in chosen], np.int64)


def _folder_pool(path: Path, source: _Source, cache: Path) -> _Pool:
    """An ImageFolder tree or archive, decoded once and cached."""
    # An archive is one file, keyed as such; a tree is keyed by its listing (cheap to take).
    if path.is_dir():
        records = _tree_records(path)
        if not records:
            raise HbaError(f"no images found under {path} (ImageFolder layout: "
                           "train/<class>/*.jpg and test/<class>/*.jpg)")
        key_files: Sequence[Path] = [r.payload for r in records]
    else:
        key_files = [path]
    params = {"side": source.side, "classes": source.class_subset,
              "train": list(source.train_folders)}
    if source.side is None:     # the rule for None: any shared square size kept (was: ≤ 64)
        params["sizing"] = "square-native"
    return _cached(cache, source.key, key_files, params, lambda: _decode_folder(path, source))


def _decode_folder(path: Path, source: _Source) -> _Pool:
    records = _folder_records(path)
    test_split = _pick_test_split(records, path)
    classes = _train_classes(records, test_split, path)
    if source.class_subset is not None:
        classes = _subset_classes(classes, source.class_subset, path)
    train, train_labels = [], []
    for split in source.train_folders:
        chosen, labels = _label_records(records, classes, split)
        train += chosen
        train_labels.append(labels)
    test, test_labels = _label_records(records, classes, test_split)
    log.info("decoding %d images of %s (once; cached afterwards)", len(train) + len(test), path)
    # Train and test are decoded together so that they end up the same size.
    images, note = _decode_sized([r.payload for r in train + test], source.side, None,
                                 [r.where for r in train + test])
    return _Pool(classes, images[:len(train)], np.concatenate(train_labels),
                 images[len(train):], test_labels, note)


def _subset_classes(classes: list[str], count: int, where: Path) -> list[str]:
    if len(classes) < count:
        raise HbaError(f"{where} has {len(classes)} classes; reduced ImageNet needs {count}")
    chosen = np.random.default_rng(REDUCED_IMAGENET_CLASS_SEED).choice(len(classes), count,
                                                                        replace=False)
    return [classes[i] for i in sorted(chosen)]


def _tree_file_list(root: Path) -> _FileList:
    records = _tree_records(root)
    test_split = _pick_test_split(records, root)
    classes = _train_classes(records, test_split, root)
    train, train_labels = _label_records(records, classes, "train")
    test, test_labels = _label_records(records, classes, test_split)
    return _FileList(classes, [str(r.payload) for r in train], train_labels,
                     [str(r.payload) for r in test], test_labels)


# --------------------------------------------------------------------------- decoding

class _MixedSizes(Exception):
    """The images do not share one square size: decode again with resizing."""


# Pillow's modes of 16-bit greys (and "I", 32-bit, read as 16-bit: older Pillows open 16-bit
# grey PNGs so). Pillow's convert("RGB") clips them at 255; they are scaled like the rest.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_images(payloads: Sequence[bytes | Path], side: int | None = None,
                  workers: int | None = None, names: Sequence[str] | None = None) -> np.ndarray:
    """Encoded images (bytes or paths) → uint8 N×3×side×side RGB.

    Without ``side``, images that all share one square size keep it; otherwise every image is
    resized (shorter side) and centre-cropped to ``side`` (default MIXED_SIZE_SIDE). Native-size
    decoding uses torchvision's decoder for images up to TORCHVISION_MAX_SIDE (fast for small
    images), PIL above; resizing uses PIL's JPEG draft mode, in worker processes when there are
    many images. HbaError before decoding when the images would take more than MEMORY_FRACTION
    of the machine's memory.

    16 bits a channel become 8 by keeping the high byte (v >> 8) on every path: what Pillow
    does itself for 16-bit RGB PNGs and torchvision's ``to_dtype(..., scale=True)`` does, so an
    image's pixels never depend on the images beside it. ``names`` (paths by default) name the
    images in errors: HbaError, one line, for an image that cannot be read, is empty, cannot
    be decoded, or is over Pillow's decompression-bomb limit (a PNG or JPEG larger than
    TORCHVISION_MAX_SIDE goes straight to PIL, which checks the limit in the header first).
    """
    if names is None:
        names = [str(p) if isinstance(p, Path) else f"#{i + 1} of {len(payloads)}"
                 for i, p in enumerate(payloads)]
    return _decode_sized(payloads, side, workers, names)[0]


def _decode_sized(payloads: Sequence[bytes | Path], side: int | None, workers: int | None,
                  names: Sequence[str]) -> tuple[np.ndarray, str]:
    """``decode_images`` and a line saying how the images were sized (the choice made)."""
    if side is not None:
        return (_decode_resized(payloads, side, workers, names),
                f"images resized to {side}×{side} (--image-size {side})")
    try:
        images = _decode_native(payloads, names)
        side = images.shape[-1]
        return images, (f"images kept at their own size, {side}×{side} (--image-size N "
                        "resizes them)")
    except _MixedSizes:
        side = MIXED_SIZE_SIDE
        return (_decode_resized(payloads, side, workers, names),
                f"images resized to {side}×{side} (they differ in size or are not square; "
                "--image-size N sets the size)")


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes; None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits(count: int, side: int) -> None:
    """HbaError (one line) when count images of side×side would overfill memory."""
    need, total = count * 3 * side * side, _memory_bytes()
    if total is not None and need > MEMORY_FRACTION * total:
        raise HbaError(f"{count:,} images at {side}×{side} take {need / 2**30:.1f} GiB in memory, "
                       f"over {MEMORY_FRACTION:.0%} of this machine's {total / 2**30:.1f} GiB "
                       "(imagefolder data is held in memory, not streamed); choose a smaller "
                       "--image-size or fewer images")


def _read(payload: bytes | Path, where: str) -> bytes:
    if isinstance(payload, Path):
        try:
            payload = payload.read_bytes()
        except OSError as exc:
            raise HbaError(f"cannot read image {where}: {exc.strerror or _one_line(exc)}") \
                from None
    if not payload:
        raise HbaError(f"image {where} is empty (0 bytes)")
    return payload


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's or JPEG's header, without decoding; None if not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:                                  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:      # markers without a segment
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # SOFn
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        elif marker == 0xDA:                                # scan data before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _torchvision_decode(data: bytes) -> np.ndarray:
    """~2.5× faster than PIL on 32×32 JPEGs, same pixels (both libjpeg-turbo)."""
    from torchvision.io import ImageReadMode, decode_image

    with warnings.catch_warnings():   # torchvision 0.29 deprecates its decoders for torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                             mode=ImageReadMode.RGB).numpy()
    if image.dtype == np.uint16:      # 16-bit PNGs: the high byte, as _pil_rgb8 does
        image = (image >> 8).astype(np.uint8)
    return image


def _decode_native(payloads: Sequence[bytes | Path], names: Sequence[str]) -> np.ndarray:
    out: np.ndarray | None = None
    for i, payload in enumerate(payloads):
        data = _read(payload, names[i])
        size = _header_size(data)
        if size is not None and (size[0] != size[1] or (
                out is not None and size[0] != out.shape[-1])):
            raise _MixedSizes     # told by the header, before decoding
        if size is not None and max(size) > TORCHVISION_MAX_SIDE:
            image = _pil_decode(data, None, names[i])   # PIL checks the bomb limit first
        else:
            try:
                image = _torchvision_decode(data)
            except (RuntimeError, ImportError):   # a format (bmp, tiff…) or no torchvision one
                image = _pil_decode(data, None, names[i])
        if out is None:
            if image.shape[1] != image.shape[2]:
                raise _MixedSizes
            _check_fits(len(payloads), image.shape[-1])
            out = np.empty((len(payloads), *image.shape), np.uint8)
        elif image.shape != out.shape[1:]:
            raise _MixedSizes
        out[i] = image
    if out is None:
        return np.zeros((0, 3, MIXED_SIZE_SIDE, MIXED_SIZE_SIDE), np.uint8)
    return out


def _pil_rgb8(im):
    """A PIL image as 8-bit RGB; 16-bit greys by their high byte, not clipped at 255."""
    from PIL import Image

    if im.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(im)
        if im.mode == "I":
            grey = np.clip(grey, 0, 65535)
        im = Image.fromarray((grey >> 8).astype(np.uint8))
    return im if im.mode == "RGB" else im.convert("RGB")


def _pil_decode(payload: bytes | Path, side: int | None, where: str | None = None) -> np.ndarray:
    """One image with PIL, optionally shorter side → ``side`` and centre crop to side×side."""
    from PIL import Image, ImageOps

    if where is None:
        where = str(payload) if isinstance(payload, Path) else "an archive member"
    data = _read(payload, where)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if side is not None:
                im.draft("RGB", (side, side))   # JPEG: decode at the smallest scale ≥ side
                im = ImageOps.fit(_pil_rgb8(im), (side, side), Image.BICUBIC)
            return np.asarray(_pil_rgb8(im)).transpose(2, 0, 1)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise HbaError(f"image {where} has {pixels}, over Pillow's decompression-bomb limit of "
                       f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (2 × "
                       "PIL.Image.MAX_IMAGE_PIXELS); shrink it or leave it out") from None
    except Exception as exc:   # Pillow raises many types for broken files (OSError, SyntaxError…)
        raise HbaError(f"cannot decode image {where}: {_one_line(exc)}") from None


def _decode_resized(payloads: Sequence[bytes | Path], side: int, workers: int | None,
                    names: Sequence[str]) -> np.ndarray:
    _check_fits(len(payloads), side)
    out = np.empty((len(payloads), 3, side, side), np.uint8)
    if workers is None:   # worker start-up only pays off for many (large) images
        workers = (os.cpu_count() or 1) if len(payloads) >= 5000 else 1
    if workers <= 1:
        for i, payload in enumerate(payloads):
            out[i] = _pil_decode(payload, side, names[i])
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        sides = [side] * len(payloads)
        for i, image in enumerate(pool.map(_pil_decode, payloads, sides, names, chunksize=256)):
            out[i] = image
    return out


# --------------------------------------------------------------------------- streamed ImageNet

def _streamed_splits(name: str, family: str, files: _FileList, train_size: int | None,
                     val_size: int, split_seed: int) -> ImageSplits:
    train_idx, val_idx = split_indices(len(files.train_labels), train_size, val_size,
                                       split_seed, name)
    empty = torch.zeros((0, 3, STREAM_SIDE, STREAM_SIDE), dtype=torch.uint8)
    return ImageSplits(
        name=name, family=family, classes=files.classes,
        train_images=empty, train_labels=torch.from_numpy(files.train_labels[train_idx]),
        val_images=empty, val_labels=torch.from_numpy(files.train_labels[val_idx]),
        test_images=empty, test_labels=torch.from_numpy(files.test_labels),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, train_index=train_idx, val_index=val_idx,
        files={"train": [files.train_paths[i] for i in train_idx],
               "val": [files.train_paths[i] for i in val_idx],
               "test": list(files.test_paths)})
