"""`hba evaluate`: train a target network with a schedule or a standard baseline, one model per
seed, and report test error — on one device or data-parallel under torchrun.

Policies. A schedule file is replayed as SPEC.md §3 orders it: the schedule's policy on the
uint8 image, then the dataset's baseline pipeline with Cutout (CIFAR: standardise, flip, crop,
Cutout 16×16). The baselines: ``none`` is the baseline pipeline without Cutout, ``cutout`` with
it; ``autoaugment``, ``randaugment`` and ``trivialaugment`` are torchvision's own
``v2.AutoAugment`` (CIFAR10 policy for CIFAR, SVHN for SVHN and digits, IMAGENET otherwise),
``v2.RandAugment`` (N=2, M=9) and ``v2.TrivialAugmentWide``, applied before the baseline
pipeline with Cutout, as those papers do; they fill exposed pixels with grey 128 like our ops
(and AutoAugment's original code). torchvision's v2 transforms accept a batch but draw one op
and magnitude for the whole batch, so they run per image, on uint8 tensors in DataLoader workers
(each image its own draw); the uint8 batch then goes to the device for the baseline pipeline.

Training set. A reduced dataset (``reduced-*``) trains on its reduced training split (the
same 4,000 images a search with the same ``split_seed`` trained on, its validation images held
out); any other dataset holds no validation images out (``val_size`` 0 unless set), so it
trains on the whole original training set — training and validation merged, as the paper's
final numbers do — or on ``train_size`` images drawn from all of it. The test set is used once per
seed, after training, for the reported numbers.

Recipe. SGD with momentum and nesterov, weight decay on every parameter, the learning rate
moved every step (cosine to 0, or ×0.1 at the milestone epochs), the last partial batch of an
epoch dropped. On CUDA: autocast (``--precision``: ``auto`` is bf16 on GPUs with native bf16,
compute capability ≥ 8.0, else fp16 with a GradScaler; fp32 on the CPU), channels_last, the
training set resident on the device as uint8, the schedule replayed batched on the device; a
step never waits for the host (losses and accuracies accumulate on the device and are read once
per epoch), except fp16's GradScaler, which reads its inf check back once per step. The
resolved precision is recorded in config.json, the checkpoints and the results' ``config``.

Randomness and resume. Seed s fixes the initial weights (``torch.manual_seed(s)`` before the
model is built) and the batch order; every random stream of epoch e — the policy's, the
baseline pipeline's, DataLoader workers', torch's global generator — is reseeded at the start of
the epoch from (s, e, rank). A checkpoint after every epoch (model, optimiser, LR scheduler,
gradient scaler, epoch, log) is therefore all a resumed seed needs to continue exactly as the
uninterrupted run would have (on CPU; CUDA kernels may be nondeterministic). With all
probabilities zero a schedule trains bit-identically to ``cutout``: the policy draws from its
own generator.

Data parallel (torchrun). Under ``torchrun --nproc_per_node=N`` (RANK/WORLD_SIZE/LOCAL_RANK in
the environment) each process trains a DDP-wrapped replica on its own device (NCCL on CUDA,
gloo on CPU). Every global batch (``batch_size`` images, the recipe's) is split into N equal
shards, one per rank, so the recipe does not change with N; augmentation streams differ per
rank; BatchNorm statistics are per shard. Rank 0 alone reads checkpoints (and passes them on),
writes files and prints. Test numbers are summed over ranks' shards of the test set.

Run directory: ``config.json``, ``epochs.csv`` (one row per seed and epoch), and per seed
``seed-S/checkpoint.pt``; a finished seed's checkpoint also holds its test result, so
``--resume`` skips it.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

# re-exported: ``from hbacli.evaluate import Ranks`` keeps working
from .distributed import Ranks, shard_size, start_processes, wrap_for_training  # noqa: F401
from .errors import HbaError
from .checkpoint import checkpoint_bytes, load_network_weights, read_checkpoint
from .runs import RunFiles, file_errors_explained
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text, dataclass_csv_text
from .policy import default_kernels
from .catalogue import BASELINES, FAMILIES, MODELS, choices, dataset_family
from .presets import EvaluateConfig, ReplayMode, lr_factor
from .replay import ScheduleAugmenter, ScheduleTransform
from .seeds import Stream, derive_seed
from .results import EvaluationProvenance, EvaluationResults, SeedResult, Summary
from .runtime import (COMPILING_NOTE, device_description, memory_format, package_versions,
                      resolve_precision)

CHECKPOINT_FORMAT = "hba-evaluate-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
LOG_NAME = "epochs.csv"
# Settings that do not change what a seed computes: a run may be resumed with them changed.
RESUME_IGNORED_FIELDS = frozenset({"seeds", "device", "data_dir", "compile", "eval_every"})


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """What augments the training images before the baseline pipeline."""

    name: str                      # a baseline name, or "schedule"
    cutout: bool                   # whether the baseline pipeline ends with Cutout
    schedule: Any = None           # hbacli.schedule.Schedule for "schedule"
    fingerprint: str | None = None  # sha256 of the schedule's values, as read at the start

    def resume_settings(self, cfg: EvaluateConfig) -> dict[str, Any]:
        """What a resumed seed must share with its checkpoint: the config, and for a schedule
        its values (the file named in the config may have been edited since)."""
        settings = cfg.model_dump(mode="json")
        if self.fingerprint is not None:
            settings["schedule_values_sha256"] = self.fingerprint
        return settings


def resolve_policy(text: str) -> Policy:
    """A baseline name or a schedule file; HbaError (one line) for anything else."""
    if text in BASELINES:
        return Policy(name=text, cutout=BASELINES[text].cutout)
    from .schedule import load_schedule

    if not Path(text).exists():
        raise HbaError(f"'{text}' is neither a schedule file nor one of {choices(BASELINES)}")
    schedule = load_schedule(text)
    values = np.stack([schedule.probabilities(), schedule.magnitudes()])
    return Policy(name="schedule", cutout=True, schedule=schedule,
                  fingerprint=hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest())


def torchvision_policy(name: str, family: str):
    """torchvision's own per-image policy for a baseline name."""
    from torchvision.transforms import v2

    from .space import FILL

    transform = BASELINES[name].torchvision if name in BASELINES else None
    if transform is None:
        raise HbaError(f"'{name}' is not a torchvision baseline")
    if transform == "AutoAugment":
        policy = v2.AutoAugmentPolicy[FAMILIES[family].autoaugment_policy]
        return v2.AutoAugment(policy, fill=FILL)
    return getattr(v2, transform)(fill=FILL)   # RandAugment's N=2, M=9 are torchvision's defaults


