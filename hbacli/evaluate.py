"""`hba evaluate`: train a target network with a schedule or a standard baseline, one model per
seed, and report test error — on one device or data-parallel under torchrun.

The parts: ``baselines`` (what augments the images), ``batches`` (where the batches come
from), ``trainer`` (the data, the recipe, one seed's training and test); this module runs the
seeds over a run directory and writes the results.

Run directory: ``config.json`` (the resolved config), ``epochs.csv`` (one row per seed and
epoch), and per seed ``seed-S/checkpoint.pt``, written after every epoch through the scaffold
shared with ``hba search`` (``runs.RunFiles``, ``run_scaffold``: checked before any work,
locked while the run lasts, written in the background, checkpoint last). A finished seed's
checkpoint also holds its test result, so ``--resume`` skips it; the results file ``--out`` is
rewritten after every seed, so an interrupted run keeps its finished seeds.

Resume: a seed's checkpoint must have been made with the same settings (``RESUME_IGNORED_FIELDS``
may change) and, for a schedule, the same schedule values. The precision is resolved first
(``auto`` becomes what the device runs) and recorded in config.json, the checkpoints and the
results' ``config``, so a resume on another kind of GPU must match.

Data parallel (torchrun). Under ``torchrun --nproc_per_node=N`` (RANK/WORLD_SIZE/LOCAL_RANK in
the environment) each process trains a DDP-wrapped replica on its own device (NCCL on CUDA,
gloo on CPU). Every global batch (``batch_size`` images, the recipe's) is split into N equal
shards, one per rank, so the recipe does not change with N; augmentation streams differ per
rank; BatchNorm statistics are per shard. Rank 0 alone reads checkpoints (and passes them on),
writes files and prints. Test numbers are summed over ranks' shards of the test set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from .baselines import resolve_policy
from .batches import default_workers
from .catalogue import check_model, dataset_family
from .checkpoint import SETTINGS_WITHOUT_EFFECT, CheckpointFormat, load_network_weights
from .errors import HbaError
from .files import json_text
from .presets import EvaluateConfig, ReplayMode
from .results import EvaluationProvenance, EvaluationResults, SeedResult, Summary
from .run_scaffold import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    EpochLog,
    RunContext,
    RunOutput,
    RunProgress,
    epoch_line,
    images_per_second,
    run_context,
    write_config,
)
from .runs import RunFiles
from .runtime import COMPILING_NOTE, device_description, package_versions, resolve_precision
from .trainer import SeedTrainer, TrainingSetup, load_training_data

CHECKPOINT_FORMAT = "hba-evaluate-checkpoint"
CHECKPOINT_VERSION = 1
LOG_NAME = "epochs.csv"
# Settings that do not change what a seed computes: a run may be resumed with them changed.
RESUME_IGNORED_FIELDS = SETTINGS_WITHOUT_EFFECT | {"seeds", "eval_every"}
CHECKPOINT = CheckpointFormat(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "evaluate",
                              RESUME_IGNORED_FIELDS)


@dataclass
class EpochRecord:
    """One row of epochs.csv."""

    epoch: int                 # 1-based
    seed: int
    train_loss: float
    train_accuracy: float      # %, on the augmented training images
    lr: float                  # at the end of the epoch
    images_per_second: float   # training images (all ranks) per second of this epoch
    elapsed_seconds: float     # this seed's training time so far, over resumed sessions
    test_error: float = math.nan   # %, every --eval-every epochs (NaN: not tested then)
    test_loss: float = math.nan

    def line(self, epochs: int) -> str:
        tested = () if math.isnan(self.test_error) else (f"test error {self.test_error:.2f}%",)
        return epoch_line(self.epoch, epochs, f"loss {self.train_loss:.3f}",
                          f"acc {self.train_accuracy:5.1f}%", f"lr {self.lr:.4g}",
                          images_per_second(self.images_per_second), *tested,
                          lead=f"seed {self.seed}")


LOG_FIELDS = EpochLog(Path(LOG_NAME), EpochRecord).fields


def seed_checkpoint_path(run_dir: Path, seed: int) -> Path:
    return run_dir / f"seed-{seed}" / CHECKPOINT_NAME


def run_files(run_dir: Path, out: Path, resume: bool) -> RunFiles:
    return RunFiles(run_dir, out, checkpoints=f"seed-*/{CHECKPOINT_NAME}",
                    reserved=(CONFIG_NAME, LOG_NAME, f"seed-*/{CHECKPOINT_NAME}"), resume=resume,
                    what="evaluation")


def results_table(results: EvaluationResults) -> Table:
    top5 = results.summary.test_top5_error is not None
    table = Table(title=f"{results.policy} · {results.model} on {results.dataset} "
                        f"({results.train_images} training images, {results.test_images} test)")
    for name in ("seed", "test error %", *(("top-5 error %",) if top5 else ()), "test loss",
                 "train loss", "train acc %", "time"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in results.per_seed:
        table.add_row(str(r.seed), f"{r.test_error:.2f}",
                      *((f"{r.test_top5_error:.2f}",) if top5 else ()), f"{r.test_loss:.3f}",
                      f"{r.train_loss:.3f}", f"{r.train_accuracy:.1f}",
                      f"{r.train_seconds:.0f} s")
    s = results.summary
    table.add_section()
    table.add_row("mean ± std", str(s.test_error), *((str(s.test_top5_error),) if top5 else ()),
                  f"{s.test_loss.mean:.3f} ± {s.test_loss.std:.3f}", "", "", "")
    return table


_DIVERGED_ADVICE = ("lower --lr (now {cfg.lr:g}) or --weight-decay (now {cfg.weight_decay:g}); "
                    "seeds finished before it are kept, and the run starts again with the new "
                    "setting and another --run-dir")


class SeedCheckpoint:
    """A seed's checkpoint: the resume settings, the trainer's state, the epochs' records, the
    training time, and once the seed is tested its result."""

    def __init__(self, run: EvaluationRun, seed: int, trainer: SeedTrainer):
        self.path = seed_checkpoint_path(run.context.run_dir, seed)
        self.settings = run.setup.policy.resume_settings(run.cfg)
        self.seed, self.trainer = seed, trainer

    def file(self, epochs_done: int, records: list[EpochRecord], train_seconds: float,
             result: SeedResult | None = None) -> dict[Path, bytes]:
        """The checkpoint serialised now, for ``RunOutput``'s background writer."""
        return {self.path: CHECKPOINT.serialise(
            self.settings, seed=self.seed, epochs_done=epochs_done, **self.trainer.state_dict(),
            records=[asdict(r) for r in records], train_seconds=train_seconds,
            result=None if result is None else result.model_dump(mode="json"))}


