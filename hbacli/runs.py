"""The one guard around a long command's files: its run directory and its ``--out`` file.

``hba search`` and ``hba evaluate`` both go through ``RunFiles``:

- ``check()``, before any work and without creating anything: ``--out`` can be written (not a
  folder, a name the file system takes, a folder that exists or can be made, and not one of the
  run's own files such as its checkpoint); ``--run-dir`` is a folder or can become one; with
  ``--resume`` there is a checkpoint to resume, without it there is none to overwrite.
- ``acquire()``: creates the run directory and locks it. The lock is a file, ``RUN/.lock``,
  created exclusively and holding ``PID HOST``: a second command on the same folder is refused
  with one line. A lock whose process is gone (same host) is taken over; on another host, or on
  Windows (where probing a process would kill it), the user deletes a stale lock by hand.
- ``release(failed)``: drops the lock; after a failed start (no checkpoint written yet) removes
  the folders this command created for the run directory (``runs/`` too, if it made it), so no
  empty folder is left behind.
- ``working(ranks)``: acquire and release around a block (rank 0 alone under torchrun), with
  every ``OSError`` turned into one ``HbaError`` line naming the file.

The lock protects a run directory against a second hba command using it at the same time; it
does not protect ``--out`` (two runs may name the same output file: the last one wins, whole).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import HbaError
from .files import outermost_missing, remove_created

if TYPE_CHECKING:   # distributed imports torch; the guard itself does not need it
    from .distributed import Ranks

LOCK_NAME = ".lock"
NAME_MAX_FALLBACK = 255


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):   # Windows has no pathconf
        return NAME_MAX_FALLBACK


def check_names(path: Path, what: str) -> None:
    """Every component of ``path`` is a name the file system takes: checked from the root down,
    before anything asks the system about the path (which fails on an over-long name)."""
    path = Path(os.path.abspath(path))
    parent = Path(path.anchor)
    for part in path.parts[1:]:
        size = len(os.fsencode(part))
        limit = _name_max(parent)
        if size > limit:
            raise HbaError(f"the {what} {str(path)[:60]}… has a name of {size} bytes; this file "
                           f"system takes at most {limit}")
        parent = parent / part
        if not parent.is_dir():
            return   # the rest does not exist yet: the limit of the last folder applies
    return


def check_creatable(path: Path, what: str) -> None:
    """``path`` (a folder to be) could be created and written, checked without creating it."""
    check_names(path, what)
    existing = _existing_ancestor(path)
    if not existing.is_dir():
        raise HbaError(f"the {what} {path} is a file, not a folder" if existing == path else
                       f"cannot create the {what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise HbaError(f"the {what} {path} is not writable ({existing})")


def oserror_line(exc: OSError) -> str:
    """An OSError as one line that names the file."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"cannot write or read {where}{exc.strerror or exc}"


@contextlib.contextmanager
def file_errors_explained() -> Iterator[None]:
    """A failed read or write (disk full, permissions, a vanished folder) as one HbaError."""
    try:
        yield
    except OSError as exc:
        raise HbaError(oserror_line(exc)) from None


