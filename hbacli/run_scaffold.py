"""What ``hba search`` and ``hba evaluate`` do alike as their epochs end: one scaffold.

- ``CheckpointWriter``: the epoch's files are serialised on the main thread (so the next step
  may change the model at once) and written on one background thread, each atomically and
  fsync'd, so a fast GPU does not wait on the disk. Submitting waits for the previous batch;
  ``wait()`` and ``close()`` re-raise a failed write on the main thread.
- ``EpochLog``: the per-epoch CSV, one dataclass record a row, rewritten whole each epoch.
- ``epoch_line``/``format_clock``: the one line a run prints per epoch, and its durations.
- ``RunProgress``: the rich bar over the run's epochs (a search adds one over the epoch's
  rounds) on a terminal; transient, so the per-epoch lines are what stays.
- ``RunOutput``: the three together, rank 0 alone writing and printing under torchrun.
- ``RunContext``/``run_context``: where one session runs (``--out``, ``--run-dir``,
  ``--resume``, this process's rank and device, its start), torchrun's group joined and left.

The other shared pieces live beside this one: ``runs.RunFiles`` (checks before work, the lock,
cleanup) and ``checkpoint.CheckpointFormat`` (the envelope and the resume check).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .distributed import Ranks, start_processes
from .files import atomic_write_bytes, atomic_write_json, dataclass_csv_text

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"   # the resolved config, written at every (re)start


@dataclass(frozen=True)
class RunContext:
    """Where and how one session of a long command runs."""

    out: Path
    run_dir: Path
    resume: bool
    command_line: str | None   # recorded in the results' provenance
    ranks: Ranks
    device: torch.device
    started: float             # time.perf_counter() when the command started


@contextlib.contextmanager
def run_context(device: str, out: Path, run_dir: Path, resume: bool,
                command_line: str | None) -> Iterator[RunContext]:
    """The session's context; under torchrun this process joins the group (and leaves the
    group it created at the end)."""
    started = time.perf_counter()
    ranks, resolved, created_group = start_processes(device)
    try:
        yield RunContext(Path(out), Path(run_dir), resume, command_line, ranks, resolved, started)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_json(run_dir / CONFIG_NAME, config)


class CheckpointWriter:
    """Writes batches of files in order on one thread; at most one batch is pending."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hba-writer")
        self._pending: Future | None = None

    def submit(self, files: dict[Path, bytes]) -> None:
        """Write ``files`` (path → contents, in order: the checkpoint last) in the background."""
        self.wait()
        if files:
            self._pending = self._pool.submit(
                lambda: [atomic_write_bytes(path, data) for path, data in files.items()])

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a failed write here, on the main thread

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


class EpochLog:
    """A run's per-epoch CSV: a header of ``record_type``'s fields, a row per record."""

    def __init__(self, path: Path, record_type: type):
        self.path, self.record_type = Path(path), record_type

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.record_type))

    def file(self, records: list[Any]) -> dict[Path, bytes]:
        """The log holding ``records``, for ``CheckpointWriter.submit``."""
        return {self.path: dataclass_csv_text(records, self.record_type).encode("utf-8")}


def format_clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour; ``-`` when not finite (no estimate yet)."""
    if not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def epoch_line(epoch: int, epochs: int, *parts: str, lead: str = "") -> str:
    """``[lead  ]epoch e/E  part  part …``: ``e`` right-aligned, so a run's lines line up."""
    head = f"epoch {epoch:>{len(str(epochs))}}/{epochs}"
    return "  ".join([*([lead] if lead else []), head, *parts])


def images_per_second(value: float) -> str:
    return f"{value:,.0f} img/s"


class RunProgress:
    """A bar over the run's epochs (``total``, ``done`` of them finished before), and with
    ``steps`` a second one over each epoch's steps; only on a terminal (without one, CI or a
    pipe, the per-epoch lines are the whole report). Prints nothing when disabled."""

    def __init__(self, enabled: bool, what: str, total: int, done: int = 0,
                 steps: int | None = None):
        self.enabled = enabled
        self.console = Console(highlight=False)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not (enabled and self.console.is_terminal),
            transient=True)
        self._overall = self._progress.add_task(what, total=total, completed=done)
        self._steps = None if steps is None else self._progress.add_task("epoch", total=steps)

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start_epoch(self, description: str) -> None:
        if self._steps is not None:
            self._progress.reset(self._steps, description=description)

    def advance_step(self) -> None:
        if self._steps is not None:
            self._progress.advance(self._steps)

    def advance(self, epochs: int = 1) -> None:
        self._progress.advance(self._overall, epochs)

    def print(self, renderable: Any) -> None:
        if self.enabled:
            self.console.print(renderable, soft_wrap=True)


class RunOutput:
    """What a run writes and shows as each epoch ends: the files (rank 0, in the background),
    the bar and the epoch's line, then the caller's ``on_epoch_end`` (which sees the epoch's
    files on disk: tests interrupt a run there). A context manager: the bar runs inside it,
    and leaving it waits for the last write."""

    def __init__(self, progress: RunProgress, is_main: bool,
                 on_epoch_end: Callable[[Any], None] | None = None):
        self.progress, self.is_main, self.on_epoch_end = progress, is_main, on_epoch_end
        self.writer = CheckpointWriter()

    def __enter__(self) -> RunOutput:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.writer.close()
        finally:
            self.progress.__exit__(*exc)

    def print(self, renderable: Any) -> None:
        self.progress.print(renderable)

    def write(self, files: dict[Path, bytes]) -> None:
        """Write ``files`` in the background (rank 0; other ranks pass none)."""
        if self.is_main:
            self.writer.submit(files)

    def end_epoch(self, record: Any, line: str, files: dict[Path, bytes]) -> None:
        self.write(files)
        self.progress.advance()
        self.print(line)
        if self.on_epoch_end is not None:
            self.writer.wait()
            self.on_epoch_end(record)

    def flush(self) -> None:
        """Wait until every submitted file is on disk."""
        self.writer.wait()
