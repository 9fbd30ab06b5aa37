"""The ops of ``ops.py`` compiled from C (``ops_native.c``) for the CPU: both augmentation stages
of a whole batch in one call.

Why: on a CPU the torch kernels cost about a thousand small operator calls per batch (each op's
parameters, each family's kernel, each stage), a fixed overhead far above the arithmetic itself
at CIFAR sizes. The C twin does the same arithmetic image by image in one call, on one thread,
with the GIL released (DataLoader threads overlap).

What each op is comes from ``space.OPS``, not from the C file: ``library()`` matches the ops
and kernel families by name against the C file's (``hba_op_name``, ``hba_family_name``) and
refuses a library that lacks one, and every call passes the table (``OpRow``, one per op in
``space.OPS`` order: its C function, its family kernel, how its magnitude becomes its argument).

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from .files import cache_dir
from .space import FILL, KERNEL_FAMILY_NAMES, OPS, ROUNDINGS

SOURCE = Path(__file__).with_name("ops_native.c")
INSTALLED = "_ops_native_lib"  # the library setup.py builds into the package, if it could
# IEEE arithmetic as torch does it: no fast-math, no fused multiply-adds
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off")


class OpRow(ctypes.Structure):
    """One op of ``space.OPS`` as the C entry point takes it (``OpRow`` in ``ops_native.c``)."""

    _fields_ = [("function", ctypes.c_int32), ("family", ctypes.c_int32),
                ("rounded", ctypes.c_int32), ("unused", ctypes.c_int32),
                ("scale", ctypes.c_double)]


ROUNDED = {None: 0, "half-even": 1}  # space.ROUNDINGS → the C flag (nearbyint: ties to even)
assert set(ROUNDED) == set(ROUNDINGS)


def _names(name_at: Callable[[int], bytes | None]) -> list[str]:
    """A C name table, read until its NULL."""
    names = []
    while (name := name_at(len(names))) is not None:
        names.append(name.decode())
    return names


def op_rows(functions: list[str], families: list[str]) -> list[tuple[int, int]]:
    """Per op of ``space.OPS``: (its C function's index, its family kernel's index), found by
    name in the C library's tables ``functions`` and ``families``. RuntimeError when the two
    sides do not list the same ops, or the same kernel families, once each."""
    names = [op.name for op in OPS]
    if sorted(functions) != sorted(names):
        raise RuntimeError(f"ops_native.c's op functions {functions} differ from space.OPS's "
                           f"ops {names}")
    if sorted(families) != sorted(KERNEL_FAMILY_NAMES):
        raise RuntimeError(f"ops_native.c's family kernels {families} differ from space's "
                           f"{list(KERNEL_FAMILY_NAMES)}")
    return [(functions.index(op.name), families.index(op.family)) for op in OPS]


def op_table(lib: ctypes.CDLL, height: int, width: int) -> ctypes.Array:
    """The table of ``space.OPS`` that ``hba_augment`` takes, for images of this size (the
    scales depend on it); made once per size."""
    key = (height, width)
    if key not in lib.op_tables:
        lib.op_tables[key] = (OpRow * len(OPS))(*[
            OpRow(function, family, ROUNDED[op.rounding], 0, op.scale_factor(height, width))
            for op, (function, family) in zip(OPS, lib.op_rows, strict=True)])
    return lib.op_tables[key]


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
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), compiler.encode(),
                                     " ".join(FLAGS).encode(), platform.machine().encode()]))
    key = key.hexdigest()[:16]
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


@cache
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
    for table in (lib.hba_op_name, lib.hba_family_name):
        table.restype, table.argtypes = ctypes.c_char_p, [ctypes.c_int]
    lib.op_rows = op_rows(_names(lib.hba_op_name), _names(lib.hba_family_name))
    lib.op_tables = {}  # (height, width) → the OpRow table passed to every call
    lib.hba_augment.restype = ctypes.c_int
    lib.hba_augment.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                                ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(OpRow),
                                ctypes.c_int64]
    return lib


def augment_stages(images: Tensor, ops: Tensor, magnitudes: Tensor, centres: Tensor) -> Tensor:
    """Both stages on the CPU: images uint8 N×C×H×W; ops (N, 2) indices into ``space.OPS``
    (−1: none); magnitudes (N, 2) physical, signed; centres (N, 2, 2) the (row, column) of
    positioned ops per stage. Returns new images; ``images`` is left unchanged. Needs
    ``library()``."""
    lib = library()
    if lib is None:
        raise RuntimeError("the C augmentation kernels are not available")
    if images.device.type != "cpu" or images.dtype != torch.uint8:
        raise ValueError(f"the C kernels take uint8 CPU images, got {images.dtype} on "
                         f"{images.device}")
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
    table = op_table(lib, h, w)
    status = lib.hba_augment(images.data_ptr(), out.data_ptr(), n, c, h, w, ops.data_ptr(),
                             magnitudes.data_ptr(), centres.data_ptr(), FILL, table, len(table))
    if status == -2:
        raise ValueError("the op table names a function or family kernel the C library lacks")
    if status == -3:
        raise ValueError(f"op indices must be below {len(table)} (space.OPS), or -1 for none")
    if status != 0:
        raise MemoryError("the C augmentation kernels could not allocate one image")
    return out