class RunFiles:
    """The run directory and the output file of one command (see the module docstring).

    ``checkpoints``: glob, relative to the run directory, of the files that make a run
    resumable (``checkpoint.pt``; ``seed-*/checkpoint.pt``). ``reserved``: globs of the run's
    own files, which ``--out`` must not name. ``what``: "search" or "evaluation".
    """

    def __init__(self, run_dir: Path, out: Path, *, checkpoints: str, reserved: tuple[str, ...],
                 resume: bool, what: str):
        self.run_dir, self.out = Path(run_dir), Path(out)
        self.checkpoints, self.reserved = checkpoints, reserved + (LOCK_NAME,)
        self.resume, self.what = resume, what
        self._created: Path | None = None   # the outermost folder acquire() made
        self._locked = False

    @property
    def lock_path(self) -> Path:
        return self.run_dir / LOCK_NAME

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.run_dir.glob(self.checkpoints)) if self.run_dir.is_dir() else []

    # -- before any work ------------------------------------------------------------------------

    def check(self) -> None:
        self._check_out()
        self._check_run_dir()

    def _check_out(self) -> None:
        out = self.out
        check_names(out, "--out file")
        if out.is_dir():
            raise HbaError(f"--out {out} is a folder; give a file name, e.g. {out / 'out.json'}")
        check_creatable(out.parent, "folder of --out")
        if out.exists() and not os.access(out, os.W_OK):
            raise HbaError(f"--out {out} exists and is not writable")
        try:
            inside = Path(os.path.relpath(out.resolve(), self.run_dir.resolve())).as_posix()
        except ValueError:   # another drive (Windows): not inside the run directory
            return
        if any(fnmatch.fnmatchcase(inside, pattern) for pattern in self.reserved):
            raise HbaError(f"--out {out} would overwrite the run's own file {inside} in "
                           f"{self.run_dir}; choose another name")

    def _check_run_dir(self) -> None:
        run_dir = self.run_dir
        check_names(run_dir, "run directory")
        if run_dir.exists() and not run_dir.is_dir():
            raise HbaError(f"--run-dir {run_dir} is a file, not a folder")
        check_creatable(run_dir, "run directory")
        for path in run_dir.glob(self.checkpoints) if run_dir.is_dir() else ():
            if not path.is_file():
                raise HbaError(f"{path} is not a file (a checkpoint should be); move it away or "
                               "choose another --run-dir")
        found = self.checkpoint_files()
        if self.resume and not found:
            raise HbaError(f"nothing to resume: {run_dir} holds no {self.what} checkpoint "
                           f"({self.checkpoints})")
        if not self.resume and found:
            raise HbaError(f"{run_dir} already holds a {self.what} ({len(found)} checkpoint"
                           f"{'s' * (len(found) != 1)}); pass --resume to continue it or choose "
                           "another --run-dir")

    # -- while working -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Create the run directory (remembering whether this command did) and lock it."""
        self._created = outermost_missing(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HbaError(f"cannot create the run directory {self.run_dir}: "
                           f"{exc.strerror or exc}") from None
        self._lock()

    def _lock(self, retry: bool = True) -> None:
        me = f"{os.getpid()} {socket.gethostname()}\n"
        try:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = self._lock_owner()
            if retry and owner is not None and self._is_stale(*owner):
                self.lock_path.unlink(missing_ok=True)
                return self._lock(retry=False)
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise HbaError(f"{self.run_dir} is in use by {who} (lock {self.lock_path}); wait "
                           "for it, or choose another --run-dir; if no such process runs, "
                           "delete the lock file") from None
        except OSError as exc:
            raise HbaError(f"cannot lock the run directory {self.run_dir}: "
                           f"{exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        self._locked = True

    def _lock_owner(self) -> tuple[int, str] | None:
        try:
            pid, host = self.lock_path.read_text().split()
            return int(pid), host
        except (OSError, ValueError):
            return None

    @staticmethod
    def _is_stale(pid: int, host: str) -> bool:
        if host != socket.gethostname() or os.name == "nt":
            return False   # cannot tell; on Windows os.kill(pid, 0) would kill the process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # alive, another user's
            return False
        return False

    def release(self, failed: bool) -> None:
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False
        if failed and not self.checkpoint_files():
            remove_created(self._created)   # only what this command made (runs/ included)

    @contextlib.contextmanager
    def working(self, ranks: Ranks | None = None) -> Iterator[RunFiles]:
        """acquire, run the block, release, with OSErrors as one line naming the file; after
        ``check()`` and whatever preparation may still fail without leaving a trace. Under
        torchrun rank 0 alone touches the files; the others wait for its lock."""
        if ranks is None:
            self.acquire()
        else:
            ranks.from_main(self.acquire)
        failed = True
        try:
            with file_errors_explained():
                yield self
            failed = False
        finally:
            if ranks is None or ranks.is_main:
                self.release(failed)