class EvaluationRun:
    """One session of one evaluation: its settings and context, its files; then what every
    seed trains with (``setup``), the finished seeds and the log."""

    def __init__(self, cfg: EvaluateConfig, context: RunContext, replay: ReplayMode,
                 workers: int | None):
        self.cfg, self.context, self.replay, self.workers = cfg, context, replay, workers
        self.ranks = context.ranks
        self.files = run_files(context.run_dir, context.out, context.resume)
        self.log = EpochLog(context.run_dir / LOG_NAME, EpochRecord)
        self.records: list[EpochRecord] = []    # the finished seeds' epochs
        self.finished: list[SeedResult] = []

    def execute(self, progress: bool,
                on_epoch_end: Callable[[EpochRecord], None] | None) -> EvaluationResults:
        """Check, prepare, train and test every seed, write the results; return them."""
        cfg, ranks = self.cfg, self.ranks
        ranks.from_main(self.files.check)
        check_model(cfg.model)   # fail before a possibly long dataset download
        dataset_family(cfg.dataset)
        policy = resolve_policy(cfg.policy)
        data = ranks.main_first(lambda: load_training_data(cfg))
        if cfg.init_weights is not None:   # a file that does not fit fails before any writing
            from .nets import build_model

            load_network_weights(build_model(cfg.model, data.num_classes),
                                 Path(cfg.init_weights), cfg.model)
        workers = default_workers(ranks) if self.workers is None else self.workers
        self.setup = TrainingSetup(cfg, data, policy, self.context.device, ranks, self.replay,
                                   workers)
        with self.files.working(ranks):
            if ranks.is_main:
                write_config(self.context.run_dir, cfg.model_dump(mode="json"))
            bar = RunProgress(progress, "evaluate", cfg.epochs * len(cfg.seeds))
            with RunOutput(bar, ranks.is_main, on_epoch_end) as output:
                if cfg.compile:
                    output.print(COMPILING_NOTE)
                for seed in cfg.seeds:
                    self._seed(seed, output)
                output.flush()
                if ranks.is_main:
                    output.print(results_table(self.results))
                    output.print(f"results written to {self.context.out} (per-epoch log and "
                                 f"checkpoints in {self.context.run_dir})")
        return self.results

    def _seed(self, seed: int, output: RunOutput) -> None:
        """Train (or continue, or skip when finished) one seed; then the log and the results
        file with it, so an interrupted run keeps its finished seeds."""
        payload = self.ranks.from_main(lambda: self._saved(seed))
        files: dict[Path, bytes] = {}
        if payload is not None and payload["result"] is not None:
            result = SeedResult(**payload["result"])
            output.print(f"seed {seed}: finished earlier, test error {result.test_error:.2f}%")
            output.progress.advance(self.cfg.epochs)
            records = [EpochRecord(**r) for r in payload["records"]]
        else:
            if payload is not None:
                output.progress.advance(payload["epochs_done"])
            result, records, files = self._train_seed(seed, payload, output)
        self.records.extend(records)
        self.finished.append(result)
        self.results = self._results()
        if self.ranks.is_main:
            output.write({**files, **self.log.file(self.records),
                          self.context.out: json_text(self.results.model_dump(mode="json"))
                          .encode("utf-8")})

    def _saved(self, seed: int) -> dict[str, Any] | None:
        """The seed's checkpoint when resuming and there is one; HbaError if it cannot be
        resumed (other settings, or a schedule whose values changed since the run started)."""
        path = seed_checkpoint_path(self.context.run_dir, seed)
        if not self.context.resume or not path.is_file():
            return None
        return CHECKPOINT.read(path, self.setup.policy.resume_settings(self.cfg))

    def _train_seed(self, seed: int, payload: dict[str, Any] | None, output: RunOutput
                    ) -> tuple[SeedResult, list[EpochRecord], dict[Path, bytes]]:
        """Train (or continue) one seed, test it; its result, all its epoch records, and its
        finished checkpoint (rank 0; for the caller to write with the log)."""
        cfg = self.cfg
        trainer = SeedTrainer(self.setup, seed)
        checkpoint = SeedCheckpoint(self, seed, trainer)
        records: list[EpochRecord] = []
        epochs_done, seconds_before = 0, 0.0
        if payload is not None:
            trainer.load_state_dict(payload)
            epochs_done, seconds_before = payload["epochs_done"], payload["train_seconds"]
            records = [EpochRecord(**r) for r in payload["records"]]
            output.print(f"seed {seed}: resuming after epoch {epochs_done}/{cfg.epochs}")
        session_seconds, session_images = 0.0, 0
        loss = accuracy = math.nan
        for epoch in range(epochs_done, cfg.epochs):
            started = time.perf_counter()
            loss, accuracy, images = trainer.train_epoch(epoch)
            seconds = time.perf_counter() - started
            if not math.isfinite(loss):
                raise HbaError(f"seed {seed}: training diverged in epoch {epoch + 1} (loss "
                               f"{loss}); {_DIVERGED_ADVICE.format(cfg=cfg)}")
            session_seconds += seconds
            session_images += images
            tested = (math.nan, None, math.nan)
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
                tested = trainer.test()    # outside the timed epoch
            records.append(EpochRecord(epoch=epoch + 1, seed=seed, train_loss=loss,
                                       train_accuracy=accuracy, lr=trainer.lr,
                                       images_per_second=images / seconds,
                                       elapsed_seconds=seconds_before + session_seconds,
                                       test_error=tested[0], test_loss=tested[2]))
            files = ({**self.log.file(self.records + records),
                      **checkpoint.file(epoch + 1, records, seconds_before + session_seconds)}
                     if self.ranks.is_main else {})
            output.end_epoch(records[-1], records[-1].line(cfg.epochs), files)
        if records and math.isnan(loss):   # every epoch was done before this session
            loss, accuracy = records[-1].train_loss, records[-1].train_accuracy
        error, top5, test_loss = trainer.test()
        if not math.isfinite(test_loss):   # before the seed is marked finished
            raise HbaError(f"seed {seed}: the trained network's test loss is {test_loss} "
                           f"(training diverged); {_DIVERGED_ADVICE.format(cfg=cfg)}")
        result = SeedResult(seed=seed, test_error=error, test_top5_error=top5, test_loss=test_loss,
                            train_loss=loss, train_accuracy=accuracy, epochs=cfg.epochs,
                            train_seconds=seconds_before + session_seconds,
                            images_per_second=session_images / session_seconds if session_seconds
                            else records[-1].images_per_second)
        files = (checkpoint.file(cfg.epochs, records, result.train_seconds, result)
                 if self.ranks.is_main else {})
        return result, records, files

    def _results(self) -> EvaluationResults:
        cfg, data, context, policy = self.cfg, self.setup.data, self.context, self.setup.policy
        return EvaluationResults(
            policy=cfg.policy, dataset=cfg.dataset, model=cfg.model,
            train_images=int(data.train_labels.shape[0]),
            test_images=int(data.test_labels.shape[0]), per_seed=list(self.finished),
            summary=Summary.of(self.finished), config=cfg.model_dump(mode="json"),
            provenance=EvaluationProvenance(
                versions=package_versions(), device=device_description(context.device),
                world_size=self.ranks.world_size, command=context.command_line,
                image_size=data.image_size,
                wall_seconds=round(time.perf_counter() - context.started, 3),
                created=datetime.now(timezone.utc),
                schedule=None if policy.schedule is None or policy.schedule.provenance is None
                else policy.schedule.provenance.model_dump(mode="json")))