# ---------------------------------------------------------------------------------------------
# Batches of an epoch: uint8 images on the device with the policy applied, and labels
# ---------------------------------------------------------------------------------------------

class DeviceBatches:
    """The training set resident on the device; the policy (if any) applied to whole batches."""

    def __init__(self, images, labels, batch_size: int, device: torch.device, seed: int,
                 ranks: Ranks, augmenter: ScheduleAugmenter | None = None):
        from .data import DeviceLoader

        # Same seed on every rank: all ranks walk the same global batches, each takes its shard.
        self.loader = DeviceLoader(images, labels, batch_size, device, shuffle=True,
                                   drop_last=True, seed=seed)
        size = shard_size(batch_size, ranks)
        self.shard = slice(ranks.rank * size, (ranks.rank + 1) * size)
        self.augmenter = augmenter

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)
        if self.augmenter is not None:
            self.augmenter.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            images, labels = images[self.shard], labels[self.shard]
            if self.augmenter is not None:
                images = self.augmenter(images)
            yield images, labels


class _TransformedImages(torch.utils.data.Dataset):
    """uint8 C×H×W images through a per-image transform, as tensors: on one 32×32 image a
    schedule's transform (C kernels) takes 0.04 ms against 0.12 ms through PIL and back, and
    torchvision's AutoAugment/RandAugment/TrivialAugment are as fast or faster on tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class ShardedBatchSampler(torch.utils.data.Sampler):
    """This rank's shard of every full global batch of a permutation that depends on
    (seed, epoch) only."""

    def __init__(self, size: int, batch_size: int, seed: int, ranks: Ranks):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        shard = shard_size(batch_size, ranks)
        self.shard = slice(ranks.rank * shard, (ranks.rank + 1) * shard)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, Stream.ORDER))
        order = torch.randperm(self.size, generator=generator)
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size][self.shard].tolist()


class PerImageBatches:
    """A per-image policy run by DataLoader workers on each image, then the batch moved to the
    device as uint8. Workers are started per epoch and seeded from (seed, epoch, rank)."""

    def __init__(self, images, labels, transform: Callable, batch_size: int,
                 device: torch.device, seed: int, ranks: Ranks, workers: int):
        self.dataset = _TransformedImages(images, labels, transform)
        self.sampler = ShardedBatchSampler(images.shape[0], batch_size, seed, ranks)
        self.transform, self.device, self.seed, self.ranks = transform, device, seed, ranks
        self.workers = workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker_seeds = torch.Generator().manual_seed(
            derive_seed(self.seed, self.epoch, self.ranks.rank, Stream.WORKERS))
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", generator=worker_seeds)
        for images, labels in loader:
            yield (images.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))


def default_workers(ranks: Ranks) -> int:
    """DataLoader workers per process for per-image policies: the cores left after training."""
    return max(1, min(8, (os.cpu_count() or 2) // ranks.world_size - 1))


# ---------------------------------------------------------------------------------------------
# One seed: model, optimiser, epochs, test
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainingData:
    family: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_images: torch.Tensor     # uint8 N×3×H×W, CPU
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    image_size: int | None = None   # side of the square images (None: not square)


def load_training_data(cfg: EvaluateConfig) -> TrainingData:
    """The split to train on (see the module docstring) and the test split."""
    from .data import load_dataset

    # A reduced dataset keeps the search's held-out validation images out of its training set
    # (same split_seed, same 4,000 images); a full dataset holds nothing out.
    val_size = cfg.val_size if cfg.val_size is not None else (
        None if cfg.dataset.startswith("reduced-") else 0)
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, val_size, cfg.split_seed,
                          image_size=cfg.image_size)
    if splits.files is not None:
        raise HbaError(f"{cfg.dataset} is streamed from image files, which hba evaluate does not "
                       "train on yet; use an in-memory dataset (e.g. reduced-imagenet)")
    return TrainingData(family=splits.family, num_classes=splits.num_classes,
                        mean=splits.mean, std=splits.std, train_images=splits.train_images,
                        train_labels=splits.train_labels, test_images=splits.test_images,
                        test_labels=splits.test_labels, image_size=splits.image_size)


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


LOG_FIELDS = tuple(f.name for f in fields(EpochRecord))



class SeedTrainer:
    """One target network trained with one policy from one seed. Knows nothing of files."""

    def __init__(self, cfg: EvaluateConfig, seed: int, data: TrainingData, policy: Policy,
                 device: torch.device, ranks: Ranks, replay: ReplayMode, workers: int):
        from .data import BaselinePipeline
        from .nets import build_model

        self.cfg, self.seed, self.data, self.device, self.ranks = cfg, seed, data, device, ranks
        self.memory_format = memory_format(device)
        torch.manual_seed(seed)
        self.model = build_model(cfg.model, data.num_classes)
        if cfg.init_weights is not None:
            load_network_weights(self.model, Path(cfg.init_weights), cfg.model)
        self.model.to(device=device, memory_format=self.memory_format)
        self.network = wrap_for_training(self.model, device, ranks, cfg.compile)
        self.batches = self._batches(policy, replay, workers)
        self.steps_per_epoch = len(self.batches)
        if self.steps_per_epoch == 0:
            raise HbaError(f"batch size {cfg.batch_size} is larger than the training set "
                           f"({data.train_labels.shape[0]} images); lower --batch-size")
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
        self.precision = resolve_precision(cfg.precision, device)
        self.scaler = self.precision.grad_scaler()   # a pass-through unless fp16
        steps = self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg, steps))
        self.pipeline = BaselinePipeline(data.family, data.mean, data.std, cutout=policy.cutout,
                                         flip=cfg.flip)
        self.generator = torch.Generator(device=device)   # the baseline pipeline's

    def _batches(self, policy: Policy, replay: ReplayMode, workers: int):
        d, cfg, rank_seed = self.data, self.cfg, derive_seed(self.seed, self.ranks.rank,
                                                             Stream.POLICY)
        torchvision = policy.name in BASELINES and BASELINES[policy.name].torchvision
        if torchvision or (policy.name == "schedule"
                                                    and replay == "per-image"):
            transform = (torchvision_policy(policy.name, d.family) if policy.schedule is None
                         else ScheduleTransform(policy.schedule, cfg.epochs, seed=rank_seed))
            return PerImageBatches(d.train_images, d.train_labels, transform, cfg.batch_size,
                                   self.device, self.seed, self.ranks, workers)
        augmenter = None
        if policy.schedule is not None:
            augmenter = ScheduleAugmenter(policy.schedule, cfg.epochs, self.device, rank_seed,
                                          default_kernels(self.device, cfg.compile))
        return DeviceBatches(d.train_images, d.train_labels, cfg.batch_size, self.device,
                             self.seed, self.ranks, augmenter)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """Epoch ``epoch`` (0-based); returns mean loss, accuracy % and images, over all ranks."""
        torch.manual_seed(derive_seed(self.seed, epoch, self.ranks.rank, Stream.GLOBAL))
        self.generator.manual_seed(derive_seed(self.seed, epoch, self.ranks.rank, Stream.BASELINE))
        self.batches.set_epoch(epoch)
        self.network.train()
        sums = torch.zeros(3, device=self.device)   # loss·n, correct, n
        for images, labels in self.batches:
            x = self.pipeline.train(images, generator=self.generator)
            x = x.contiguous(memory_format=self.memory_format)
            with self.precision.autocast():
                logits = self.network(x)
                loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)   # skipped (fp16) when a gradient overflowed
            self.scaler.update()
            self.scheduler.step()
            sums[0] += loss.detach() * labels.shape[0]
            sums[1] += (logits.detach().argmax(dim=1) == labels).sum()
            sums[2] += labels.shape[0]
        loss_sum, correct, count = self.ranks.sum(sums).tolist()   # the epoch's one sync
        return loss_sum / count, 100.0 * correct / count, int(count)

    @torch.no_grad()
    def test(self) -> tuple[float, float | None, float]:
        """Top-1 error %, top-5 error % (ImageNet families, else None), mean loss on the test set.

        Each rank scores its contiguous share of the test set with rank 0's BatchNorm statistics.
        """
        if self.ranks.parallel:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)
        images, labels = self.data.test_images, self.data.test_labels
        n = labels.shape[0]
        share = math.ceil(n / self.ranks.world_size)
        lo, hi = min(n, self.ranks.rank * share), min(n, (self.ranks.rank + 1) * share)
        k = min(5, self.data.num_classes)
        batch = 2 * self.cfg.batch_size
        sums = torch.zeros(3, device=self.device)   # loss, top-1 correct, top-k correct
        self.model.eval()
        for start in range(lo, hi, batch):
            x = images[start:min(hi, start + batch)].to(self.device, non_blocking=True)
            y = labels[start:min(hi, start + batch)].to(self.device, non_blocking=True)
            x = self.pipeline.eval(x).contiguous(memory_format=self.memory_format)
            with self.precision.autocast():
                logits = self.model(x).float()
            top = logits.topk(k, dim=1).indices
            sums[0] += F.cross_entropy(logits, y, reduction="sum")
            sums[1] += (top[:, 0] == y).sum()
            sums[2] += (top == y[:, None]).any(dim=1).sum()
        self.model.train()
        loss, top1, topk = self.ranks.sum(sums).tolist()
        top5 = 100.0 * (1 - topk / n) if self.data.family == "imagenet" else None
        return 100.0 * (1 - top1 / n), top5, loss / n

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.scaler.state_dict()}   # empty unless fp16

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["grad_scaler"])


# ---------------------------------------------------------------------------------------------
# Checkpoints and the run directory (rank 0 only)
# ---------------------------------------------------------------------------------------------

def seed_checkpoint_path(run_dir: Path, seed: int) -> Path:
    return run_dir / f"seed-{seed}" / CHECKPOINT_NAME


def run_files(run_dir: Path, out: Path, resume: bool) -> RunFiles:
    return RunFiles(run_dir, out, checkpoints=f"seed-*/{CHECKPOINT_NAME}",
                    reserved=(CONFIG_NAME, LOG_NAME, f"seed-*/{CHECKPOINT_NAME}"), resume=resume,
                    what="evaluation")


def seed_checkpoint_bytes(cfg: EvaluateConfig, policy: Policy, seed: int, epochs_done: int,
                          trainer: SeedTrainer, records: list[EpochRecord], train_seconds: float,
                          result: SeedResult | None) -> bytes:
    return checkpoint_bytes(
        CHECKPOINT_FORMAT, CHECKPOINT_VERSION, policy.resume_settings(cfg), seed=seed,
        epochs_done=epochs_done, **trainer.state_dict(), records=[asdict(r) for r in records],
        train_seconds=train_seconds,
        result=None if result is None else result.model_dump(mode="json"))


def save_checkpoint(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def read_seed_checkpoint(path: Path, cfg: EvaluateConfig, policy: Policy) -> dict[str, Any] | None:
    """The seed's checkpoint, or None when there is none; HbaError if it cannot be resumed
    (other settings, or a schedule whose values changed since the run started)."""
    if not path.is_file():
        return None
    return read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                           policy.resume_settings(cfg), RESUME_IGNORED_FIELDS, "evaluate")


# ---------------------------------------------------------------------------------------------
# Console: progress and the final table (rank 0, when enabled)
# ---------------------------------------------------------------------------------------------

def epoch_line(record: EpochRecord, epochs: int) -> str:
    return (f"seed {record.seed}  epoch {record.epoch:>{len(str(epochs))}}/{epochs}  "
            f"loss {record.train_loss:.3f}  acc {record.train_accuracy:5.1f}%  "
            f"lr {record.lr:.4g}  {record.images_per_second:,.0f} img/s"
            + ("" if math.isnan(record.test_error) else f"  test error {record.test_error:.2f}%"))


class EvaluateProgress:
    """A rich bar over all seeds' epochs on a terminal, and one line per epoch."""

    def __init__(self, enabled: bool, total_epochs: int):
        self.enabled = enabled
        self.console = Console(highlight=False)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not (enabled and self.console.is_terminal),
            transient=True)
        self._task = self._progress.add_task("evaluate", total=total_epochs)

    def __enter__(self) -> "EvaluateProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, epochs: int = 1) -> None:
        self._progress.advance(self._task, epochs)

    def print(self, renderable) -> None:
        if self.enabled:
            self.console.print(renderable, soft_wrap=True)


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


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

