"""A(x; p, m): the augmentation function (PBA Algorithm 1; paper Table 7, App. A), batched and
per image.

Over 400 lines on purpose: the walk and its four execution strategies must draw the same ops
from the same uniforms, and they are checked against each other here, side by side.

Per image: draw K ∈ {0, 1, 2} with p = .2/.3/.5; walk the 30 op copies in a random order, apply
each with its own probability, stop once K have been applied (so fewer than K may apply, and both
copies of one op may apply). Signed ops (the geometric ones) get a random sign (p = 0.5),
positioned ops (Cutout) a uniformly drawn pixel: both as their rows in ``space.OPS`` say.

Batched (``augment_batch``): the walk is sampled for all images at once (``walk_from_uniform``:
the applied copies are the open ones with the earliest uniform arrival times), which leaves every
image with at most two op copies to apply: stage 1 and stage 2. Each stage runs the four kernel
families of ``ops.py`` (affine, lut, blend, fill), each family once with a different op (or
identity) per example, so the number of kernels is fixed whatever the probabilities.

Four ways to run the stages (``kernels``), all giving bit-identical images
(``tests/test_policy.py``):
- "masked" (the CUDA default): every family runs on the whole batch, every op's parameters are
  built for every example and selected with ``torch.where``, non-members get identity
  parameters — static shapes, no host synchronisation, a fixed kernel sequence
  (graph-capturable);
- "native" (the CPU default): ``ops_native``, the same ops compiled from C, the whole batch in
  one call. The torch kernels cost about a thousand small operator calls per batch, a fixed
  cost whatever its size that dwarfs the arithmetic on small images; the C kernels pay it
  once per batch (figures: ``benchmarks/augment.py``, README);
- "compiled" (CUDA with ``--compile``): the masked kernels through ``torch.compile``, fused
  into a few dozen kernels; the first call per batch shape pays the compilation;
- "sorted" (the CPU fallback where no C compiler is found): the images are sorted by their op
  (``index_select``), each family runs on its contiguous rows and each op's parameters are
  built for its own rows only; the segment sizes go to the host, which costs nothing on a CPU.
  It is much faster than masked on the CPU, more so the larger the batch, because an image
  meets one family per stage, not four.

Threads. The policy uses the process's torch threads as it finds them (a library call leaves
global torch state alone). Its CPU kernels are many and small, and on cores shared with other
processes every parallel region waits for a descheduled thread: hba's commands therefore run
on one intra-op thread (``runtime.use_cpu_threads``), and a loop of your own on the CPU may
want ``torch.set_num_threads(1)`` too (``benchmarks/augment.py`` measures both).

``PolicyTransform`` is the per-image form (PIL image or C×H×W tensor) for torchvision ``Compose``
and DataLoader workers: one numpy walk per image (``draw_stages``), then ``ops_pil`` for PIL images
or the batched kernels with N = 1 for tensors — the same pixels for the same seed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import ops_native, space
from .errors import HbaError
from .ops import FAMILY_OF, KERNEL_FAMILIES, Batch, centres_from_uniform, to_uint8
from .ops_pil import apply_op_pil, random_position

NUM_COPIES = space.NUM_OP_COPIES  # 30
NUM_OPS = len(space.OPS)  # 15
_K_THRESHOLDS = np.cumsum(space.K_PROBABILITIES)[:-1]  # u < .2 → K=0, u < .5 → K=1, else K=2
_SIGNED = [op.signed for op in space.OPS]


@cache
def _constants(device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Lookup tables on the device, made once per device and dtype (no host → device copy
    inside a step). Called eagerly only, never inside a compiled region: torch.compile traces
    through the lru_cache and would rebuild the numpy tables and copy them to the device on
    every call, so the compiled policy gets them as an argument (``augment_from_uniform``)."""
    return _build_constants(device, dtype)


