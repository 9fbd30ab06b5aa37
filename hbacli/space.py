"""The search space: the paper's 15 operations (Table 7) in two copies, and the λ vector.

λ is the unconstrained ("logit") vector the search optimises. Its layout is fixed:

    λ[0:30]   probability logits, one per op copy, in ``OP_COPIES`` order
    λ[30:54]  magnitude logits, one per op copy that has a magnitude, in ``OP_COPIES`` order

``OP_COPIES`` is copy-major: copy 0 of all 15 ops in Table 7 order, then copy 1. A hyperparameter
with range [lo, hi] has the physical value ``lo + (hi - lo) * sigmoid(λ)``. Pure numpy, no torch,
so reading and drawing schedules stays instant.

Each op's row in ``OPS`` also declares its conventions (kernel family, sign, range, how its
magnitude is scaled and rounded, whether it takes a position), which the torch, C and Pillow
backends read instead of naming ops. Adding an op is its row here, its torch kernel
(``ops.BUILDERS``), its Pillow reference (``ops_pil.PIL_OPS``) and its C function
(``OP_FUNCTIONS`` in ``ops_native.c``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The kernel families. The ops of a family share one kernel (``ops.KERNEL_FAMILIES``, the family
# kernels of ``ops_native.c``), so the batched policy runs each family once per stage with a
# different op per image: an op only builds its family's parameters.
KERNEL_FAMILY_NAMES: tuple[str, ...] = (
    "affine",  # geometric: Pillow's AFFINE matrix, nearest-neighbour resampling, FILL exposed
    "lut",     # per-(image, channel) 256-level lookup tables
    "blend",   # ImageEnhance: blend with a per-image degenerate image, the argument the factor
    "fill",    # a box painted with FILL
)
SCALES: tuple[str | None, ...] = (None, "width", "height", "side")
_ROUND = {None: float, "half-even": lambda value: float(round(value))}  # round: ties to even
ROUNDINGS: tuple[str | None, ...] = tuple(_ROUND)


@dataclass(frozen=True)
class OpSpec:
    """One operation of Table 7 and its conventions, declared here once for every backend
    (torch ``ops.py``, C ``ops_native.c`` through ``ops_native.py``, Pillow ``ops_pil.py``).

    ``low``/``high`` are None for probability-only ops. An op's kernel takes its *argument*
    (``argument``), not the magnitude: the magnitude times ``scale`` (an image size, so that
    magnitudes stay size-free fractions), rounded by ``rounding``.
    """

    name: str
    family: str                   # its kernel family, one of KERNEL_FAMILY_NAMES
    low: float | None = None
    high: float | None = None
    unit: str | None = None
    signed: bool = False          # the magnitude's sign is drawn at random (p = 0.5)
    scale: str | None = None      # argument = m × image "width", "height" or "side" (min(H, W))
    rounding: str | None = None   # "half-even": the argument is a whole number, ties to even
    #                               (Python's round, torch.round, C's nearbyint agree on it)
    positioned: bool = False      # also takes a uniformly drawn pixel (row, column): its centre

    def __post_init__(self) -> None:
        if self.family not in KERNEL_FAMILY_NAMES or self.scale not in SCALES \
                or self.rounding not in ROUNDINGS or (self.low is None) != (self.high is None):
            raise ValueError(f"malformed op spec {self}")

    @property
    def has_magnitude(self) -> bool:
        return self.low is not None

    def scale_factor(self, height: int, width: int) -> int:
        """What the magnitude is multiplied by for an image of this size (1: no scale)."""
        return {None: 1, "width": width, "height": height, "side": min(height, width)}[self.scale]

    def argument(self, magnitude: float | None, height: int, width: int) -> float:
        """The number the op's kernel takes for a (physical, signed) magnitude: in float64,
        scaled, then rounded; 0 for None (probability-only ops ignore it)."""
        value = 0.0 if magnitude is None else float(magnitude)
        if self.scale is not None:
            value *= self.scale_factor(height, width)
        return _ROUND[self.rounding](value)


OPS: tuple[OpSpec, ...] = (
    OpSpec("ShearX", "affine", 0.0, 0.3, "shear factor", signed=True),
    OpSpec("ShearY", "affine", 0.0, 0.3, "shear factor", signed=True),
    OpSpec("TranslateX", "affine", 0.0, 0.45, "fraction of image width", signed=True,
           scale="width"),
    OpSpec("TranslateY", "affine", 0.0, 0.45, "fraction of image height", signed=True,
           scale="height"),
    OpSpec("Rotate", "affine", 0.0, 30.0, "degrees", signed=True),
    OpSpec("AutoContrast", "lut"),
    OpSpec("Invert", "lut"),
    OpSpec("Equalize", "lut"),
    OpSpec("Solarize", "lut", 0.0, 255.0, "inverts pixels >= 256 - m"),
    OpSpec("Posterize", "lut", 0.0, 8.0, "low bits removed (rounded)", rounding="half-even"),
    OpSpec("Contrast", "lut", 0.1, 1.9, "enhancement factor (1 = identity)"),
    OpSpec("Color", "blend", 0.1, 1.9, "enhancement factor (1 = identity)"),
    OpSpec("Brightness", "lut", 0.1, 1.9, "enhancement factor (1 = identity)"),
    OpSpec("Sharpness", "blend", 0.1, 1.9, "enhancement factor (1 = identity)"),
    OpSpec("Cutout", "fill", 0.0, 0.2, "patch side, fraction of image size", scale="side",
           rounding="half-even", positioned=True),
)
OP_BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPS}
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
NUM_COPIES = 2


@dataclass(frozen=True)
class OpCopy:
    op: OpSpec
    copy: int

    @property
    def label(self) -> str:
        return f"{self.op.name}#{self.copy}"


OP_COPIES: tuple[OpCopy, ...] = tuple(OpCopy(op, c) for c in range(NUM_COPIES) for op in OPS)
NUM_OP_COPIES = len(OP_COPIES)  # 30

# Indices (into OP_COPIES) of the copies that carry a magnitude, in λ order.
MAGNITUDE_COPY_INDEX: np.ndarray = np.array(
    [i for i, oc in enumerate(OP_COPIES) if oc.op.has_magnitude], dtype=np.int64
)
NUM_MAGNITUDES = len(MAGNITUDE_COPY_INDEX)  # 24
NUM_HYPERPARAMETERS = NUM_OP_COPIES + NUM_MAGNITUDES  # 54
PROBABILITY_SLOTS = slice(0, NUM_OP_COPIES)
MAGNITUDE_SLOTS = slice(NUM_OP_COPIES, NUM_HYPERPARAMETERS)

# Physical range of every λ entry.
LAMBDA_LOW: np.ndarray = np.concatenate(
    [np.zeros(NUM_OP_COPIES), [OP_COPIES[i].op.low for i in MAGNITUDE_COPY_INDEX]]
).astype(np.float64)
LAMBDA_HIGH: np.ndarray = np.concatenate(
    [np.ones(NUM_OP_COPIES), [OP_COPIES[i].op.high for i in MAGNITUDE_COPY_INDEX]]
).astype(np.float64)

# The paper's initialisation: every hyperparameter at 0.95·lo + 0.05·hi.
INITIAL_FRACTION = 0.05


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def initial_lambda() -> np.ndarray:
    """λ at the paper's initial point: sigmoid(λ) = 0.05 for every entry."""
    return np.full(NUM_HYPERPARAMETERS, np.log(INITIAL_FRACTION / (1 - INITIAL_FRACTION)))