_DIVERGED_ADVICE = ("lower --lr (now {cfg.lr:g}) or --weight-decay (now {cfg.weight_decay:g}); "
                    "seeds finished before it are kept, and the run starts again with the new "
                    "setting and another --run-dir")


def _train_seed(cfg: EvaluateConfig, seed: int, data: TrainingData, policy: Policy,
                device: torch.device, ranks: Ranks, run_dir: Path, payload: dict | None,
                replay: ReplayMode, workers: int, bar: EvaluateProgress,
                on_epoch: Callable[[list[EpochRecord]], None]
                ) -> tuple[SeedResult, list[EpochRecord]]:
    """Train (or continue) one seed, test it; its result and all its epoch records."""
    trainer = SeedTrainer(cfg, seed, data, policy, device, ranks, replay, workers)
    records: list[EpochRecord] = []
    epochs_done, seconds_before = 0, 0.0
    if payload is not None:
        trainer.load_state_dict(payload)
        epochs_done, seconds_before = payload["epochs_done"], payload["train_seconds"]
        records = [EpochRecord(**r) for r in payload["records"]]
        bar.print(f"seed {seed}: resuming after epoch {epochs_done}/{cfg.epochs}")
    path = seed_checkpoint_path(run_dir, seed)
    session_seconds, session_images = 0.0, 0
    loss = accuracy = math.nan
    for epoch in range(epochs_done, cfg.epochs):
        started = time.perf_counter()
        loss, accuracy, images = trainer.train_epoch(epoch)
        seconds = time.perf_counter() - started
        if not math.isfinite(loss):
            raise HbaError(f"seed {seed}: training diverged in epoch {epoch + 1} (loss {loss}); "
                           f"{_DIVERGED_ADVICE.format(cfg=cfg)}")
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
        if ranks.is_main:
            save_checkpoint(path, seed_checkpoint_bytes(cfg, policy, seed, epoch + 1, trainer, records,
                                                        seconds_before + session_seconds, None))
        bar.advance()
        bar.print(epoch_line(records[-1], cfg.epochs))
        on_epoch(records)
    if records and math.isnan(loss):   # every epoch was done before this session
        loss, accuracy = records[-1].train_loss, records[-1].train_accuracy
    error, top5, test_loss = trainer.test()
    if not math.isfinite(test_loss):   # before the seed is marked finished
        raise HbaError(f"seed {seed}: the trained network's test loss is {test_loss} (training "
                       f"diverged); {_DIVERGED_ADVICE.format(cfg=cfg)}")
    result = SeedResult(seed=seed, test_error=error, test_top5_error=top5, test_loss=test_loss,
                        train_loss=loss, train_accuracy=accuracy, epochs=cfg.epochs,
                        train_seconds=seconds_before + session_seconds,
                        images_per_second=session_images / session_seconds if session_seconds
                        else records[-1].images_per_second)
    if ranks.is_main:
        save_checkpoint(path, seed_checkpoint_bytes(cfg, policy, seed, cfg.epochs, trainer, records,
                                                    result.train_seconds, result))
    return result, records


