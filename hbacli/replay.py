"""Replaying a schedule in any training loop: a batched on-device augmenter and a per-image
transform, both stretched linearly to the training length and moved along with ``set_epoch``.

    from hbacli.replay import ScheduleAugmenter, ScheduleTransform, load_schedule

    schedule = load_schedule("schedule.json")
    augment = ScheduleAugmenter(schedule, epochs=200, device="cuda", seed=0)
    for epoch in range(200):
        augment.set_epoch(epoch)
        for images, labels in batches:          # uint8 N×C×H×W on the GPU
            images = augment(images)            # the policy; then flip/crop/Cutout/standardise

Epochs are numbered from 0; an epoch outside the training length is clipped into it.

Schedules of other search spaces (``spaces.py``; e.g. ``stn``: colour jitter, Cutout holes,
input dropout and the network's dropout rates) replay with ``SpaceReplay``, which gives the
epoch's values by name, the network's dropout rates (``dropout_rates()``, or set them on a
network with ``nets.dropout`` sites: ``set_dropout_rates(model)``) and the space's augmentation
of whole uint8 batches, standardisation included:

    replay = SpaceReplay(schedule, epochs=200, pipeline=BaselinePipeline("cifar", mean, std))
    for epoch in range(200):
        replay.set_epoch(epoch)
        replay.set_dropout_rates(model)         # or read replay.dropout_rates()
        for images, labels in batches:
            x = replay(images)                  # float, standardised: the network's input

Images. uint8 (0–255), or float in [0, 1] as torchvision's convention (``ToTensor``,
``v2.ToDtype(scale=True)``): float images are augmented as round(255·x) and come back in
[0, 1], their dtype kept; float values outside [0, 1] (0–255 floats included) are refused
with an HbaError, never clipped (``policy.augment_batch``).

Randomness. ``ScheduleAugmenter`` reseeds its generator in ``set_epoch`` from (seed, epoch), so
epoch e's draws do not depend on what ran before: a resumed run replays them exactly, with no
generator state to save. ``ScheduleTransform`` with a seed does the same per (seed, epoch,
DataLoader worker), mixed with the worker's own seed, so a DataLoader with a seeded
``generator`` repeats exactly; without a seed it draws fresh entropy in the main process and
the worker's seed in a worker (distinct in every worker either way).

DataLoader workers. ``ScheduleTransform`` keeps the epoch in a one-element tensor in shared
memory. Workers (forked or spawned, persistent or not) hold the same memory, so
``transform.set_epoch(e)`` in the main process reaches them; call it before ``iter(loader)``,
because workers start preparing the epoch's first batches as soon as the iterator exists.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import HbaError
from .nets.dropout import set_dropout_rates
from .pipeline import BaselinePipeline
from .policy import PolicyTransform, augment_batch
from .schedule import Schedule, load_schedule, stretch
from .seeds import Stream, derive_seed

__all__ = ["ScheduleAugmenter", "ScheduleTransform", "SpaceReplay", "load_schedule", "stretch",
           "schedule_tables"]


def _needs_policy(schedule: Schedule, what: str) -> None:
    if not schedule.search_space.policy:
        raise HbaError(f"{what} replays the op policy of the hba space; this schedule is of the "
                       f"{schedule.space_name} space: use SpaceReplay")


def schedule_tables(schedule: Schedule, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and magnitudes (epochs, 30) after stretching to ``epochs``.

    Magnitudes of probability-only ops (NaN in the file) become 0: the policy ignores them, and
    a NaN must not travel into tensor code.
    """
    stretched = stretch(schedule, epochs)
    return stretched.probabilities(), np.nan_to_num(stretched.magnitudes(), nan=0.0)


def _clip_epoch(epoch: int, epochs: int) -> int:
    return min(max(int(epoch), 0), epochs - 1)


class ScheduleAugmenter:
    """The schedule's policy on whole N×C×H×W batches on their device: uint8, or float in
    [0, 1] (returned in [0, 1]; see the module docstring).

    ``device`` is where the tables and the generator live; ``None`` takes the device of the
    first batch. ``kernels``: see ``policy.augment_from_uniform`` (None: the device's default).
    On uint8 batches the call never synchronises with the host; a float batch costs one
    synchronisation (its [0, 1] range check).
    """

    def __init__(self, schedule: Schedule, epochs: int, device=None, seed: int = 0,
                 kernels: str | None = None):
        _needs_policy(schedule, type(self).__name__)
        probabilities, magnitudes = schedule_tables(schedule, epochs)
        self.epochs = epochs
        self.seed = seed
        self.epoch = 0
        self.kernels = kernels
        self._host_tables = (torch.tensor(probabilities, dtype=torch.float32),
                             torch.tensor(magnitudes, dtype=torch.float32))
        self._device: torch.device | None = None
        if device is not None:
            self._place(torch.device(device))

    def _place(self, device: torch.device) -> None:
        self._device = device
        self._probabilities, self._magnitudes = (t.to(device) for t in self._host_tables)
        self._generator = torch.Generator(device=device)
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s probabilities and magnitudes and its random stream."""
        self.epoch = _clip_epoch(epoch, self.epochs)
        if self._device is not None:
            self._generator.manual_seed(derive_seed(self.seed, self.epoch, Stream.POLICY))

    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's probabilities (30,) and magnitudes (30,), physical units."""
        return self._probabilities[self.epoch], self._magnitudes[self.epoch]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._device is None:
            self._place(images.device)
        probabilities, magnitudes = self.current()
        return augment_batch(images, probabilities, magnitudes, generator=self._generator,
                             kernels=self.kernels)