def lambda_to_physical(lam: np.ndarray) -> np.ndarray:
    """(..., 54) logits → (..., 54) physical values, each inside its range."""
    lam = np.asarray(lam, dtype=np.float64)
    return LAMBDA_LOW + (LAMBDA_HIGH - LAMBDA_LOW) * _sigmoid(lam)


def physical_to_lambda(values: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Inverse of ``lambda_to_physical`` (values clipped just inside their range)."""
    frac = (np.asarray(values, dtype=np.float64) - LAMBDA_LOW) / (LAMBDA_HIGH - LAMBDA_LOW)
    frac = np.clip(frac, eps, 1 - eps)
    return np.log(frac / (1 - frac))


def split_physical(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 54) physical values → probabilities (..., 30), magnitudes (..., 30).

    Magnitudes of probability-only ops are NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    probs = values[..., PROBABILITY_SLOTS]
    mags = np.full(values.shape[:-1] + (NUM_OP_COPIES,), np.nan)
    mags[..., MAGNITUDE_COPY_INDEX] = values[..., MAGNITUDE_SLOTS]
    return probs, mags


def join_physical(probs: np.ndarray, mags: np.ndarray) -> np.ndarray:
    """Inverse of ``split_physical``: probabilities and magnitudes (..., 30) → (..., 54)."""
    probs = np.asarray(probs, dtype=np.float64)
    mags = np.asarray(mags, dtype=np.float64)
    return np.concatenate([probs, mags[..., MAGNITUDE_COPY_INDEX]], axis=-1)


# The one fill rule of hba: every filled pixel is grey 128 in every channel — pixels exposed by
# the geometric ops, the policy's Cutout, the baseline pipeline's Cutout (standardised like any
# pixel) and torchvision's baseline policies (fill=128). PBA fills with the dataset mean (zero
# after standardisation); 128 is within 15 levels of every CIFAR channel mean, and one uint8
# constant keeps the C, torch and Pillow kernels bit-identical for any dataset.
FILL = 128


# The augmentation function's number of ops K (PBA Algorithm 1; paper App. A).
K_VALUES: tuple[int, ...] = (0, 1, 2)
K_PROBABILITIES: tuple[float, ...] = (0.2, 0.3, 0.5)