def run_evaluation(cfg: EvaluateConfig, out: Path, run_dir: Path, resume: bool = False,
                   command_line: str | None = None, progress: bool = True, *,
                   replay: ReplayMode | None = None, workers: int | None = None,
                   on_epoch_end: Callable[[EpochRecord], None] | None = None
                   ) -> EvaluationResults:
    """Train ``cfg.model`` once per seed with ``cfg.policy``; write results to ``out``.

    ``replay`` and ``workers``, when given, override ``cfg.replay`` (how a schedule is applied:
    ``batched`` on the device with ``ScheduleAugmenter``, or ``per-image`` in DataLoader workers
    with ``ScheduleTransform``) and ``cfg.workers`` (DataLoader workers per process for
    per-image policies). ``on_epoch_end`` is called after each epoch's checkpoint is written (tests interrupt there).
    Under torchrun the same call trains data-parallel; only rank 0 writes and prints.
    """
    session_start = time.perf_counter()
    out, run_dir = Path(out), Path(run_dir)
    replay = cfg.replay if replay is None else replay
    workers = cfg.workers if workers is None else workers
    ranks, device, created_group = start_processes(cfg.device)
    try:
        # The precision this device runs (auto resolved): config.json, the checkpoints (a resume
        # on another kind of GPU must match) and the results' config record it.
        cfg = cfg.model_copy(update={"precision": resolve_precision(cfg.precision, device).name})
        return _run(cfg, out, run_dir, resume, command_line, progress and ranks.is_main,
                    replay, workers, on_epoch_end, ranks, device, session_start)
    finally:
        if created_group:
            dist.destroy_process_group()


