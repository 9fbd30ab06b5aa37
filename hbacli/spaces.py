"""Search spaces by name: what λ holds, each hyperparameter's range, start and meaning.

A space is data. Its λ is the unconstrained vector the search optimises, laid out as

    [the augmentation policy's 54 entries, if the space has the policy]  (``space.py``'s layout)
    [its scalars, in declaration order]

and every entry with range [lo, hi] has the physical value ``lo + (hi - lo) * sigmoid(λ)``.
A *scalar* is one named hyperparameter: an augmentation strength the space's kernels read
(``space_kernels.py``), or a dropout rate the network reads at its dropout *site*
(``nets.dropout``). Adding a space is one ``SearchSpace`` here, its name in
``catalogue.SPACES`` and its kernels; its schedules then carry its scalars by name.

Spaces:
- ``hba``: the paper's space (§4.1, Table 7): PBA's policy of 15 ops in two copies; no scalars.
- ``stn``: Self-Tuning Networks' CIFAR AlexNet hyperparameters, as HBA's §4.3 uses them
  (7 for augmentation and 8 dropout rates), with STN's names, ranges and starting values
  (asteroidhouse/self-tuning-networks, cnn/util/hyperparameter.py ``create_hparams`` with
  ``--tune_all``, and cnn/hypertrain.py's defaults). STN's CIFAR pipeline has no crop, flip or
  fixed Cutout (cnn/datasets/loaders.py), so this space does not run the dataset family's
  baseline augmentation: only standardisation.

Pure numpy, no torch: reading schedules stays instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import space
from .catalogue import SPACES, choices
from .errors import HbaError

KINDS = ("augmentation", "dropout")

# A discrete hyperparameter is used as floor(value) (STN floors Cutout's length and holes in
# ``hparam_transform``). The tolerance keeps a value that sigmoid rounding left a few ulps
# under a whole number (4 → 3.9999998) on that number.
FLOOR_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Scalar:
    """One named hyperparameter of a space (not a policy op)."""

    name: str
    low: float
    high: float
    start: float                # physical value the search starts from
    unit: str
    kind: str                   # one of KINDS
    discrete: bool = False      # used as floor(value)
    site: str | None = None     # dropout applied inside the network, at this site

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not self.low <= self.start <= self.high \
                or self.low >= self.high or (self.site is not None and self.kind != "dropout"):
            raise ValueError(f"malformed hyperparameter {self}")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    policy: bool                        # λ starts with the 54 entries of the op policy
    scalars: tuple[Scalar, ...]
    baseline_augmentation: bool         # the dataset family's flip/crop/Cutout run after it
    kernels: str                        # its augmentation kernels (space_kernels.KERNELS)
    network: str | None = None          # the network its dropout sites come from

    @property
    def summary(self) -> str:
        return SPACES[self.name]

    @property
    def policy_size(self) -> int:
        return space.NUM_HYPERPARAMETERS if self.policy else 0

    @property
    def size(self) -> int:
        """|λ|."""
        return self.policy_size + len(self.scalars)

    @property
    def scalar_slice(self) -> slice:
        return slice(self.policy_size, self.size)

    @property
    def scalar_names(self) -> tuple[str, ...]:
        return tuple(scalar.name for scalar in self.scalars)

    def scalar_index(self, name: str) -> int:
        """Position of a scalar in λ."""
        return self.policy_size + self.scalar_names.index(name)

    @property
    def dropout_sites(self) -> tuple[str, ...]:
        """The network's dropout sites this space sets, in λ order."""
        return tuple(s.site for s in self.scalars if s.site is not None)

    @property
    def low(self) -> np.ndarray:
        scalars = np.array([s.low for s in self.scalars], dtype=np.float64)
        return np.concatenate([space.LAMBDA_LOW if self.policy else [], scalars])

    @property
    def high(self) -> np.ndarray:
        scalars = np.array([s.high for s in self.scalars], dtype=np.float64)
        return np.concatenate([space.LAMBDA_HIGH if self.policy else [], scalars])

    def start_values(self) -> np.ndarray:
        """Physical values the search starts from: the policy's 0.95·lo + 0.05·hi (paper), the
        scalars' declared starts."""
        policy = space.lambda_to_physical(space.initial_lambda()) if self.policy else []
        return np.concatenate([policy, [s.start for s in self.scalars]]).astype(np.float64)

    def initial_lambda(self) -> np.ndarray:
        return self.to_lambda(self.start_values())

    def to_physical(self, lam: np.ndarray) -> np.ndarray:
        """(..., |λ|) logits → physical values, each inside its range."""
        lam = np.asarray(lam, dtype=np.float64)
        self._check_size(lam.shape[-1])
        return self.low + (self.high - self.low) / (1.0 + np.exp(-lam))

    def to_lambda(self, values: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        """Inverse of ``to_physical``; values are clipped ``eps`` (a fraction of the range)
        inside their range, where λ is finite."""
        values = np.asarray(values, dtype=np.float64)
        self._check_size(values.shape[-1])
        fraction = np.clip((values - self.low) / (self.high - self.low), eps, 1 - eps)
        return np.log(fraction / (1 - fraction))

    def labels(self) -> tuple[str, ...]:
        """A short name per λ entry (for tables and logs)."""
        policy = ()
        if self.policy:
            copies = [oc.label for oc in space.OP_COPIES]
            policy = tuple(f"{c} p" for c in copies) + tuple(
                f"{copies[i]} m" for i in space.MAGNITUDE_COPY_INDEX)
        return policy + self.scalar_names

    def _check_size(self, size: int) -> None:
        if size != self.size:
            raise HbaError(f"the {self.name} space has {self.size} hyperparameters, got {size}")


def floor_discrete(value: float) -> int:
    """How a discrete hyperparameter's physical value is used (see FLOOR_TOLERANCE)."""
    return int(math.floor(value + FLOOR_TOLERANCE))


_STN_DROP_MAX = 0.9   # STN: "drop_max = 0.9 # improves stability"
_STN_START = 0.05     # STN's --start_drop, --start_indrop, --start_fcdrop, --start_hue, ...


def _conv_dropout(i: int) -> Scalar:
    return Scalar(f"dropout{i}", 0.0, _STN_DROP_MAX, _STN_START,
                  f"channel dropout rate after conv {i + 1}", "dropout", site=f"dropout{i}")


def _fc_dropout(i: int) -> Scalar:
    return Scalar(f"fcdropout{i}", 0.0, _STN_DROP_MAX, _STN_START,
                  f"dropout rate before fully connected layer {i + 1}", "dropout",
                  site=f"fcdropout{i}")


# The implementations of catalogue.SPACES (tests/test_catalogue.py keeps the two in step).
SEARCH_SPACES: dict[str, SearchSpace] = {
    "hba": SearchSpace("hba", policy=True, scalars=(), baseline_augmentation=True,
                       kernels="policy"),
    "stn": SearchSpace(
        "stn", policy=False, baseline_augmentation=False, kernels="stn", network="alexnet",
        # STN's order (create_hparams with --tune_all on AlexNet)
        scalars=tuple(_conv_dropout(i) for i in range(5)) + (
            Scalar("hue", 0.0, 0.5, _STN_START, "ColorJitter hue: shift drawn in ±hue",
                   "augmentation"),
            Scalar("contrast", 0.0, 1.0, _STN_START,
                   "ColorJitter contrast: factor drawn in [1 − c, 1 + c]", "augmentation"),
            Scalar("sat", 0.0, 1.0, _STN_START,
                   "ColorJitter saturation: factor drawn in [1 − s, 1 + s]", "augmentation"),
            Scalar("bright", 0.0, 1.0, _STN_START,
                   "ColorJitter brightness: factor drawn in [1 − b, 1 + b]", "augmentation"),
            Scalar("indropout", 0.0, 1.0, _STN_START, "dropout rate of input pixels",
                   "dropout"),
            Scalar("inscale", 0.0, 0.3, _STN_START,
                   "input scaling: images × u, u drawn in [1/(1 + s), 1 + s]", "augmentation"),
            # STN starts at 4 pixels and 1 hole (--start_cutlength, --start_cutholes).
            Scalar("cutlength", 0.0, 24.0, 4.0, "Cutout side in pixels (floored)",
                   "augmentation", discrete=True),
            Scalar("cutholes", 0.0, 4.0, 1.0, "Cutout holes (floored)", "augmentation",
                   discrete=True),
        ) + tuple(_fc_dropout(i) for i in range(2)),
    ),
}


def get_space(name: str) -> SearchSpace:
    """The space called ``name``; HbaError (one line) for an unknown one."""
    if name not in SEARCH_SPACES:
        raise HbaError(f"unknown search space '{name}' (known: {choices(SPACES)})")
    return SEARCH_SPACES[name]
