"""The ops of ``ops.py`` compiled from C (``ops_native.c``) for the CPU: both augmentation stages
of a whole batch in one call.

Why: on a CPU the torch kernels cost about a thousand small operator calls per batch (each op's
parameters, each family's kernel, each stage), ~3 ms whatever the batch size, while the
arithmetic itself is a few microseconds per image. The C twin does the same arithmetic image
by image in one call, on one thread, with the GIL released (DataLoader threads overlap).

Where the kernels come from, in order (``library()``):

1. the library built when the package was installed: ``setup.py`` compiles ``ops_native.c``
   into ``hbacli/_ops_native_lib<extension suffix>`` (in the wheel; by ``pip install .`` and
   ``pip install -e .`` where a compiler exists). Used when it was built from this very
   ``ops_native.c`` (its ``hba_source_key``), so an edit is never masked by a stale build;
2. otherwise, built on first use with the system's C compiler (``$CC``, else cc, gcc or clang)
   into ``<cache>/kernels`` (``files.cache_dir``), named by a hash of the source, compiler and
   flags, under a lock (parallel DataLoader workers on a cold cache compile once) and written
   atomically, and loaded with ctypes;
3. otherwise (no library and no compiler), or with ``HBA_NATIVE=0``, ``library()`` is None
   (with one warning) and the policy uses the torch kernels, which give the same images
   (``tests/test_ops_native.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from .files import cache_dir
from .space import FILL, OP_NAMES

SOURCE = Path(__file__).with_name("ops_native.c")
INSTALLED = "_ops_native_lib"  # the library setup.py builds into the package, if it could
# IEEE arithmetic as torch does it: no fast-math, no fused multiply-adds
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off")


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise OSError("no C compiler found (install one or set CC)")


def _installed() -> Path | None:
    """The library built at install time (``setup.py``), if there is one."""
    suffixes = dict.fromkeys([*importlib.machinery.EXTENSION_SUFFIXES, ".abi3.so", ".pyd"])
    for suffix in suffixes:
        path = SOURCE.with_name(INSTALLED + suffix)
        if path.is_file():
            return path
    return None


def _source_key() -> str:
    """What an installed library's ``hba_source_key()`` returns when built from this source."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Holds an exclusive lock on the file ``lock`` where the OS offers flock (not Windows, where
    parallel builds are redundant but still safe: each writes its own file, then renames)."""
    try:
        import fcntl
        handle = open(lock, "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks
            pass
        yield  # closing the file releases the lock


def _build() -> Path:
    """The library compiled on first use, from the cache or built now."""
    compiler = _compiler()
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), compiler.encode(), " ".join(FLAGS).encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"ops_native-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / ".build.lock"):
        if target.is_file():  # built by another process while this one waited
            return target
        fd, partial = tempfile.mkstemp(prefix=".ops_native-", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            built = subprocess.run([compiler, *FLAGS, "-o", partial, str(SOURCE), "-lm"],
                                   capture_output=True, text=True, timeout=300)
            if built.returncode != 0:
                first = (built.stderr.strip().splitlines() or ["no message"])[0]
                raise OSError(f"{Path(compiler).name} failed: {first}")
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    return target


def _load_installed() -> ctypes.CDLL | None:
    """The installed library, or None where there is none, it does not load, or it was built
    from another ``ops_native.c`` (then the first-use build takes over, silently)."""
    path = _installed()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        lib.hba_source_key.restype = ctypes.c_char_p
        if SOURCE.is_file() and lib.hba_source_key().decode() != _source_key():
            return None
    except (OSError, AttributeError):
        return None
    lib.path = path
    return lib


@lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The loaded kernels (``.path``: the file), or None (``HBA_NATIVE=0``, or neither installed
    nor buildable here)."""
    if os.environ.get("HBA_NATIVE", "1") == "0":
        return None
    lib = _load_installed()
    if lib is None:
        try:
            path = _build()
            lib = ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as error:
            warnings.warn(f"hba: C augmentation kernels unavailable ({error}); CPU augmentation "
                          "falls back to the slower torch kernels (same images)", stacklevel=2)
            return None
        lib.path = path
    lib.hba_op_names.restype = ctypes.c_char_p
    if lib.hba_op_names().decode().split(",") != list(OP_NAMES):
        raise RuntimeError("ops_native.c's op codes differ from space.OPS")
    lib.hba_augment.restype = ctypes.c_int
    lib.hba_augment.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                                ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_int]
    return lib


def augment_stages(images: Tensor, ops: Tensor, magnitudes: Tensor, centres: Tensor) -> Tensor:
    """Both stages on the CPU: images uint8 N×C×H×W; ops (N, 2) indices into ``space.OPS``
    (−1: none); magnitudes (N, 2) physical, signed; centres (N, 2, 2) Cutout's (row, column)
    per stage. Returns new images; ``images`` is left unchanged. Needs ``library()``."""
    lib = library()
    if lib is None:
        raise RuntimeError("the C augmentation kernels are not available")
    if images.device.type != "cpu" or images.dtype != torch.uint8:
        raise ValueError(f"the C kernels take uint8 CPU images, got {images.dtype} on {images.device}")
    images = images.contiguous()
    ops = ops.to(torch.int64).contiguous()
    magnitudes = magnitudes.to(torch.float32).contiguous()
    centres = centres.to(torch.int64).contiguous()
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"the C kernels take 1 or 3 channels, got {c}")
    if ops.shape != (n, 2) or magnitudes.shape != (n, 2) or centres.shape != (n, 2, 2):
        raise ValueError("ops and magnitudes must be (N, 2) and centres (N, 2, 2)")
    out = torch.empty_like(images)
    if lib.hba_augment(images.data_ptr(), out.data_ptr(), n, c, h, w, ops.data_ptr(),
                       magnitudes.data_ptr(), centres.data_ptr(), FILL) != 0:
        raise MemoryError("the C augmentation kernels could not allocate one image")
    return out
