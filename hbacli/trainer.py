"""Training one target network for ``hba evaluate``: the data it trains on, and the trainer.

Training set. A reduced dataset (``reduced-*``) trains on its reduced training split (the
same 4,000 images a search with the same ``split_seed`` trained on, its validation images held
out); any other dataset holds no validation images out (``val_size`` 0 unless set), so it
trains on the whole original training set — training and validation merged, as the paper's
final numbers do — or on ``train_size`` images drawn from all of it. The test set is used once
per seed, after training, for the reported numbers.

Recipe. SGD with momentum and nesterov, weight decay on every parameter, the learning rate
moved every step (cosine to 0, or ×0.1 at the milestone epochs), the last partial batch of an
epoch dropped. On CUDA: autocast (``--precision``: ``auto`` is bf16 on GPUs with native bf16,
compute capability ≥ 8.0, else fp16 with a GradScaler; fp32 on the CPU), channels_last, the
training set resident on the device as uint8, the schedule replayed batched on the device; a
step never waits for the host (losses and accuracies accumulate on the device and are read once
per epoch), except fp16's GradScaler, which reads its inf check back once per step.

Randomness. Seed s fixes the initial weights (``torch.manual_seed(s)`` before the model is
built) and the batch order; every random stream of epoch e — the policy's, the baseline
pipeline's, DataLoader workers', torch's global generator — is reseeded at the start of the
epoch from (s, e, rank). ``state_dict()`` (model, optimiser, LR scheduler, gradient scaler) and
the epoch are therefore all a resumed seed needs to continue exactly as the uninterrupted run
would have (on CPU; CUDA kernels may be nondeterministic). With all probabilities zero a
schedule trains bit-identically to ``cutout``: the policy draws from its own generator.

Data parallel (torchrun): the network is DDP-wrapped (``distributed.wrap_for_training``), each
rank trains on its shard of every global batch (``batches``), and the test numbers are summed
over the ranks' shares of the test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .baselines import TrainingPolicy, torchvision_policy
from .batches import DeviceBatches, PerImageBatches
from .checkpoint import load_network_weights
from .datasets import load_dataset
from .distributed import Ranks, wrap_for_training
from .errors import HbaError
from .nets import build_model
from .pipeline import BaselinePipeline
from .policy import default_kernels
from .presets import EvaluateConfig, ReplayMode, lr_factor
from .replay import ScheduleAugmenter, ScheduleTransform, SpaceReplay
from .runtime import memory_format, resolve_precision
from .seeds import Stream, derive_seed
from .space_kernels import check_dropout_sites


@dataclass
class TrainingData:
    """The images to train on and to test on, uint8 on the CPU, and what the pipeline needs."""

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
    # A reduced dataset keeps the search's held-out validation images out of its training set
    # (same split_seed, same 4,000 images); a full dataset holds nothing out.
    val_size = cfg.val_size if cfg.val_size is not None else (
        None if cfg.dataset.startswith("reduced-") else 0)
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, val_size, cfg.split_seed,
                          image_size=cfg.image_size)
    if splits.files is not None:
        raise HbaError(f"{cfg.dataset} is streamed from image files (too large for memory), "
                       "which hba evaluate does not train on yet; use an in-memory dataset "
                       "(e.g. reduced-imagenet, or a smaller --image-size)")
    return TrainingData(family=splits.family, num_classes=splits.num_classes,
                        mean=splits.mean, std=splits.std, train_images=splits.train_images,
                        train_labels=splits.train_labels, test_images=splits.test_images,
                        test_labels=splits.test_labels, image_size=splits.image_size)


@dataclass(frozen=True)
class TrainingSetup:
    """What every seed of an evaluation trains with: the settings, data and policy, this
    process's device and rank, and how a per-image policy runs (``replay``, ``workers``)."""

    cfg: EvaluateConfig
    data: TrainingData
    policy: TrainingPolicy
    device: torch.device
    ranks: Ranks = Ranks()
    replay: ReplayMode = "batched"
    workers: int = 1


class SeedTrainer:
    """One target network trained with one policy from one seed. Knows nothing of files."""

    def __init__(self, setup: TrainingSetup, seed: int):
        cfg, data, device, ranks = setup.cfg, setup.data, setup.device, setup.ranks
        self.cfg, self.seed, self.data, self.device, self.ranks = cfg, seed, data, device, ranks
        self.memory_format = memory_format(device)
        torch.manual_seed(seed)
        self.model = build_model(cfg.model, data.num_classes)
        if cfg.init_weights is not None:
            load_network_weights(self.model, Path(cfg.init_weights), cfg.model)
        self.model.to(device=device, memory_format=self.memory_format)
        self.network = wrap_for_training(self.model, device, ranks, cfg.compile)
        self.pipeline = BaselinePipeline(data.family, data.mean, data.std,
                                         cutout=setup.policy.cutout, flip=cfg.flip)
        # A schedule of a space without the op policy (e.g. stn): its own kernels make the
        # network's input, and it sets the network's dropout rates every epoch.
        self.space_replay: SpaceReplay | None = None
        schedule = setup.policy.schedule
        if schedule is not None and not schedule.search_space.policy:
            check_dropout_sites(schedule.search_space, self.model, cfg.model)
            self.space_replay = SpaceReplay(
                schedule, cfg.epochs, self.pipeline, device,
                derive_seed(seed, ranks.rank, Stream.POLICY))
        self.batches = self._batches(setup.policy, setup.replay, setup.workers)
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
        self.generator = torch.Generator(device=device)   # the baseline pipeline's

    def _batches(self, policy: TrainingPolicy, replay: ReplayMode,
                 workers: int) -> DeviceBatches | PerImageBatches:
        """Per image in DataLoader workers for torchvision's baselines and ``--replay
        per-image``; else batched on the device."""
        d, cfg = self.data, self.cfg
        rank_seed = derive_seed(self.seed, self.ranks.rank, Stream.POLICY)
        if policy.per_image_baseline or (policy.name == "schedule" and replay == "per-image"
                                         and self.space_replay is None):
            transform = (torchvision_policy(policy.name, d.family) if policy.schedule is None
                         else ScheduleTransform(policy.schedule, cfg.epochs, seed=rank_seed))
            return PerImageBatches(d.train_images, d.train_labels, transform, cfg.batch_size,
                                   self.device, self.seed, self.ranks, workers)
        augmenter = None
        if policy.schedule is not None and self.space_replay is None:
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
        if self.space_replay is not None:
            self.space_replay.set_epoch(epoch)
            self.space_replay.set_dropout_rates(self.model)
        self.network.train()
        sums = torch.zeros(3, device=self.device)   # loss·n, correct, n
        for images, labels in self.batches:
            x = (self.pipeline.train(images, generator=self.generator)
                 if self.space_replay is None else self.space_replay(images))
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