def run_evaluation(cfg: EvaluateConfig, out: Path, run_dir: Path, resume: bool = False,
                   command_line: str | None = None, progress: bool = True, *,
                   replay: ReplayMode | None = None, workers: int | None = None,
                   on_epoch_end: Callable[[EpochRecord], None] | None = None
                   ) -> EvaluationResults:
    """Train ``cfg.model`` once per seed with ``cfg.policy``; write results to ``out``.

    ``replay`` and ``workers``, when given, override ``cfg.replay`` (how a schedule is applied:
    ``batched`` on the device with ``ScheduleAugmenter``, or ``per-image`` in DataLoader workers
    with ``ScheduleTransform``) and ``cfg.workers`` (DataLoader workers per process for
    per-image policies). ``on_epoch_end`` is called after each epoch's checkpoint is written
    (tests interrupt there). Under torchrun the same call trains data-parallel; only rank 0
    writes and prints.
    """
    with run_context(cfg.device, out, run_dir, resume, command_line) as context:
        # The precision this device runs (auto resolved): config.json, the checkpoints (a resume
        # on another kind of GPU must match) and the results' config record it.
        cfg = cfg.model_copy(update={
            "precision": resolve_precision(cfg.precision, context.device).name})
        run = EvaluationRun(cfg, context, cfg.replay if replay is None else replay,
                            cfg.workers if workers is None else workers)
        return run.execute(progress and context.ranks.is_main, on_epoch_end)