def _build_constants(device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    family_local = np.full((len(KERNEL_FAMILIES), NUM_OPS + 1), -1, dtype=np.int64)  # 0: no op
    family_rank = np.zeros(NUM_OPS + 1, dtype=np.int64)  # 1 + position in family-major order
    for f, family in enumerate(KERNEL_FAMILIES):
        for local, name in enumerate(family.builders):
            family_local[f, space.OP_NAMES.index(name) + 1] = local
            family_rank[space.OP_NAMES.index(name) + 1] = family_rank.max() + 1

    def put(a, dt=None):
        return torch.as_tensor(a, dtype=dt, device=device)

    return {"family_local": put(family_local),
            "family_rank": put(family_rank),
            "signed": put([False] + _SIGNED), "k_thresholds": put(_K_THRESHOLDS, torch.float32)}


def _per_example(values, n: int, device: torch.device, what: str) -> Tensor:
    """(30,) shared or (N, 30) per example → float32 (N, 30) on the device."""
    t = torch.as_tensor(values, dtype=torch.float32).to(device)
    if t.shape not in ((NUM_COPIES,), (n, NUM_COPIES)):
        raise HbaError(f"{what} must have shape ({NUM_COPIES},) or ({n}, {NUM_COPIES}), "
                       f"got {tuple(t.shape)}")
    return t.expand(n, NUM_COPIES)


def _uniform(n: int, columns: int, generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """All of a step's random numbers in one draw, on the generator's device."""
    source = generator.device if generator is not None else device
    return torch.rand(n, columns, generator=generator, device=source).to(device)


@dataclass
class Walk:
    """The sampled walk of a batch. Copy indices are into ``space.OP_COPIES``; −1 = none."""

    k: Tensor       # (N,) int64 number of ops asked for
    first: Tensor   # (N,) int64 first applied copy
    second: Tensor  # (N,) int64 second applied copy

    @property
    def applied(self) -> Tensor:
        """(N, 30) bool: copy j was applied to image i."""
        copies = torch.arange(NUM_COPIES, device=self.k.device)
        return (copies == self.first.unsqueeze(1)) | (copies == self.second.unsqueeze(1))


def walk_from_uniform(probabilities: Tensor, u: Tensor,
                      constants: dict[str, Tensor] | None = None) -> Walk:
    """The walk for uniforms u (N, ≥ 61): column 0 draws K, 1..30 each copy's arrival time,
    31..60 the gates. ``constants``: ``_constants(u.device, float32)``, looked up if None.

    Visiting the copies in order of i.i.d. uniform arrival times is a uniformly random order,
    and the walk applies the first K copies whose gates open: so the applied copies are the
    open ones with the earliest arrivals — two argmins, no sort.
    """
    c = _constants(u.device, torch.float32) if constants is None else constants
    k = (u[:, :1] >= c["k_thresholds"]).sum(1)
    opened = u[:, 1 + NUM_COPIES:1 + 2 * NUM_COPIES] < probabilities
    # closed copies arrive at ≥ 2, so they never apply; an add, not torch.where, which is
    # slower on the CPU for this strided float slice
    arrival = torch.add(u[:, 1:1 + NUM_COPIES], ~opened, alpha=2.0)
    earliest, first = arrival.min(1)
    later, second = arrival.scatter(1, first.unsqueeze(1), 2.0).min(1)
    first = torch.where((k >= 1) & (earliest < 2.0), first, -1)
    second = torch.where((k >= 2) & (later < 2.0), second, -1)
    return Walk(k, first, second)


def sample_walk(probabilities: Tensor, generator: torch.Generator | None = None) -> Walk:
    """Sample the walk alone (no images): probabilities (N, 30). For statistics and tests."""
    return walk_from_uniform(probabilities, _uniform(probabilities.shape[0], 1 + 2 * NUM_COPIES,
                                                     generator, probabilities.device))


def _apply_stage(images: Tensor, op: Tensor, magnitudes: Tensor, centres: Tensor,
                 family_local: Tensor) -> Tensor:
    """Apply op[i] (index into space.OPS, −1 = none) to image i: each family once, on the whole
    batch, non-members with identity parameters. Static shapes, no host sync (the CUDA path).
    ``family_local``: the ``_constants`` table of that name."""
    for f, family in enumerate(KERNEL_FAMILIES):
        images = family.run(Batch(images, magnitudes, centres), family_local[f, op + 1])
    return images


def _apply_stages_sorted(images: Tensor, ops: Tensor, magnitudes: Tensor,
                         centres: list[Tensor]) -> Tensor:
    """The stages by sorting the images by op (family-major): each family runs on its own
    rows, each op's parameters are built for its own rows only. Segment sizes go to the host,
    which costs nothing on the CPU and saves the work of the ops an image does not get.

    ops, magnitudes: (N, stages); centres: one (N, 2) per stage. The images stay in the
    previous stage's sorted order between stages (``position``: image → row), so each stage
    costs one row gather, and only the end restores the order.
    """
    family_rank = _constants(images.device, torch.float32)["family_rank"]
    current, position = images, None
    for stage in range(ops.shape[1]):
        rank = family_rank[ops[:, stage] + 1]
        order = rank.argsort(stable=True)
        bounds = [0] + torch.bincount(rank, minlength=NUM_OPS + 1).cumsum(0).tolist()
        rows = order if position is None else position.index_select(0, order)
        # index_select, not x[rows]: a row copy, faster than advanced indexing on the CPU
        ordered = Batch(current.index_select(0, rows), magnitudes[:, stage].index_select(0, order),
                        centres[stage].index_select(0, order))
        first_rank = 1  # rank 0: no op this stage
        for family in KERNEL_FAMILIES:
            start, stop = bounds[first_rank], bounds[first_rank + len(family.builders)]
            if stop > start:
                segments = [(bounds[r] - start, bounds[r + 1] - start)
                            for r in range(first_rank, first_rank + len(family.builders))]
                ordered.images[start:stop] = family.run_sorted(ordered.rows(start, stop), segments)
            first_rank += len(family.builders)
        current = ordered.images
        position = torch.empty_like(order).scatter_(
            0, order, torch.arange(len(order), device=order.device))
    return current.index_select(0, position)


UNIFORMS_PER_IMAGE = 1 + 2 * NUM_COPIES + 6  # K, arrivals, gates; sign and centre per stage


KERNELS = ("native", "sorted", "masked", "compiled")


def default_kernels(device: torch.device, compile: bool = False) -> str:
    """On CUDA masked, or compiled when asked; on the CPU the C kernels (faster than any
    compiled torch graph), or sorted where they cannot be built."""
    if device.type != "cpu":
        return "compiled" if compile else "masked"
    return "native" if ops_native.library() is not None else "sorted"


def _masked_with_tables(images: Tensor, probabilities: Tensor, magnitudes: Tensor, u: Tensor,
                        constants: dict[str, Tensor]) -> Tensor:
    """The masked kernels with the lookup tables as an argument: what torch.compile traces."""
    return _augment(images, probabilities, magnitudes, u, "masked", constants)


@cache
def _compiled_masked():
    """The masked kernels through torch.compile: one static graph, fused (hundreds of CUDA
    launches become a few dozen), no graph break and no host synchronisation (the lookup
    tables come in as tensors, built once per device outside the graph); compiled once per
    process and batch shape (``tests/test_policy_compiled.py``)."""
    return torch.compile(_masked_with_tables, dynamic=False)


def _run_compiled(images: Tensor, probabilities: Tensor, magnitudes: Tensor, u: Tensor,
                  constants: dict[str, Tensor]) -> Tensor:
    with warnings.catch_warnings():  # tracing through ops.py's lru_caches (torch constants:
        warnings.filterwarnings("ignore", message=".*functools.lru_cache")  # no numpy, no copy)
        return _compiled_masked()(images, probabilities, magnitudes, u, constants)


def augment_from_uniform(images: Tensor, probabilities: Tensor, magnitudes: Tensor, u: Tensor,
                         kernels: str | None = None) -> Tensor:
    """A(x; p, m) given all random numbers: images uint8 N×C×H×W (left unchanged),
    probabilities and magnitudes (N, 30) float32, u (N, UNIFORMS_PER_IMAGE) uniforms.

    ``kernels`` picks how the stages run (see the module doc): "native" (C, CPU only),
    "sorted", "masked" or "compiled" (torch); None = ``default_kernels``. All give identical
    images.
    """
    kernels = default_kernels(images.device) if kernels is None else kernels
    constants = _constants(images.device, torch.float32)  # eager: outside any compiled region
    if kernels == "compiled":
        return _run_compiled(images, probabilities, magnitudes, u, constants)
    return _augment(images, probabilities, magnitudes, u, kernels, constants)


def _augment(images: Tensor, probabilities: Tensor, magnitudes: Tensor, u: Tensor, kernels: str,
             constants: dict[str, Tensor]) -> Tensor:
    """``augment_from_uniform`` with its kernels chosen (not "compiled") and its tables given."""
    n, _, h, w = images.shape
    walk = walk_from_uniform(probabilities, u, constants)
    extra = u[:, 1 + 2 * NUM_COPIES:].view(n, 3, 2)  # sign, centre row, centre column × stage
    copies = torch.stack([walk.first, walk.second], 1)  # (N, 2): the copy of each stage
    ops = torch.where(copies >= 0, copies % NUM_OPS, -1)
    magnitude = magnitudes.gather(1, copies.clamp(min=0))
    flip = constants["signed"][ops + 1] & (extra[:, 0] < 0.5)
    magnitude = torch.where(flip, -magnitude, magnitude)
    centres = [centres_from_uniform(extra[:, 1:, stage], h, w) for stage in range(2)]
    if kernels == "native":
        return ops_native.augment_stages(images, ops, magnitude, torch.stack(centres, 1))
    if kernels == "sorted":
        return _apply_stages_sorted(images, ops, magnitude, centres)
    for stage in range(2):
        images = _apply_stage(images, ops[:, stage], magnitude[:, stage], centres[stage],
                              constants["family_local"])
    return images


_HALF_LEVEL = 0.5 / 255  # float values within half a uint8 level of [0, 1] round into it


def _images_to_bytes(images: Tensor) -> Tensor:
    """The uint8 N×C×H×W batch the ops work on: uint8 as is; float images, taken in [0, 1]
    as torchvision's (``ToTensor``, ``v2.ToDtype(scale=True)``), as round(255·x).

    Anything else is refused with one HbaError, never clipped or rescaled: other integer
    types, and float values outside [0, 1] (beyond half a level) or NaN — float images in
    0–255 included (divide them by 255, or pass uint8). The range check reads two numbers
    back from the device: float input costs one host synchronisation, uint8 none.
    """
    if images.dtype == torch.uint8:
        return to_uint8(images)
    if not images.is_floating_point():
        raise HbaError(f"images must be uint8 (0-255) or float in [0, 1], got {images.dtype}")
    if images.numel():
        low, high = (float(v) for v in torch.aminmax(images.detach()))
        if not (low >= -_HALF_LEVEL and high <= 1 + _HALF_LEVEL):   # False for NaN too
            raise HbaError(f"float images must be in [0, 1] (torchvision's convention), got "
                           f"values in [{low:.4g}, {high:.4g}]; divide 0-255 floats by 255, "
                           "or pass uint8")
    return to_uint8(images.detach().float().mul(255))


def _bytes_to_images(out: Tensor, before: Tensor, images: Tensor) -> Tensor:
    """The augmented uint8 batch ``out`` back in the dtype and scale of ``images``, whose
    bytes were ``before``: uint8 as is; float: out / 255 (``ToTensor``'s scale), except that
    a pixel whose byte the policy left as it was keeps its input value bit for bit (so an
    untouched image comes back exactly, off-grid values and v2's x·(1/255) included)."""
    if images.dtype == torch.uint8:
        return out
    return torch.where(out == before, images, out.to(images.dtype).div(255)).contiguous()


def augment_batch(images: Tensor, probabilities, magnitudes,
                  generator: torch.Generator | None = None, kernels: str | None = None) -> Tensor:
    """A(x; p, m) for a batch of N×C×H×W images on any device: uint8 (0–255), or float in
    [0, 1] (torchvision's convention, what ``ToTensor`` gives).

    The ops work on bytes: float images are converted with rounding, round(255·x), and back
    to [0, 1] (see ``_images_to_bytes`` and ``_bytes_to_images``): a changed pixel comes back
    a multiple of 1/255, an unchanged one as it was. Float values outside [0, 1] (0–255
    floats included) are refused with an HbaError, never clipped; the check costs float
    input one host synchronisation (uint8 input none).

    probabilities, magnitudes: physical values, (30,) shared or (N, 30) per example, in
    ``space.OP_COPIES`` order (magnitudes of probability-only ops are ignored; NaN is fine).
    Same generator state → same output. Returns the input's dtype and shape, contiguous.
    ``kernels``: see ``augment_from_uniform``.
    """
    x = _images_to_bytes(images)
    n = x.shape[0]
    p = _per_example(probabilities, n, x.device, "probabilities")
    m = torch.nan_to_num(_per_example(magnitudes, n, x.device, "magnitudes"))
    u = _uniform(n, UNIFORMS_PER_IMAGE, generator, x.device)
    out = augment_from_uniform(x, p, m, u, kernels)
    return _bytes_to_images(out, x, images)


@dataclass(frozen=True)
class Stage:
    """One applied op of one image's walk."""

    op: int                  # index into space.OPS
    magnitude: float         # physical, signed; 0 for probability-only ops
    centre: tuple[int, int]  # positioned ops' (row, column) (Cutout's centre); else (0, 0)


def draw_stages(probabilities: np.ndarray, magnitudes: np.ndarray, height: int, width: int,
                rng: np.random.Generator) -> list[Stage]:
    """One image's walk, drawn with numpy (the per-image form of ``walk_from_uniform``)."""
    k = int(np.searchsorted(_K_THRESHOLDS, rng.random(), side="right"))
    if k == 0:
        return []
    order = rng.permutation(NUM_COPIES)
    opened = order[rng.random(NUM_COPIES) < probabilities[order]][:k]
    stages = []
    for copy in opened:
        op = space.OP_COPIES[copy].op
        magnitude = float(magnitudes[copy]) if op.has_magnitude else 0.0
        if op.signed and rng.random() < 0.5:
            magnitude = -magnitude
        centre = random_position(height, width, rng) if op.positioned else (0, 0)
        stages.append(Stage(space.OP_NAMES.index(op.name), magnitude, centre))
    return stages


def augment_pil(image: Image.Image, probabilities, magnitudes,
                rng: np.random.Generator) -> Image.Image:
    """A(x; p, m) for one PIL image, through ``ops_pil``."""
    for stage in draw_stages(np.asarray(probabilities), np.asarray(magnitudes), image.height,
                             image.width, rng):
        image = apply_op_pil(space.OP_NAMES[stage.op], image, stage.magnitude,
                             centre=stage.centre)
    return image


def augment_tensor(image: Tensor, probabilities, magnitudes, rng: np.random.Generator) -> Tensor:
    """A(x; p, m) for one C×H×W tensor: uint8 (0–255), or float in [0, 1] (torchvision's
    convention; converted as in ``augment_batch``, values outside [0, 1] refused). The same
    draws as ``augment_pil``, so the same rng state gives the same pixels; the C kernels on
    the CPU. Returns the input's dtype."""
    before = _images_to_bytes(image.unsqueeze(0))
    stages = draw_stages(np.asarray(probabilities), np.asarray(magnitudes), before.shape[2],
                         before.shape[3], rng)
    if not stages:
        return image.clone()
    ops = torch.tensor([[s.op for s in stages] + [-1] * (2 - len(stages))])
    m = torch.tensor([[s.magnitude for s in stages] + [0.0] * (2 - len(stages))])
    centres = torch.tensor([[s.centre for s in stages] + [(0, 0)] * (2 - len(stages))])
    if before.device.type == "cpu" and ops_native.library() is not None:
        x = ops_native.augment_stages(before, ops, m, centres)
    else:
        x = before
        for stage in range(len(stages)):
            name = space.OP_NAMES[stages[stage].op]
            batch = Batch(x, m[:, stage].to(x.device), centres[:, stage].to(x.device))
            x = FAMILY_OF[name].run_one(name, batch)
    return _bytes_to_images(x, before, image.unsqueeze(0))[0]


class PolicyTransform:
    """Per-image A(x; p, m) for torchvision ``Compose`` / DataLoader workers (picklable).

    PIL image in → PIL image out (through ``ops_pil``); C×H×W tensor in → tensor out, uint8
    (0–255) or float in [0, 1] as torchvision's (see ``augment_tensor``), through the C
    kernels on the CPU (faster than the PIL path per image).
    Both draw the same walk from the same stream, so one seed gives the same pixels whichever
    type comes in.

    Random stream: with a ``seed``, it is fixed by (seed, DataLoader worker id) — workers differ,
    and a caller wanting new draws each epoch passes a new seed. Without one, the main process
    draws fresh entropy and a worker uses its torch seed (new every epoch, repeatable when the
    DataLoader's generator is seeded).
    """

    def __init__(self, probabilities, magnitudes, seed: int | None = None):
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.magnitudes = np.nan_to_num(np.asarray(magnitudes, dtype=np.float64))
        if self.probabilities.shape != (NUM_COPIES,) or self.magnitudes.shape != (NUM_COPIES,):
            raise HbaError(f"PolicyTransform needs {NUM_COPIES} probabilities and magnitudes "
                           "(space.OP_COPIES order)")
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._owner: tuple | None = None

    def _generator(self) -> np.random.Generator:
        """This process's stream, (re)made on first use in each process or worker."""
        worker = torch.utils.data.get_worker_info()
        owner = (os.getpid(), None if worker is None else worker.id)
        if self._rng is None or owner != self._owner:
            if self.seed is not None:
                entropy = [self.seed] + ([] if worker is None else [worker.id])
            else:
                entropy = None if worker is None else worker.seed
            self._rng = np.random.default_rng(entropy)
            self._owner = owner
        return self._rng

    def __call__(self, img):
        rng = self._generator()
        if isinstance(img, Image.Image):
            return augment_pil(img, self.probabilities, self.magnitudes, rng)
        if isinstance(img, Tensor) and img.dim() == 3:
            return augment_tensor(img, self.probabilities, self.magnitudes, rng)
        raise HbaError("PolicyTransform takes a PIL image or a C×H×W tensor, "
                       f"got {type(img).__name__}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
