"""ImageFolder data: ``train/<class>/*`` and ``test/<class>/*`` in a directory tree or archive.

Finds the images of such a tree or of a .tar (any compression) or .zip of one (read into
memory, never extracted), decides the classes (train/'s sorted class folders) and the test
split (``val/`` stands in for a missing ``test/``), and turns them into a decoded, cached pool
(``folder_pool``) or, for data too large for memory, a list of files (``tree_file_list``).
Used for ``imagefolder:PATH`` and for the named datasets' ImageFolder forms (``cifar10.tar.gz``,
``imagenet/``…). A class folder without images and a one-class set are refused, not skipped.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .dataset_cache import Pool, cached
from .decode import TooLargeForMemory, decode_sized
from .errors import HbaError, one_line

log = logging.getLogger("hba.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("train", "extra", "val", "test")
CLASS_SUBSET_SEED = 0    # fixed: reduced ImageNet's classes never depend on --split-seed


@dataclass
class Record:
    split: str
    cls: str
    name: str
    payload: bytes | Path
    where: str = ""      # names the file in messages: its path, or "ARCHIVE member MEMBER"


@dataclass
class FileList:
    """A dataset too large for memory: image paths and labels, streamed by workers."""

    classes: list[str]
    train_paths: list[str]
    train_labels: np.ndarray
    test_paths: list[str]
    test_labels: np.ndarray


@dataclass
class StreamedFolder:
    """An imagefolder tree too large for memory: its files, streamed at side×side (shorter side
    resized, centre crop: the images the in-memory path would have decoded)."""

    files: FileList
    side: int


# --------------------------------------------------------------------------- where to look

def folder_candidates(root: Path, stems: Sequence[str], archives: bool = True) -> list[Path]:
    """The trees (and archives) a named dataset may be found as under ``root``, in order."""
    names = [n for stem in stems for n in (stem, f"{stem}-jpeg", f"{stem}-png", f"{stem}-images")]
    suffixes = ("", ".tar", ".tar.gz", ".tgz", ".zip") if archives else ("",)
    return [root / f"{n}{s}" for n in names for s in suffixes]


def looked_for(stems: Sequence[str], archives: bool = True) -> str:
    """``folder_candidates`` in words, for a not-found message."""
    forms = "/, .tar, .tar.gz, .tgz, .zip" if archives else "/"
    return (f"an ImageFolder tree{' or archive' if archives else ''} "
            f"{'|'.join(stems)}[-jpeg|-png|-images][{forms}] with train/ and test/")


def imagefolder_pool(path_text: str, data_root: Path, cache: Path,
                     image_size: int | None = None) -> Pool | StreamedFolder:
    """``imagefolder:PATH``: PATH as given, else under the data directory; decoded and cached,
    or, for a tree whose decoded images would overfill memory, its file list (streamed)."""
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
    try:
        return folder_pool(path, cache, "imagefolder", side=image_size)
    except TooLargeForMemory as exc:
        if not path.is_dir():   # workers read files; an archive would be read whole by each
            raise HbaError(f"{exc}, or extract {path.name} into a folder, which hba streams "
                           "from its files") from None
        return StreamedFolder(tree_file_list(path), exc.side)



# --------------------------------------------------------------------------- records

def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _empty_class_folder(folder: str) -> HbaError:
    # Refused, not skipped: a class without images would silently drop out of the class list,
    # shifting the label of every class after it and the number of outputs of the net.
    return HbaError(f"empty class folder {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                    "directly in it; add images or remove the folder (a class without images "
                    "would shift the label of every class after it)")


def _tree_records(root: Path) -> list[Record]:
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
            raise HbaError(f"cannot list folder {split_dir}: {exc.strerror or one_line(exc)}") \
                from None
        for class_dir in class_dirs:
            try:
                entries = sorted(os.scandir(class_dir), key=lambda e: e.name)
            except OSError as exc:
                raise HbaError(f"cannot list folder {class_dir}: "
                               f"{exc.strerror or one_line(exc)}") from None
            found = len(records)
            for entry in entries:
                if entry.is_file() and _is_image(entry.name):
                    records.append(Record(split, class_dir.name, entry.name, Path(entry.path),
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


def _archive_records(path: Path) -> list[Record]:
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
            records.append(Record(parts[-3], parts[-2], parts[-1], read(),
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
        raise HbaError(f"cannot read archive {path}: {one_line(exc)}") from None
    for parts in sorted(set(class_dirs) - filled):
        if parts[:-2] in prefixes:      # folders beside the data (another prefix) don't count
            raise _empty_class_folder(f"{path} member {class_dirs[parts].rstrip('/')}")
    return sorted(records, key=lambda r: (r.split, r.cls, r.name))


def _folder_records(path: Path) -> list[Record]:
    if path.is_dir():
        return _tree_records(path)
    try:
        is_archive = path.is_file() and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path))
    except OSError as exc:
        raise HbaError(f"cannot read archive {path}: {exc.strerror or one_line(exc)}") from None
    if is_archive:
        return _archive_records(path)
    raise HbaError(f"{path} is neither a directory nor a .tar/.tar.gz/.zip archive")


# --------------------------------------------------------------------------- classes and splits

def _pick_test_split(records: Sequence[Record], where: Path) -> str:
    splits = {r.split for r in records}
    if "train" not in splits:
        raise HbaError(f"no images in {where}/train/<class>/ (ImageFolder layout: "
                       "train/<class>/*.jpg and test/<class>/*.jpg)")
    for split in ("test", "val"):
        if split in splits:
            return split
    raise HbaError(f"no test/<class>/ (or val/<class>/) images in {where}")


def _train_classes(records: Sequence[Record], test_split: str, where: Path) -> list[str]:
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


def _label_records(records: Sequence[Record], classes: list[str],
                   split: str) -> tuple[list[Record], np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    chosen = [r for r in records if r.split == split and r.cls in index]
    return chosen, np.array([index[r.cls] for r in chosen], np.int64)


def _subset_classes(classes: list[str], count: int, where: Path) -> list[str]:
    if len(classes) < count:
        raise HbaError(f"{where} has {len(classes)} classes; reduced ImageNet needs {count}")
    chosen = np.random.default_rng(CLASS_SUBSET_SEED).choice(len(classes), count, replace=False)
    return [classes[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------- pools and file lists

def folder_pool(path: Path, cache: Path, key: str, train_folders: Sequence[str] = ("train",),
                side: int | None = None, class_subset: int | None = None) -> Pool:
    """An ImageFolder tree or archive, decoded once and cached under ``key``.

    ``train_folders``: the splits that form the training pool (SVHN: train and extra);
    ``side``: resize every image to side×side (None: decode_images' rule); ``class_subset``:
    keep this many classes, chosen by a fixed seed.
    """
    # An archive is one file, keyed as such; a tree is keyed by its listing (cheap to take).
    if path.is_dir():
        records = _tree_records(path)
        if not records:
            raise HbaError(f"no images found under {path} (ImageFolder layout: "
                           "train/<class>/*.jpg and test/<class>/*.jpg)")
        key_files: Sequence[Path] = [r.payload for r in records]
    else:
        key_files = [path]
    params = {"side": side, "classes": class_subset, "train": list(train_folders)}
    if side is None:     # the rule for None: any shared square size kept (was: ≤ 64)
        params["sizing"] = "square-native"
    return cached(cache, key, key_files, params,
                  lambda: _decode_folder(path, train_folders, side, class_subset))


def _decode_folder(path: Path, train_folders: Sequence[str], side: int | None,
                   class_subset: int | None) -> Pool:
    records = _folder_records(path)
    test_split = _pick_test_split(records, path)
    classes = _train_classes(records, test_split, path)
    if class_subset is not None:
        classes = _subset_classes(classes, class_subset, path)
    train, train_labels = [], []
    for split in train_folders:
        chosen, labels = _label_records(records, classes, split)
        train += chosen
        train_labels.append(labels)
    test, test_labels = _label_records(records, classes, test_split)
    log.info("decoding %d images of %s (once; cached afterwards)", len(train) + len(test), path)
    # Train and test are decoded together so that they end up the same size.
    images, note = decode_sized([r.payload for r in train + test], side, None,
                                [r.where for r in train + test])
    return Pool(classes, images[:len(train)], np.concatenate(train_labels),
                images[len(train):], test_labels, note)


def tree_file_list(root: Path) -> FileList:
    """The image paths and labels of a directory tree, never decoded (streamed later)."""
    records = _tree_records(root)
    test_split = _pick_test_split(records, root)
    classes = _train_classes(records, test_split, root)
    train, train_labels = _label_records(records, classes, "train")
    test, test_labels = _label_records(records, classes, test_split)
    return FileList(classes, [str(r.payload) for r in train], train_labels,
                    [str(r.payload) for r in test], test_labels)