class ScheduleTransform:
    """The schedule's policy on one image (PIL, or C×H×W tensor: uint8, or float in [0, 1]),
    for torchvision pipelines and DataLoader workers. See the module docstring for how
    ``set_epoch`` reaches workers."""

    def __init__(self, schedule: Schedule, epochs: int, seed: int | None = None):
        _needs_policy(schedule, type(self).__name__)
        self.epochs = epochs
        self.seed = seed
        self._probabilities, self._magnitudes = schedule_tables(schedule, epochs)
        self._shared_epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._policy_key: tuple[int, int] | None = None
        self._policy: PolicyTransform | None = None

    @property
    def epoch(self) -> int:
        return int(self._shared_epoch)

    def set_epoch(self, epoch: int) -> None:
        self._shared_epoch.fill_(_clip_epoch(epoch, self.epochs))

    def _policy_for(self, epoch: int) -> PolicyTransform:
        """The per-image policy of this epoch in this process (worker), built once per epoch."""
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if self._policy_key != (epoch, worker):
            seed = None if self.seed is None else derive_seed(self.seed, epoch, worker,
                                                                  Stream.WORKERS)
            self._policy = PolicyTransform(self._probabilities[epoch], self._magnitudes[epoch],
                                           seed=seed)
            self._policy_key = (epoch, worker)
        return self._policy

    def __call__(self, img):
        return self._policy_for(self.epoch)(img)

    def __getstate__(self) -> dict:
        # A pickled copy (a spawned worker) builds its own per-epoch policy.
        return {**self.__dict__, "_policy_key": None, "_policy": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epochs={self.epochs}, epoch={self.epoch}, seed={self.seed})"


class SpaceReplay:
    """A schedule of any search space on whole uint8 N×C×H×W batches on their device: the
    space's kernels at the epoch's values (every example the same), standardisation included
    (``pipeline``), and the epoch's dropout rates for the network. See the module docstring.

    For the ``hba`` space this is the policy followed by ``pipeline.train`` (flip, crop,
    Cutout); ``ScheduleAugmenter`` gives the policy alone, uint8 in and out.
    """

    def __init__(self, schedule: Schedule, epochs: int, pipeline: BaselinePipeline,
                 device=None, seed: int = 0, kernels: str | None = None):
        from .space_kernels import space_kernels

        self.space = schedule.search_space
        self.epochs, self.seed, self.epoch = epochs, seed, 0
        self.pipeline = pipeline
        self.kernels = space_kernels(self.space, kernels)
        self._table = stretch(schedule, epochs).values()      # (epochs, |λ|), physical
        self._device: torch.device | None = None
        if device is not None:
            self._place(torch.device(device))

    def _place(self, device: torch.device) -> None:
        self._device = device
        self._values = torch.tensor(self._table, dtype=torch.float32, device=device)
        self._generator = torch.Generator(device=device)
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s values and its random stream."""
        self.epoch = _clip_epoch(epoch, self.epochs)
        if self._device is not None:
            self._generator.manual_seed(derive_seed(self.seed, self.epoch, Stream.POLICY))

    def values(self) -> dict[str, float]:
        """This epoch's value of every hyperparameter, by its label (``SearchSpace.labels``)."""
        return dict(zip(self.space.labels(), self._table[self.epoch].tolist(), strict=True))

    def dropout_rates(self) -> dict[str, float]:
        """This epoch's dropout rate of each network site the space sets."""
        row = self._table[self.epoch]
        return {scalar.site: float(row[self.space.policy_size + i])
                for i, scalar in enumerate(self.space.scalars) if scalar.site is not None}

    def set_dropout_rates(self, model: torch.nn.Module) -> None:
        """Set this epoch's rates on the network's dropout sites (``nets.dropout``)."""
        set_dropout_rates(model, self.dropout_rates())

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._device is None:
            self._place(images.device)
        values = self._values[self.epoch].expand(images.shape[0], -1)
        return self.kernels.train(images, values, self.pipeline, generator=self._generator)
