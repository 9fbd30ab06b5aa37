"""`hba search`: run the search engine (``search_engine.py``) over a run directory, resumably.

Run directory: ``config.json`` (the resolved config), and after every epoch ``schedule.json``
(the schedule so far), ``log.csv`` (one row per epoch) and ``checkpoint.pt`` (the engine's
state, the schedule's entries and the log, all a resume needs); at the end ``network.pt`` (the
state dict of ``--model`` at the final λ). The files go through the scaffold shared with
``hba evaluate`` (``runs.RunFiles``, ``run_scaffold``): checked before any work, locked while
the search runs, written in the background (checkpoint last).

Schedule: entry e is the λ in effect during epoch e, recorded at its start; entry 0 is the
starting policy (the default's, or ``init``'s: a warm start from a schedule's epoch).

Resume: the checkpoint must have been made with the same settings (``RESUME_IGNORED_FIELDS``
may change), on the same kind of device, by as many processes. The precision is resolved
first (``auto`` becomes what the device runs) and recorded in config.json, the checkpoint and
the schedule's provenance (``config.precision``), so a resume on another kind of GPU must match.

Under torchrun rank 0 alone checks, locks and writes the run directory and prints; it reads the
checkpoint and passes it on, every rank loading it. The checkpoint holds every rank's random
state, so a resume needs the same number of processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import space
from .catalogue import check_model
from .checkpoint import SETTINGS_WITHOUT_EFFECT, CheckpointFormat, network_bytes
from .datasets import ImageSplits, load_dataset
from .distributed import shard_size
from .errors import HbaError
from .files import atomic_write_bytes
from .hyper import check_strategy
from .nets import build_model
from .plots import top_ops
from .presets import SearchConfig
from .run_scaffold import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    EpochLog,
    RunContext,
    RunOutput,
    RunProgress,
    epoch_line,
    format_clock,
    images_per_second,
    run_context,
    write_config,
)
from .runs import RunFiles
from .runtime import (
    COMPILING_NOTE,
    device_description,
    package_versions,
    resolve_precision,
    seed_everything,
)
from .schedule import Provenance, Schedule, save_schedule, schedule_json_text
from .search_engine import EpochMetrics, SearchEngine, starting_lambda
from .space_kernels import check_dropout_sites
from .spaces import get_space

CHECKPOINT_FORMAT = "hba-search-checkpoint"
CHECKPOINT_VERSION = 3   # 2: λ0 saved; schedule entry e = λ at the start of epoch e;
#                          3: any search space (values in λ order), the perturbation scale
NETWORK_NAME = "network.pt"   # the plain network at the final λ (Algorithm 1's θ̂φ(λ))
SCHEDULE_NAME = "schedule.json"
LOG_NAME = "log.csv"
RUN_FILES = (CHECKPOINT_NAME, SCHEDULE_NAME, CONFIG_NAME, LOG_NAME, NETWORK_NAME)
TOP_OPS_SHOWN = 3
RESUME_IGNORED_FIELDS = SETTINGS_WITHOUT_EFFECT
CHECKPOINT = CheckpointFormat(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search",
                              RESUME_IGNORED_FIELDS)


@dataclass
class EpochRecord:
    """One line of the log (log.csv and the progress line)."""

    epoch: int                 # 1-based
    train_loss: float
    val_loss: float            # NaN when the run has no λ steps (val_steps = 0)
    val_accuracy: float
    epoch_seconds: float       # wall time of this epoch's steps
    images_per_second: float   # training images per second of wall time in this epoch
    lr: float                  # α at the end of the epoch
    elapsed_seconds: float     # since the search started, over all resumed sessions
    eta_seconds: float
    top_ops: str               # e.g. "Rotate#1:0.091 Cutout#0:0.082 Invert#1:0.071"; for a
    #                            space without the policy, the scalars that moved most

    def line(self, epochs: int) -> str:
        val = ("val -" if math.isnan(self.val_loss) else
               f"val {self.val_loss:.3f}  acc {100 * self.val_accuracy:5.1f}%")
        return epoch_line(self.epoch, epochs, f"train {self.train_loss:.3f}", val,
                          images_per_second(self.images_per_second),
                          f"{format_clock(self.elapsed_seconds)} elapsed, "
                          f"ETA {format_clock(self.eta_seconds)}", f"top: {self.top_ops}")


LOG_FIELDS = EpochLog(Path(LOG_NAME), EpochRecord).fields


@dataclass
class RunState:
    """What survives an interruption besides the engine: completed epochs and their records."""

    epochs_done: int = 0
    values: list[list[float]] = field(default_factory=list)  # physical λ at each epoch's start
    records: list[EpochRecord] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> RunState:
        return cls(epochs_done=payload["epochs_done"], values=payload["values"].tolist(),
                   records=[EpochRecord(**r) for r in payload["records"]],
                   elapsed_seconds=payload["elapsed_seconds"])

    def checkpoint_payload(self) -> dict[str, Any]:
        return dict(epochs_done=self.epochs_done,
                    values=torch.tensor(self.values, dtype=torch.float64),
                    records=[asdict(r) for r in self.records],
                    elapsed_seconds=self.elapsed_seconds)


def read_search_checkpoint(path: Path, cfg: SearchConfig, device: torch.device,
                           world_size: int = 1) -> dict[str, Any]:
    """The checkpoint at ``path`` if this search may resume it; else HbaError (one line)."""
    payload = CHECKPOINT.read(path, cfg.model_dump(mode="json"))
    if payload["device_type"] != device.type:
        raise HbaError(f"cannot resume on {device.type}: the checkpoint in {path.parent} was "
                       f"made on {payload['device_type']} (use --device {payload['device_type']})")
    made_by = payload.get("world_size", 1)
    if made_by != world_size:
        how = (f"torchrun --nproc_per_node={made_by}" if made_by > 1 else "one process, "
               "without torchrun")
        raise HbaError(f"cannot resume with {world_size} process{'es' * (world_size != 1)}: the "
                       f"checkpoint in {path.parent} was made by {made_by} (resume with {how})")
    return payload


class SearchRun:
    """One session of one search: its settings and context, its files; then the engine and
    what the finished epochs left (``RunState``)."""

    def __init__(self, cfg: SearchConfig, context: RunContext):
        self.cfg, self.context = cfg, context
        self.out, self.run_dir = context.out, context.run_dir
        self.ranks, self.device = context.ranks, context.device
        self.files = RunFiles(self.run_dir, self.out, checkpoints=CHECKPOINT_NAME,
                              reserved=RUN_FILES, resume=context.resume, what="search")
        self.log = EpochLog(self.run_dir / LOG_NAME, EpochRecord)
        self.state = RunState()
        self._elapsed_before = 0.0                         # earlier sessions of this run
        self._epoch_seconds: list[float] = []

    # -- the session --------------------------------------------------------------------------

    def execute(self, progress: bool,
                on_epoch_end: Callable[[EpochRecord], None] | None) -> Schedule:
        """Check, prepare, run the epochs, write the results; return the schedule."""
        cfg, ranks = self.cfg, self.ranks
        ranks.from_main(self.files.check)
        check_model(cfg.model)   # fail before a possibly long dataset download
        probe = build_model(cfg.model, 10)   # layers and sites do not depend on the classes
        check_strategy(probe, cfg.strategy)
        check_dropout_sites(get_space(cfg.space), probe, cfg.model)
        shard_size(cfg.batch_size, ranks)   # a global batch that does not split: refused now
        cfg = self.cfg = cfg.model_copy(
            update={"precision": resolve_precision(cfg.precision, self.device).name})
        starting_lambda(cfg)   # a bad --init fails now, not after the data are loaded
        path = self.run_dir / CHECKPOINT_NAME
        payload = (ranks.from_main(lambda: read_search_checkpoint(path, cfg, self.device,
                                                                  ranks.world_size))
                   if self.context.resume else None)
        seed_everything(cfg.seed)
        splits = ranks.main_first(lambda: load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size,
                                                       cfg.val_size, cfg.split_seed,
                                                       image_size=cfg.image_size))
        with self.files.working(ranks):
            self._start(splits, payload)
            if ranks.is_main:
                write_config(self.run_dir, cfg.model_dump(mode="json"))
            bar = RunProgress(progress, "search", cfg.epochs, self.state.epochs_done,
                              steps=self.engine.rounds)
            with RunOutput(bar, ranks.is_main, on_epoch_end) as output:
                if payload is not None:
                    output.print(f"resuming {self.run_dir} after epoch "
                                 f"{self.state.epochs_done}/{cfg.epochs}")
                if cfg.compile:
                    output.print(COMPILING_NOTE)
                self._run_epochs(output)
            schedule = self._finish()
        done = self.state.epochs_done
        output.print(f"schedule written to {self.out} ({done} epoch{'s' * (done != 1)}, search "
                     f"time {format_clock(self.state.elapsed_seconds)}; run files in "
                     f"{self.run_dir})")
        return schedule

    def _start(self, splits: ImageSplits, payload: dict[str, Any] | None) -> None:
        self.splits = splits
        self.engine = SearchEngine(self.cfg, splits, self.device, self.ranks)
        if payload is not None:
            self.engine.load_state_dict(payload["engine"])
            self.state = RunState.from_checkpoint(payload)
        self._elapsed_before = self.state.elapsed_seconds

    def _finish(self) -> Schedule:
        """The schedule to ``--out`` and the run directory, and the plain network."""
        self.state.elapsed_seconds = self.elapsed()
        schedule = self.schedule()
        if self.ranks.is_main:
            save_schedule(schedule, self.out)
            save_schedule(schedule, self.run_dir / SCHEDULE_NAME)
            atomic_write_bytes(self.run_dir / NETWORK_NAME,
                               network_bytes(self.engine.plain_network()))
        return schedule

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self.context.started

    # -- the epochs ---------------------------------------------------------------------------

    def _run_epochs(self, output: RunOutput) -> None:
        for epoch in range(self.state.epochs_done, self.cfg.epochs):
            output.progress.start_epoch(f"epoch {epoch + 1}/{self.cfg.epochs}")
            in_effect = self.engine.values()   # entry `epoch` of the schedule
            started = time.perf_counter()
            metrics = self.engine.run_epoch(epoch, on_round=output.progress.advance_step)
            self._check_finite(epoch, metrics)
            self._epoch_seconds.append(time.perf_counter() - started)
            record = self._finish_epoch(epoch, metrics, in_effect)
            # on every rank (the ranks' random states are gathered); rank 0 writes
            output.end_epoch(record, record.line(self.cfg.epochs), self._epoch_files())

    def _check_finite(self, epoch: int, metrics: EpochMetrics) -> None:
        """Stop a diverged search before its epoch is saved: the run directory keeps the last
        good epoch, and the message names the setting to change."""
        cfg = self.cfg
        if not math.isfinite(metrics.train_loss) or math.isinf(metrics.val_loss):
            what = (f"the hypernetwork's training loss is {metrics.train_loss:g} (validation "
                    f"{metrics.val_loss:g}); lower --lr (now {cfg.lr:g}) or --weight-decay "
                    f"(now {cfg.weight_decay:g})")
        elif not bool(torch.isfinite(self.engine.lam).all()):
            what = f"λ is no longer finite; lower --hyper-lr (now {cfg.hyper_lr:g})"
        else:
            return
        kept = (f"epochs 1–{epoch} are saved in {self.run_dir}; " if epoch else "")
        raise HbaError(f"the search diverged in epoch {epoch + 1}: {what}; {kept}start again "
                       "with the new setting and another --run-dir")

    def _finish_epoch(self, epoch: int, metrics: EpochMetrics,
                      in_effect: np.ndarray) -> EpochRecord:
        """Append the λ in effect during this epoch (physical, as at its start) and the log
        record (whose top ops are λ's at the epoch's end: where the search stands now)."""
        seconds = self._epoch_seconds[-1]
        record = EpochRecord(
            epoch=epoch + 1, train_loss=metrics.train_loss, val_loss=metrics.val_loss,
            val_accuracy=metrics.val_accuracy, epoch_seconds=seconds,
            images_per_second=metrics.train_images / seconds, lr=self.engine.lr,
            elapsed_seconds=self.elapsed(),
            eta_seconds=float(np.mean(self._epoch_seconds)) * (self.cfg.epochs - epoch - 1),
            top_ops=self._headline(self.engine.values()))
        state = self.state
        state.epochs_done = epoch + 1
        state.values.append(in_effect.tolist())
        state.records.append(record)
        state.elapsed_seconds = record.elapsed_seconds
        return record

    def _headline(self, now: np.ndarray) -> str:
        """Where λ stands, in a few words: the most probable op copies, or (a space without the
        policy) the scalars that moved most from the start, as a share of their ranges."""
        searched = self.engine.space
        if searched.policy:
            probabilities = now[:space.NUM_OP_COPIES]
            return " ".join(f"{label}:{p:.3f}"
                            for label, p in top_ops(probabilities, TOP_OPS_SHOWN))
        scalars = searched.scalar_slice
        moved = np.abs(now - searched.start_values())[scalars] / (searched.high -
                                                                  searched.low)[scalars]
        names = searched.scalar_names
        return " ".join(f"{names[i]}:{now[scalars][i]:.3g}"
                        for i in np.argsort(-moved, kind="stable")[:TOP_OPS_SHOWN])

    def _epoch_files(self) -> dict[Path, bytes]:
        """This epoch's files, serialised now; the checkpoint last. Every rank calls it (the
        ranks' random states are gathered); only rank 0's is not empty."""
        engine_state = self.engine.checkpoint_state()
        if not self.ranks.is_main:
            return {}
        checkpoint = CHECKPOINT.serialise(
            self.cfg.model_dump(mode="json"), device_type=self.device.type,
            world_size=self.ranks.world_size,   # processes under torchrun (absent before: 1)
            engine=engine_state, **self.state.checkpoint_payload())
        return {self.run_dir / SCHEDULE_NAME: schedule_json_text(self.schedule()).encode("utf-8"),
                **self.log.file(self.state.records),
                self.run_dir / CHECKPOINT_NAME: checkpoint}

    def schedule(self) -> Schedule:
        cfg, splits, state = self.cfg, self.splits, self.state
        described = device_description(self.device)
        if self.ranks.parallel:
            described += f" × {self.ranks.world_size} processes (torchrun)"
        provenance = Provenance(
            dataset=cfg.dataset, train_size=int(splits.train_labels.shape[0]),
            val_size=int(splits.val_labels.shape[0]), image_size=splits.image_size,
            model=cfg.model, strategy=cfg.strategy, seed=cfg.seed, epochs=state.epochs_done,
            search_seconds=round(state.elapsed_seconds, 3), device=described,
            versions=package_versions(), command=self.context.command_line,
            config=cfg.model_dump(mode="json"), created=datetime.now(timezone.utc),
        )
        return Schedule.from_values(cfg.space, np.array(state.values), provenance=provenance)


def run_search(cfg: SearchConfig, out: Path, run_dir: Path, resume: bool = False,
               command_line: str | None = None, progress: bool = True, *,
               on_epoch_end: Callable[[EpochRecord], None] | None = None) -> Schedule:
    """Run (or resume) an HBA search; write the schedule to ``out`` and return it.

    ``on_epoch_end`` is called after each epoch's files are written (tests use it to interrupt).
    Under torchrun the same call searches data-parallel (see ``search_engine``); only rank 0
    writes and prints.
    """
    with run_context(cfg.device, out, run_dir, resume, command_line) as context:
        return SearchRun(cfg, context).execute(progress and context.ranks.is_main, on_epoch_end)
