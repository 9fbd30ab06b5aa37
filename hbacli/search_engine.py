"""The HBA search engine: Algorithm 1 of the paper on one device (or one rank under torchrun).
It knows nothing of files, progress or the command line (``search.py`` runs it). Over 400
lines because this docstring keeps the choices the paper leaves open next to the code.

One *round* is T_train hypernetwork steps followed by T_val λ steps. An *epoch* is one pass
over the training loader, i.e. ``len(train_loader) // T_train`` rounds (batches left over by
that division are skipped, as ``drop_last`` skips a partial batch). Validation batches cycle
through their own loader.

Hypernetwork step (Eq. 13): each example i of a training batch gets its own λ_i = λ + ε_i,
ε_i ~ N(0, σ²) fresh every step (``perturbation=antithetic``: half the batch's images twice,
with +ε_i and −ε_i and the same random draws); the example is augmented with A(x_i; λ_i),
passed through the baseline pipeline, and through the hypernetwork at λ_i; SGD (momentum,
nesterov, weight decay) updates φ only.

λ step (Eq. 11): an unaugmented validation batch, the hypernetwork at the unperturbed λ,
Adam (constant learning rate α') on λ only. λ's gradient comes only through the hyper-layers:
the augmentation is not differentiated.

Any search space (``spaces.py``, ``--space``): λ_i's physical values drive the space's kernels
(``space_kernels``: the op policy then the baseline pipeline, or STN's jitter, Cutout, input
dropout and scaling) and, per example, the network's dropout sites (``nets.dropout``). The λ
step runs without dropout, as Self-Tuning Networks' ``eval()`` validation step does.
``perturbation_scale=learned`` is STN's perturbation: ε_i ~ N(0, diag(softplus(s)²)) with s
learned by the same Adam on the λ step, which then sees λ + softplus(s)·ε too and maximises
−loss + τ·entropy (``entropy_weight``).

What the hyper-layers are fed (``hyper_input``): ``centred`` (default) feeds λ − λ0, λ0 the
search's starting λ; ``raw`` feeds λ as the paper writes it. Both are the paper's function
family, φ0 + diag(φV(λ − λ0))φU = [φ0 − diag(φV λ0)φU] + diag(φV λ)φU; only the optimisation
geometry differs (see ``SearchEngine.hyper_input``). Measured on digits (benchmarks/quality.py,
3 seeds, README "Does the search work?"): raw makes every coordinate rise together (mean
probability 0.05 → 0.11); centred moves them both ways (0.05 → 0.057).

BatchNorm on the λ step (``val_bn_mode``): ``train`` (default) normalises the validation batch
with its own statistics; ``eval`` uses the running statistics gathered on augmented training
batches. Self-Tuning Networks' ``eval()`` is no guide here: its networks have no BatchNorm.
Measured with centred input on digits (harmful-op check of benchmarks/quality.py, 8 epochs,
seeds 0–2): ``train`` pushed the destructive op down in 5 of 6 copies, ``eval`` in 2 of 6; the
searched schedules' test error was 1.76 against 2.02 (3 seeds; ``none``: 1.26). φV starts at
N(0, 0.01²) (``hyper_v_init``): 0 gave no clearer signal.

Choices the paper leaves open, with their defaults: ``warmup_epochs=0`` (STN warms up with
hypernetwork steps only; the paper does not; 2 or 4 warm-up epochs did not help the
harmful-op check); during warm-up the validation batches are still evaluated (no step) so the
log shows comparable losses.

Reproducibility: the batch order of epoch e is a function of (seed, e) only
(``DeviceLoader.set_epoch``); the noise/augmentation generator, torch's global generators,
both optimisers, their gradient scalers (fp16) and the LR scheduler are in ``state_dict()``,
which the search checkpoints after every epoch. A resumed run therefore repeats the
uninterrupted run exactly (on CPU; CUDA kernels may be nondeterministic).

Precision (``--precision``, ``runtime.resolve_precision``): ``auto`` is bf16 autocast on GPUs
with native bf16 (compute capability ≥ 8.0), fp16 autocast on older GPUs, fp32 on the CPU. Under
fp16 each optimiser has its own GradScaler (``sgd_scaler`` for φ, ``adam_scaler`` for λ): the
two steps back-propagate different losses into different parameters (the training loss into φ;
the validation loss, through the hyper-layers only, into λ's 54 entries), so each keeps the
scale its own gradients allow, and an overflow in one step neither skips nor shrinks the
other's (one shared scaler, updated after each step, would be correct too, but tuned to
both).

Performance: data are resident on the device as uint8, augmentation is batched, the forward
pass runs under autocast (above) with channels_last on CUDA, and losses/accuracies accumulate in
device tensors that are read once per epoch — no host-device synchronisation inside a step
(under fp16 the GradScaler reads its inf check back once per optimiser step). CPU threads are
the caller's (``hba search`` uses one: ``runtime.use_cpu_threads``).

Data parallel (torchrun). Each process holds a replica of the hypernetwork and the same λ.
Every rank iterates the same global batch order (the loaders' seeds do not depend on the rank)
and takes its contiguous 1/N share of each global training and validation batch, so a global
step sees the same images as one process would (``batch_size`` is the global batch; one not
divisible by N is refused). The φ step runs through DistributedDataParallel (gradients averaged
over ranks). The λ step calls the bare hypernetwork (φ is frozen there, and DDP's reducer must
not wait for φ's gradients), then averages λ's gradient over the ranks (equal shares, equal
weights) before Adam's step, so every rank holds the same λ and the same Adam state. ε, the
policy's and the baseline pipeline's randomness (and torch's global generator) come from
per-rank streams seeded by (seed, rank). The epoch's loss and accuracy sums are all-reduced at
the epoch's one synchronisation. BatchNorm normalises with each rank's share (per-rank batch
statistics; running statistics are rank 0's, broadcast by DDP), and the noise draws differ from
a one-process run's: the schedule therefore matches the one-process run with the same global
batch closely, not exactly (entry 0 is identical). ``--compile`` compiles the DDP wrapper (DDP
first, as ``distributed.wrap_for_training`` orders it); the λ step then runs eagerly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import ImageSplits
from .distributed import Ranks, shard_size, wrap_for_training
from .errors import HbaError
from .hyper import to_hypernetwork
from .loaders import make_loader
from .nets import build_model
from .nets.dropout import set_dropout_rates
from .pipeline import BaselinePipeline
from .policy import default_kernels
from .presets import SearchConfig, lr_factor
from .runtime import compile_network, memory_format, resolve_precision
from .seeds import Stream, derive_seed
from .space_kernels import check_dropout_sites, dropout_rates, space_kernels, to_physical
from .spaces import get_space

# ---------------------------------------------------------------------------------------------
# Pure helpers: feasibility, the starting point
# ---------------------------------------------------------------------------------------------

def rounds_per_epoch(train_batches: int, val_batches: int, cfg: SearchConfig) -> int:
    """Rounds in one pass over the training data (``train_batches`` full batches); HbaError
    when the training or validation data are too small for the batch size."""
    if train_batches < cfg.train_steps:
        raise HbaError(
            f"batch size {cfg.batch_size} is too large for the training data: an epoch needs at "
            f"least train_steps={cfg.train_steps} full batches, the data give {train_batches} "
            "(lower --batch-size or raise --train-size)")
    if cfg.val_steps > 0 and val_batches == 0:
        raise HbaError(
            f"batch size {cfg.batch_size} is larger than the validation data "
            "(lower --batch-size or raise --val-size)")
    return train_batches // cfg.train_steps


# A warm start's values are kept this far inside their ranges (a fraction of the range): a
# probability of exactly 0 or 1 would put λ at ±∞, where it could never move; at ±6.9 logits
# Adam (α' = 0.03) brings it back into play within a few hundred λ steps.
INIT_FRACTION_MARGIN = 1e-3


def starting_lambda(cfg: SearchConfig) -> np.ndarray:
    """λ0, where the search starts: the space's starting point (for the policy the paper's,
    every hyperparameter at 0.95·lo + 0.05·hi), or epoch ``init_epoch`` of the schedule
    ``init`` (a warm start; it must be of the same space)."""
    searched = get_space(cfg.space)
    if cfg.init is None:
        return searched.initial_lambda()
    from .schedule import load_schedule

    schedule = load_schedule(cfg.init)
    if schedule.space_name != cfg.space:
        raise HbaError(f"--init {cfg.init} is a schedule of the {schedule.space_name} space; "
                       f"this search is in the {cfg.space} space (--space {cfg.space})")
    if cfg.init_epoch >= schedule.epochs:
        raise HbaError(f"--init-epoch {cfg.init_epoch} is past the end of {cfg.init} "
                       f"({schedule.epochs} epochs: 0..{schedule.epochs - 1})")
    return searched.to_lambda(schedule.values_at(cfg.init_epoch), eps=INIT_FRACTION_MARGIN)


def inverse_softplus(value: float) -> float:
    """x with softplus(x) = value (> 0): the learned perturbation scale's parameter."""
    return value + math.log(-math.expm1(-value))


