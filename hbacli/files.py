"""Where hba keeps files, and atomic writes: a crash or Ctrl-C never leaves a half-written
result."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """$HBA_CACHE, else $XDG_CACHE_HOME/hba, else ~/.cache/hba (decoded datasets, kernels)."""
    if os.environ.get("HBA_CACHE"):
        return Path(os.environ["HBA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hba"


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_read_umask()


def outermost_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (None: path exists):
    what ``path.mkdir(parents=True)`` would create, so what a failed command must remove."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_created(folder: Path | None) -> None:
    """Remove a folder this command created (``outermost_missing`` before it did), contents
    and all; None does nothing."""
    if folder is not None and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600:
    through ``os.fchmod`` where it exists, else by name (``os.chmod``: Windows has no
    ``os.fchmod`` before Python 3.13, and its chmod only sets the read-only flag, left off).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:   # owns fd from here: closed whatever fails below
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _FILE_MODE)
            else:
                os.chmod(tmp, _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:   # name the file the user asked for, not the temporary one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """How hba writes a JSON file: indented, no NaN or infinity, a final newline."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def dataclass_csv_text(records: list[Any], record_type: type) -> str:
    """CSV of dataclass rows: a header of the field names, floats to 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(record_type)],
                            lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v
                         for k, v in asdict(record).items()})
    return buffer.getvalue()
