"""The decoded-image cache: a dataset's decoded pool, stored once, read back while its files
are unchanged.

Entries are ``<cache>/decoded/<key>-<digest>.npz``; the digest covers the cache format, the
reading parameters and every source file's path, size and modification time, so a changed,
added or removed file makes a new entry and only the first load decodes. Writes are atomic; an
unreadable entry is ignored (read again), and one that cannot be written only costs time later.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import one_line
from .files import atomic_write_bytes

log = logging.getLogger("hba.data")

CACHE_FORMAT = 2                   # 2: 16-bit images scaled (v >> 8), no longer wrapped modulo 256


@dataclass
class Pool:
    """A dataset before splitting: the training pool and the untouched test set (numpy),
    what the readers return and the cache stores."""

    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    note: str = ""      # how the images were sized (imagefolder: printed on every load)


def _cache_path(cache: Path, key: str, files: Sequence[Path], params: dict) -> Path:
    """<cache>/decoded/<key>-<digest>.npz; the digest covers every source file's path, size
    and mtime (hashed incrementally: a tree can list a million files)."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "source": key, "params": params},
                                       sort_keys=True).encode())
    for path in files:
        st = path.stat()
        digest.update(f"\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return cache / "decoded" / f"{key}-{digest.hexdigest()[:20]}.npz"


def cached(cache: Path, key: str, files: Sequence[Path], params: dict,
           read: Callable[[], Pool]) -> Pool:
    """The decoded pool from the cache when its source files are unchanged, else read + store."""
    path = _cache_path(cache, key, files, params)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return Pool([str(c) for c in z["classes"]], z["train_images"], z["train_labels"],
                            z["test_images"], z["test_labels"],
                            str(z["note"]) if "note" in z.files else "")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable cache %s (%s)", path, one_line(exc))
    pool = read()
    store(cache, key, files, params, pool)
    return pool


def store(cache: Path, key: str, files: Sequence[Path], params: dict, pool: Pool) -> None:
    """Write the cache atomically; a cache that cannot be written only costs time later."""
    path = _cache_path(cache, key, files, params)
    buffer = io.BytesIO()
    np.savez(buffer, classes=np.array(pool.classes, dtype=str), train_images=pool.train_images,
             train_labels=pool.train_labels, test_images=pool.test_images,
             test_labels=pool.test_labels, note=np.array(pool.note))
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as exc:
        warnings.warn(f"could not write the decoded-image cache {path}: {one_line(exc)}",
                      stacklevel=3)