# ---------------------------------------------------------------------------------------------
# The engine: one hypernetwork, one λ, the two optimisers, the steps
# ---------------------------------------------------------------------------------------------

@dataclass
class EpochMetrics:
    train_loss: float
    val_loss: float        # NaN when the run has no λ steps (val_steps = 0)
    val_accuracy: float    # fraction in [0, 1]
    train_images: int


class SearchEngine:
    """Algorithm 1 on one device (one rank of several under torchrun: see the module's
    docstring). Knows nothing of files, progress or the CLI."""

    def __init__(self, cfg: SearchConfig, splits: ImageSplits, device: torch.device,
                 ranks: Ranks | None = None):
        self.cfg = cfg
        self.device = device
        self.ranks = ranks = ranks or Ranks()
        self.share = shard_size(cfg.batch_size, ranks)   # this rank's images of a global batch
        self.memory_format = memory_format(device)
        self.rounds = rounds_per_epoch(len(splits.train_labels) // cfg.batch_size,
                                       len(splits.val_labels) // cfg.batch_size, cfg)
        # Both loaders shuffle and drop the last partial batch: every step has one shape.
        self.train_loader = make_loader(splits, "train", cfg.batch_size, device, shuffle=True,
                                        drop_last=True, seed=cfg.seed)
        self.val_loader = make_loader(splits, "val", cfg.batch_size, device, shuffle=True,
                                      drop_last=True, seed=cfg.seed + 1)
        self.steps_per_epoch = self.rounds * cfg.train_steps
        self.pipeline = BaselinePipeline(splits.family, splits.mean, splits.std, cutout=True,
                                         flip=cfg.flip)
        self.space = get_space(cfg.space)

        model = build_model(cfg.model, splits.num_classes)
        check_dropout_sites(self.space, model, cfg.model)
        self.hypernet = to_hypernetwork(model, cfg.strategy, self.space.size, cfg.hyper_v_init)
        self.hypernet.to(device=device, memory_format=self.memory_format)
        if ranks.parallel:
            # the φ step's module: DDP, then compiled (the λ step calls the bare hypernet)
            self.train_net = wrap_for_training(self.hypernet, device, ranks, cfg.compile)
        else:
            self.train_net = self.hypernet
            if cfg.compile:
                compile_network(self.hypernet, device)
        self.kernels = space_kernels(self.space, default_kernels(device, cfg.compile))
        self._phi = list(self.hypernet.parameters())  # frozen during each λ step
        # λ0: the search's starting point, and the origin the hyper-layers see λ from.
        self.lam_origin = torch.tensor(starting_lambda(cfg), dtype=torch.float32, device=device)
        self.lam = self.lam_origin.clone().requires_grad_(True)
        # STN's learned perturbation scale: softplus of this, one per hyperparameter.
        self.learned_scale = cfg.perturbation_scale == "learned"
        self.scale_parameter = torch.full_like(self.lam_origin, inverse_softplus(cfg.sigma)
                                               if self.learned_scale else 0.0)
        self.scale_parameter.requires_grad_(self.learned_scale)

        self.sgd = torch.optim.SGD(self.hypernet.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov and cfg.momentum > 0,
                                   weight_decay=cfg.weight_decay)
        steps_per_epoch = self.steps_per_epoch
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.sgd, lambda step: lr_factor(step, cfg, steps_per_epoch))
        self.adam = torch.optim.Adam([self.lam, self.scale_parameter] if self.learned_scale
                                     else [self.lam], lr=cfg.hyper_lr)
        # fp16: one GradScaler per optimiser (see the module's docstring); else pass-throughs.
        self.precision = resolve_precision(cfg.precision, device)
        self.sgd_scaler = self.precision.grad_scaler()
        self.adam_scaler = self.precision.grad_scaler()
        # One generator drives ε, the policy's randomness and the baseline pipeline's.
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self._rank_seed(Stream.NOISE))
        if ranks.parallel:   # after the model is built: every rank starts from the same φ
            torch.manual_seed(self._rank_seed(Stream.GLOBAL))
        self._reset_sums()

    def _rank_seed(self, stream: int) -> int:
        """The seed itself in one process; under torchrun a stream of (seed, rank)."""
        if not self.ranks.parallel:
            return self.cfg.seed
        return derive_seed(self.cfg.seed, self.ranks.rank, stream)

    def _share(self, images: torch.Tensor, labels: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's contiguous share of a global batch (the whole batch in one process)."""
        if not self.ranks.parallel:
            return images, labels
        start = self.ranks.rank * self.share
        return images[start:start + self.share], labels[start:start + self.share]

    # -- the two steps ----------------------------------------------------------------------

    def hyper_input(self, lam: torch.Tensor) -> torch.Tensor:
        """What the hyper-layers are fed for λ: λ − λ0 (``centred``) or λ (``raw``).

        The family of functions is the same: φ0 + diag(φV(λ − λ0))φU = [φ0 − diag(φV λ0)φU] +
        diag(φV λ)φU. Only the geometry of the optimisation differs. Fed raw logits (all ≈
        −2.94 at the start), φV learns a large component along the all-ones direction, the
        mean of λ becomes a global knob on the hyper-BN's γ and β, and the λ gradient then
        moves all 54 coordinates together (measured on digits: cosine −0.84 to −0.90 with the
        all-ones vector, every probability rising, a destructive op included). Centred, the
        hyper-layers start exactly at φ0 for the unperturbed λ and learn only from how the
        examples' λ_i differ from it.
        """
        return lam - self.lam_origin if self.cfg.hyper_input == "centred" else lam

    def perturbation_scale(self) -> torch.Tensor | float:
        """The std of ε: sigma, or (learned) softplus of the scale parameter, per coordinate."""
        if self.learned_scale:
            return F.softplus(self.scale_parameter)
        return self.cfg.sigma

    def _noise(self, rows: int) -> torch.Tensor:
        return torch.randn(rows, self.space.size, device=self.device, generator=self.generator)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Eq. 13: SGD on φ with per-example λ_i = λ + ε_i driving augmentation, dropout rates
        and network."""
        images, labels = self._share(images, labels)
        antithetic = self.cfg.perturbation == "antithetic"
        if antithetic:   # the batch's first half, each image twice: with +ε, then with −ε
            half = images.shape[0] // 2
            images, labels = images[:half].repeat(2, 1, 1, 1), labels[:half].repeat(2)
        noise = self._noise(images.shape[0] // (1 + antithetic))
        if antithetic:
            noise = torch.cat([noise, -noise])
        scale = self.perturbation_scale()
        lam_i = self.lam.detach() + (scale.detach() if self.learned_scale else scale) * noise
        values = to_physical(self.space, lam_i)
        if antithetic:   # common random numbers: both halves draw the same ops, signs, crops
            state = self.generator.get_state()
            first = self._augmented(images[:half], values[:half])
            self.generator.set_state(state)
            x = torch.cat([first, self._augmented(images[half:], values[half:])])
        else:
            x = self._augmented(images, values)
        if self.space.dropout_sites:   # each example's own rates, from its λ_i
            set_dropout_rates(self.hypernet, dropout_rates(self.space, values))
        self.train_net.train()
        with self.precision.autocast():
            loss = F.cross_entropy(self.train_net(x, self.hyper_input(lam_i)), labels)
        self.sgd.zero_grad(set_to_none=True)
        self.sgd_scaler.scale(loss).backward()
        self.sgd_scaler.step(self.sgd)   # skipped (fp16) when a gradient overflowed
        self.sgd_scaler.update()
        self.lr_scheduler.step()
        self._train_loss_sum += loss.detach() * labels.shape[0]
        self._train_count += labels.shape[0]

    def _augmented(self, images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The space's kernels at each example's physical values (the policy then the baseline
        pipeline, or STN's augmentation): the network's input."""
        x = self.kernels.train(images, values, self.pipeline, generator=self.generator)
        return x.contiguous(memory_format=self.memory_format)

    def _dropout_off(self) -> None:
        """The λ step and validation run without dropout: STN's ``eval()`` there (its networks
        have no BatchNorm, so that is all its ``eval()`` changes)."""
        if self.space.dropout_sites:
            set_dropout_rates(self.hypernet, dict.fromkeys(self.space.dropout_sites, 0.0))

    def hyper_step(self, images: torch.Tensor, labels: torch.Tensor, update: bool = True) -> None:
        """Eq. 11: Adam on λ from an unaugmented validation batch at the unperturbed λ."""
        images, labels = self._share(images, labels)
        x = self.pipeline.eval(images).contiguous(memory_format=self.memory_format)
        self.hypernet.train(self.cfg.val_bn_mode == "train")
        self._dropout_off()
        hyperparameters = self.adam.param_groups[0]["params"]   # λ (and a learned scale)
        # φ frozen: a compiled network then traces a backward for λ alone, not φ's too (eager
        # autograd skips φ's gradients anyway)
        with self._phi_frozen():
            with torch.set_grad_enabled(update), self.precision.autocast():
                lam = self.lam
                if self.learned_scale:   # STN: E over λ + σε of the loss, minus τ·entropy
                    lam = lam + self.perturbation_scale() * self._noise(x.shape[0])
                logits = self.hypernet(x, self.hyper_input(lam))
                loss = F.cross_entropy(logits, labels)
                objective = loss - self.cfg.entropy_weight * self._entropy() \
                    if self.learned_scale else loss
            if update:
                self.adam.zero_grad(set_to_none=True)
                # φ gets no gradient from validation data
                self.adam_scaler.scale(objective).backward(inputs=hyperparameters)
                if self.ranks.parallel:   # every rank steps with the mean: λ stays identical
                    for hyperparameter in hyperparameters:
                        self.ranks.sum(hyperparameter.grad).div_(self.ranks.world_size)
                self.adam_scaler.step(self.adam)
                self.adam_scaler.update()
        self.hypernet.train()
        self._val_loss_sum += loss.detach() * labels.shape[0]
        self._val_correct += (logits.detach().argmax(dim=1) == labels).sum()
        self._val_count += labels.shape[0]

    def _entropy(self) -> torch.Tensor:
        """Entropy of the perturbation N(0, diag(σ²)): Σ log(σ·√(2πe)) (STN's compute_entropy)."""
        return torch.log(self.perturbation_scale() * math.sqrt(2 * math.pi * math.e)).sum()

    @contextlib.contextmanager
    def _phi_frozen(self):
        for parameter in self._phi:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in self._phi:
                parameter.requires_grad_(True)

    @torch.no_grad()
    def validation_loss(self, lam: torch.Tensor) -> float:
        """Mean loss of the hypernetwork at ``lam`` over the validation set (λ-step BN mode;
        this process's whole set, not a share)."""
        self.val_loader.set_epoch(0)
        self.hypernet.train(self.cfg.val_bn_mode == "train")
        self._dropout_off()
        total, count = torch.zeros((), device=self.device), 0
        for images, labels in self.val_loader:
            x = self.pipeline.eval(images).contiguous(memory_format=self.memory_format)
            with self.precision.autocast():
                total += F.cross_entropy(self.hypernet(x, self.hyper_input(lam)), labels,
                                         reduction="sum")
            count += labels.shape[0]
        self.hypernet.train()
        return float(total) / count

    # -- one epoch ----------------------------------------------------------------------------

    def run_epoch(self, epoch: int, on_round: Callable[[], None] | None = None) -> EpochMetrics:
        """Epoch ``epoch`` (0-based): its rounds, then one read of the accumulated metrics."""
        cfg = self.cfg
        update_lambda = epoch >= cfg.warmup_epochs
        self.train_loader.set_epoch(epoch)
        train_batches = iter(self.train_loader)
        val_batches = self._validation_batches(epoch)
        self._reset_sums()
        for _ in range(self.rounds):
            for _ in range(cfg.train_steps):
                self.train_step(*next(train_batches))
            for _ in range(cfg.val_steps):
                self.hyper_step(*next(val_batches), update=update_lambda)
            if on_round is not None:
                on_round()
        return self._read_sums()

    def _validation_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation batches of epoch ``epoch``, cycling; order a function of (seed, epoch)."""
        needed = self.rounds * self.cfg.val_steps
        passes = max(1, math.ceil(needed / max(1, len(self.val_loader))))
        for k in range(passes):
            self.val_loader.set_epoch(epoch * passes + k)
            yield from self.val_loader

    def _reset_sums(self) -> None:
        zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
        self._train_loss_sum, self._val_loss_sum, self._val_correct = zero(), zero(), zero()
        self._train_count = self._val_count = 0

    def _read_sums(self) -> EpochMetrics:
        # The one host-device synchronisation of the epoch (and, under torchrun, the one
        # all-reduce of the metrics: every rank saw an equal share, so counts scale by N).
        sums = self.ranks.sum(torch.stack([self._train_loss_sum, self._val_loss_sum,
                                           self._val_correct])).tolist()
        train_count = self._train_count * self.ranks.world_size
        val = self._val_count * self.ranks.world_size or math.nan
        return EpochMetrics(train_loss=sums[0] / max(1, train_count),
                            val_loss=sums[1] / val, val_accuracy=sums[2] / val,
                            train_images=train_count)

    # -- λ as the schedule sees it ------------------------------------------------------------

    def plain_network(self) -> torch.nn.Module:
        """θ̂φ(λ) as a plain ``cfg.model``: every hyper-layer fixed at the current λ (fed as the
        hyper-layers see it, λ − λ0 when centred), in eval mode."""
        self.hypernet.eval()
        set_dropout_rates(self.hypernet, dict.fromkeys(self.space.dropout_sites))  # defaults
        try:
            return self.hypernet.to_plain(self.hyper_input(self.lam.detach()))
        finally:
            self.hypernet.train()

    def values(self) -> np.ndarray:
        """Current λ in physical units, (|λ|,) in the space's order."""
        return self.space.to_physical(self.lam.detach().cpu().double().numpy())

    @property
    def lr(self) -> float:
        return self.sgd.param_groups[0]["lr"]

    # -- checkpoint state ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "hypernetwork": self.hypernet.state_dict(),
            "lam": self.lam.detach(),
            "lam_origin": self.lam_origin,
            "scale_parameter": self.scale_parameter.detach(),
            "sgd": self.sgd.state_dict(),
            "adam": self.adam.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            # empty dicts unless fp16 (a disabled scaler has no state)
            "grad_scalers": {"sgd": self.sgd_scaler.state_dict(),
                             "adam": self.adam_scaler.state_dict()},
            "rng": self._rng_state(cuda),
        }

    def _rng_state(self, cuda: bool) -> dict[str, Any]:
        return {"torch_cpu": torch.get_rng_state(),
                "torch_cuda": torch.cuda.get_rng_state_all() if cuda else [],
                "generator": self.generator.get_state()}

    def checkpoint_state(self) -> dict[str, Any]:
        """``state_dict()``, and under torchrun every rank's random state (``rank_rng``, in rank
        order; ``rng`` stays rank 0's). Collective: every rank calls it."""
        state = self.state_dict()
        if self.ranks.parallel:
            gathered: list[Any] = [None] * self.ranks.world_size
            torch.distributed.all_gather_object(gathered, state["rng"])
            state["rank_rng"] = gathered
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hypernet.load_state_dict(state["hypernetwork"])
        with torch.no_grad():
            self.lam.copy_(state["lam"])
            self.lam_origin.copy_(state["lam_origin"])
            self.scale_parameter.copy_(state["scale_parameter"])
        self.sgd.load_state_dict(state["sgd"])
        self.adam.load_state_dict(state["adam"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.sgd_scaler.load_state_dict(state["grad_scalers"]["sgd"])
        self.adam_scaler.load_state_dict(state["grad_scalers"]["adam"])
        rng = state["rank_rng"][self.ranks.rank] if "rank_rng" in state else state["rng"]
        torch.set_rng_state(rng["torch_cpu"])
        if rng["torch_cuda"]:
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        self.generator.set_state(rng["generator"])