def _run(cfg, out, run_dir, resume, command_line, progress, replay, workers, on_epoch_end,
         ranks: Ranks, device: torch.device, session_start: float) -> EvaluationResults:

    files = run_files(run_dir, out, resume)
    ranks.from_main(files.check)
    if cfg.model not in MODELS:  # fail before a possibly long dataset download
        raise HbaError(f"unknown model '{cfg.model}' (known: {choices(MODELS)})")
    dataset_family(cfg.dataset)
    policy = resolve_policy(cfg.policy)
    data = ranks.main_first(lambda: load_training_data(cfg))
    if cfg.init_weights is not None:   # a file that does not fit fails before anything is written
        from .nets import build_model
        load_network_weights(build_model(cfg.model, data.num_classes), Path(cfg.init_weights),
                             cfg.model)
    workers = default_workers(ranks) if workers is None else workers
    ranks.from_main(files.acquire)   # rank 0 creates and locks the run directory
    failed = True
    try:
        with file_errors_explained():
            final = _run_seeds(cfg, out, run_dir, resume, command_line, progress, replay,
                               workers, on_epoch_end, ranks, device, session_start, policy, data)
        failed = False
        return final
    finally:
        if ranks.is_main:
            files.release(failed)


def _run_seeds(cfg, out, run_dir, resume, command_line, progress, replay, workers, on_epoch_end,
               ranks: Ranks, device: torch.device, session_start: float, policy: Policy,
               data: TrainingData) -> EvaluationResults:
    if ranks.is_main:
        atomic_write_json(run_dir / CONFIG_NAME, cfg.model_dump(mode="json"))

    finished: list[SeedResult] = []
    log: list[EpochRecord] = []

    def write_log(seed_records: list[EpochRecord]) -> None:
        if ranks.is_main:
            atomic_write_text(run_dir / LOG_NAME, dataclass_csv_text(log + seed_records, EpochRecord))

    def results() -> EvaluationResults:
        return EvaluationResults(
            policy=cfg.policy, dataset=cfg.dataset, model=cfg.model,
            train_images=int(data.train_labels.shape[0]),
            test_images=int(data.test_labels.shape[0]), per_seed=finished,
            summary=Summary.of(finished), config=cfg.model_dump(mode="json"),
            provenance=EvaluationProvenance(
                versions=package_versions(), device=device_description(device),
                world_size=ranks.world_size, command=command_line, image_size=data.image_size,
                wall_seconds=round(time.perf_counter() - session_start, 3),
                created=datetime.now(timezone.utc),
                schedule=None if policy.schedule is None or policy.schedule.provenance is None
                else policy.schedule.provenance.model_dump(mode="json")))

    def on_epoch(seed_records: list[EpochRecord]) -> None:
        write_log(seed_records)
        if on_epoch_end is not None:
            on_epoch_end(seed_records[-1])

    with EvaluateProgress(progress, cfg.epochs * len(cfg.seeds)) as bar:
        if cfg.compile:
            bar.print(COMPILING_NOTE)
        for seed in cfg.seeds:
            path = seed_checkpoint_path(run_dir, seed)
            payload = ranks.from_main(lambda: read_seed_checkpoint(path, cfg, policy) if resume else None)
            if payload is not None and payload["result"] is not None:
                result = SeedResult(**payload["result"])
                bar.print(f"seed {seed}: finished earlier, test error {result.test_error:.2f}%")
                bar.advance(cfg.epochs)
                log.extend(EpochRecord(**r) for r in payload["records"])
            else:
                if payload is not None:
                    bar.advance(payload["epochs_done"])
                result, records = _train_seed(cfg, seed, data, policy, device, ranks, run_dir,
                                              payload, replay, workers, bar, on_epoch)
                log.extend(records)
            finished.append(result)
            write_log([])
            final = results()   # written after every seed: an interrupted run keeps its seeds
            if ranks.is_main:
                atomic_write_json(out, final.model_dump(mode="json"))
    if ranks.is_main:
        bar.print(results_table(final))
        bar.print(f"results written to {out} (per-epoch log and checkpoints in {run_dir})")
    return final
