"""The 15 operations of the search space (paper Table 7) on a batch, with per-example magnitudes.

Over 400 lines on purpose: one short builder per op and the four kernel families they feed;
the op set is one idea, and its builders are easiest to check beside each other.

Every op takes uint8 images N×C×H×W (C = 1 or 3; float images in [0, 255] are accepted and are
rounded to integers first) on any device and magnitudes (N,) in physical units — already signed
for the geometric ops — and returns images of the input's dtype and shape on the same device
(contiguous). There is no loop over images and no host-device synchronisation. The semantics are
Pillow's, written out in ``ops_pil.py`` with the conventions (directions, ``FILL``);
``ops_native.c`` repeats this file's arithmetic in C for the CPU (same pixels).

What an op is — its kernel family, sign, range, how its magnitude becomes its kernel's
*argument* (scaled by an image size, rounded), whether it takes a position — is its row in
``space.OPS``; this file adds only each op's torch kernel (``BUILDERS``: the argument → its
family's parameters) and the four family kernels (``KERNEL_FAMILIES``), so that the policy
(``policy.py``) runs all ops of a family in one pass with a different op per example
(``Family.run``):

- ``affine``: ShearX/Y, TranslateX/Y, Rotate — one gather through an integer index map. The map
  is Pillow's own nearest-neighbour arithmetic (16.16 fixed point at pixel centres), so output
  pixels are the very pixels Pillow picks; exposed pixels get ``FILL``.
- ``lut``: AutoContrast, Invert, Equalize, Solarize, Posterize, Contrast, Brightness — each a
  per-(image, channel) 256-entry table built with Pillow's arithmetic (float64 where Pillow uses
  doubles, float32 where it uses C floats), applied with one gather. Histograms come from one
  ``scatter_add`` over all images and channels.
- ``blend``: Color, Sharpness — ``ImageEnhance`` blends with a degenerate image (Pillow's L
  conversion; the SMOOTH kernel, border kept), clipped and truncated as ``Image.blend`` does.
- ``fill``: Cutout — a box per example painted with ``FILL``.

Agreement with Pillow: every op is bit-exact on the CPU, for RGB and L images of any size and any
magnitude in range (``tests/test_ops.py`` asserts equality, on real CIFAR-10 and random images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import HbaError
from .space import FILL, KERNEL_FAMILY_NAMES, OP_BY_NAME, OP_NAMES, OPS, ROUNDINGS, OpSpec

_FIXED_ONE = 65536  # Pillow's affine_fixed works in 16.16 fixed point


@cache
def _levels(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The 256 intensity levels, (1, 1, 256), made once per device and dtype."""
    return torch.arange(256, device=device).to(dtype).view(1, 1, 256)


@cache
def _grid(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel rows (H, 1) and columns (1, W), int32."""
    return (torch.arange(height, dtype=torch.int32, device=device).view(height, 1),
            torch.arange(width, dtype=torch.int32, device=device).view(1, width))


class _computed_once:
    """``functools.cached_property`` without its lock: the first access stores the value as an
    instance attribute, which later lookups find before this (non-data) descriptor. On Python
    3.10/3.11 cached_property takes an RLock that torch.compile cannot trace: each access broke
    the compiled policy's graph (26 graphs, 25 breaks); this traces into one graph."""

    def __init__(self, compute: Callable):
        self.compute, self.__doc__ = compute, compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = self.compute(instance)
        setattr(instance, self.name, value)
        return value


@dataclass
class Batch:
    """Images with their per-example op arguments, and statistics computed at most once."""

    images: Tensor        # uint8 N×C×H×W, contiguous
    magnitudes: Tensor    # float32 (N,), physical, signed for geometric ops
    centres: Tensor       # int64 (N, 2): (row, column), read by positioned ops (Cutout's centre)

    @property
    def height(self) -> int:
        return self.images.shape[2]

    @property
    def width(self) -> int:
        return self.images.shape[3]

    def rows(self, start: int, stop: int) -> Batch:
        return Batch(self.images[start:stop], self.magnitudes[start:stop], self.centres[start:stop])

    def levels(self, dtype: torch.dtype = torch.int64) -> Tensor:
        return _levels(self.images.device, dtype)

    @_computed_once
    def m64(self) -> Tensor:
        """Magnitudes in float64, where Pillow computes in C doubles."""
        return self.magnitudes.double()

    def column(self, values: Tensor) -> Tensor:
        """(N,) → (N, 1, 1): per-example values against (N, C, 256) tables."""
        return values.view(-1, 1, 1)

    @_computed_once
    def pixel_levels(self) -> Tensor:
        """Every pixel's level as an index, (N·C, H·W) int64 (for histograms and tables)."""
        n, c, h, w = self.images.shape
        return self.images.view(n * c, h * w).long()

    @_computed_once
    def histogram(self) -> Tensor:
        """(N, C, 256) pixel counts per image and channel."""
        n, c, h, w = self.images.shape
        ones = torch.ones(1, dtype=torch.int32, device=self.images.device).expand(n * c, h * w)
        counts = torch.zeros(n * c, 256, dtype=torch.int32, device=self.images.device)
        return counts.scatter_add_(1, self.pixel_levels, ones).view(n, c, 256)

    @_computed_once
    def lowest_highest(self) -> tuple[Tensor, Tensor]:
        """(N, C, 1) int64 lowest and highest level present per image and channel."""
        n, c, h, w = self.images.shape
        levels = self.images.view(n, c, h * w)
        # amin and amax, not aminmax: on uint8 they are vectorised on the CPU
        highest = levels.amax(2, keepdim=True).long()
        if torch.compiler.is_compiling():  # inductor's CPU uint8 amin gives 0 here (torch
            return levels.long().amin(2, keepdim=True), highest  # 2.14); fused, costs nothing
        return levels.amin(2, keepdim=True).long(), highest

    @_computed_once
    def as_float(self) -> Tensor:
        return self.images.float()

    @_computed_once
    def luma(self) -> Tensor:
        """(N, 1, H, W) float32: Pillow's RGB → L conversion, (19595 R + 38470 G + 7471 B +
        32768) >> 16. Exact in float32: every partial sum is an integer below 2^24."""
        if self.images.shape[1] == 1:
            return self.as_float
        r, g, b = self.as_float.unbind(1)
        weighted = (r * 19595).add_(g, alpha=38470).add_(b, alpha=7471)  # in place: one buffer
        return weighted.add_(32768).mul_(1 / 65536).floor_().unsqueeze(1)


_ROUNDINGS: dict[str | None, Callable[[Tensor], Tensor]] = {
    None: lambda value: value, "half-even": torch.round}  # torch.round: ties to even
assert set(_ROUNDINGS) == set(ROUNDINGS)


def argument(op: OpSpec, b: Batch) -> Tensor:
    """(N,) float64: op's kernel argument for every example, as ``OpSpec.argument`` (the
    magnitude scaled and rounded as the op's row in ``space.OPS`` says)."""
    value = b.m64 if op.scale is None else b.m64 * op.scale_factor(b.height, b.width)
    return _ROUNDINGS[op.rounding](value)


# --------------------------------------------------------------------------------------------
# affine: Pillow's Image.transform(AFFINE, NEAREST) matrices (output pixel → input pixel), (N, 6)


@cache
def _identity_row(device: torch.device) -> Tensor:
    return torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64, device=device)


def identity_matrix(b: Batch) -> Tensor:
    return _identity_row(b.images.device).expand(b.images.shape[0], 6).clone()


def _identity_but(b: Batch, entry: int, values: Tensor) -> Tensor:
    matrices = identity_matrix(b)
    matrices[:, entry] = values
    return matrices


def shear_x_matrix(b: Batch, shear: Tensor) -> Tensor:
    return _identity_but(b, 1, shear)


def shear_y_matrix(b: Batch, shear: Tensor) -> Tensor:
    return _identity_but(b, 3, shear)


def translate_x_matrix(b: Batch, pixels: Tensor) -> Tensor:
    return _identity_but(b, 2, pixels)


def translate_y_matrix(b: Batch, pixels: Tensor) -> Tensor:
    return _identity_but(b, 5, pixels)


def rotate_matrix(b: Batch, degrees: Tensor) -> Tensor:
    """Image.rotate(m) about the centre: Pillow's matrix, its cos/sin rounded to 15 digits."""
    angle = -torch.deg2rad(torch.remainder(degrees, 360.0))
    cos = torch.round(torch.cos(angle), decimals=15)
    sin = torch.round(torch.sin(angle), decimals=15)
    cx, cy = b.width / 2.0, b.height / 2.0
    return torch.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], 1)


@cache
def _fixed_point_map(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Matrix (a0..a5) → per coordinate (x, y): value at pixel (0, 0)'s centre, change per
    column, change per row; the rounding Pillow adds to each; the one-pixel padding shift."""
    to_coefficients = torch.tensor([  # columns: x0, dx/dcol, dx/drow, y0, dy/dcol, dy/drow
        [0.5, 1, 0, 0.0, 0, 0], [0.5, 0, 1, 0.0, 0, 0], [1.0, 0, 0, 0.0, 0, 0],
        [0.0, 0, 0, 0.5, 1, 0], [0.0, 0, 0, 0.5, 0, 1], [0.0, 0, 0, 1.0, 0, 0]],
        dtype=torch.float64, device=device)
    # ImagingScaleAffine (pure translations) floors its offsets; affine_fixed rounds everything
    translation_rounding = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.5, 0.5], dtype=torch.float64,
                                        device=device)
    padding = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.int32, device=device) * _FIXED_ONE
    return to_coefficients, translation_rounding, padding


def affine_kernel(b: Batch, matrices: Tensor) -> Tensor:
    """Nearest-neighbour resampling with Pillow's integer arithmetic; exposed pixels get FILL.

    Pillow evaluates the map at pixel centres in 16.16 fixed point (``affine_fixed``), except
    for pure translations (``ImagingScaleAffine``), whose offset it floors instead of rounding.
    Indices point into the image padded with one FILL pixel per side; clamping sends every
    outside sample to that border.
    """
    n, c, h, w = b.images.shape
    to_coefficients, translation_rounding, padding = _fixed_point_map(b.images.device)
    translation = ((matrices[:, 1] == 0) & (matrices[:, 3] == 0)).unsqueeze(1)
    rounding = torch.where(translation, translation_rounding, 0.5)
    fixed = torch.floor(matrices @ to_coefficients * _FIXED_ONE + rounding).int() + padding
    start, per_column, per_row = fixed.view(n, 2, 3, 1, 1).unbind(2)
    rows, columns = _grid(h, w, b.images.device)
    # (N, 2, H, W) x and y in one tensor, shifted and clamped in place: few image-sized passes
    coordinates = (start + rows * per_row) + columns * per_column
    x_in, y_in = coordinates.bitwise_right_shift_(16).unbind(1)
    x_in.clamp_(0, w + 1)
    y_in.clamp_(0, h + 1)
    source = torch.empty(n, h, w, dtype=torch.int64, device=b.images.device)
    torch.add(x_in, y_in, alpha=w + 2, out=source)  # row-major index, straight into int64
    padded = F.pad(b.images, (1, 1, 1, 1), value=FILL).view(n, c, (h + 2) * (w + 2))
    picked = padded.gather(2, source.view(n, 1, h * w).expand(n, c, h * w))
    return picked.view(n, c, h, w)


# --------------------------------------------------------------------------------------------
# lut: per-(image, channel) lookup tables (N, C or 1, 256), integer values in [0, 255].


def _blend_levels(degenerate: Tensor, b: Batch, factor: Tensor) -> Tensor:
    """Image.blend(degenerate, image, factor) for every level: C-float maths, clip, truncate."""
    factor = b.column(factor.float())
    return (degenerate + factor * (b.levels(torch.float32) - degenerate)).clamp(0, 255).trunc()


def invert_lut(b: Batch, _: Tensor) -> Tensor:
    return 255 - b.levels()


def solarize_lut(b: Batch, m: Tensor) -> Tensor:
    threshold = b.column(256 - m)
    return torch.where(b.levels() >= threshold, 255 - b.levels(), b.levels())


def posterize_lut(b: Batch, bits: Tensor) -> Tensor:
    step = torch.pow(2, bits.clamp(0, 8).long())  # 2^(bits removed)
    return torch.div(b.levels(), b.column(step), rounding_mode="floor") * b.column(step)


def brightness_lut(b: Batch, factor: Tensor) -> Tensor:
    return _blend_levels(torch.zeros((), device=b.images.device), b, factor)


def contrast_lut(b: Batch, factor: Tensor) -> Tensor:
    """ImageEnhance.Contrast: blend with the grey int(mean(L) + 0.5), in exact integers."""
    total = b.luma.sum(dim=(1, 2, 3), dtype=torch.float64).long()
    pixels = b.height * b.width
    grey = torch.div(2 * total + pixels, 2 * pixels, rounding_mode="floor")
    return _blend_levels(b.column(grey.float()), b, factor)


def autocontrast_lut(b: Batch, _: Tensor) -> Tensor:
    """ImageOps.autocontrast (cutoff 0): stretch [lowest, highest] level to [0, 255] per channel."""
    low, high = (v.double() for v in b.lowest_highest)
    # a true division: torch turns `255.0 / tensor` into a reciprocal times 255 (1 ulp off)
    scale = torch.full_like(low, 255.0) / (high - low).clamp(min=1)
    stretched = torch.trunc(b.levels() * scale + (-low * scale)).clamp(0, 255)
    return torch.where(high <= low, b.levels(torch.float64), stretched)


def equalize_lut(b: Batch, _: Tensor) -> Tensor:
    """ImageOps.equalize per channel: cumulative histogram in steps of (N − count(top)) // 255."""
    hist = b.histogram
    low, high = b.lowest_highest
    step = (b.height * b.width - hist.gather(2, high)) // 255
    below = hist.cumsum(2, dtype=torch.int32) - hist
    # integer floor division through float64: exact for these sizes, and far faster
    equalised = torch.floor((step // 2 + below).double() / step.clamp(min=1)).clamp(max=255)
    return torch.where((high <= low) | (step == 0), b.levels(torch.float64), equalised)


def lut_kernel(b: Batch, tables: Tensor) -> Tensor:
    n, c, h, w = b.images.shape
    tables = tables.to(torch.uint8).expand(n, c, 256).reshape(n * c, 256)
    return tables.gather(1, b.pixel_levels).view(n, c, h, w)


# --------------------------------------------------------------------------------------------
# blend: ImageEnhance with a per-image degenerate image, float32 (N, C, H, W), and a factor.


def color_degenerate(b: Batch, _: Tensor) -> Tensor:
    return b.luma.expand(b.images.shape)


def sharpness_degenerate(b: Batch, _: Tensor) -> Tensor:
    """ImageFilter.SMOOTH (3×3: 1s around a 5, /13, rounded); the one-pixel border is kept.

    The sums run over each image plane flattened (H·W), so every pass is one long contiguous
    loop (row-wise slices of W − 2 are much slower); sums that wrap around a row edge land
    only on border pixels, which are then left out.
    """
    n, c, h, w = b.images.shape
    x = b.images.view(n, c, h * w).to(torch.int16)  # the 3×3 sums fit; int16 adds are fast
    across = (x[..., :-2] + x[..., 1:-1]).add_(x[..., 2:])  # [q]: centred on pixel q + 1
    box = (across[..., :-2 * w] + across[..., w:-w]).add_(across[..., 2 * w:])  # on q + w + 1
    box.add_(x[..., w + 1:h * w - w - 1], alpha=4)  # the centre weighs 5
    # floor((S + 6) / 13) for integer S: the +6.5 keeps every quotient ≥ 0.038 from an integer,
    # far beyond float32's error, so a multiply by 1/13 is exact here, and faster than a divide
    smooth = torch.add(box, 6.5).mul_(1 / 13).floor_()
    inner_size = (n, c, max(h - 2, 0), max(w - 2, 0))  # none below 3×3
    interior = smooth.as_strided(inner_size, (c * smooth.shape[2], smooth.shape[2], w, 1))
    out = b.as_float.clone()
    out[..., 1:-1, 1:-1] = interior
    return out


def blend_kernel(b: Batch, params: tuple[Tensor, Tensor]) -> Tensor:
    """Image.blend(degenerate, image, factor): float32 maths, clipped, truncated (not rounded).
    The factor is each example's op argument (1: identity)."""
    degenerate, factor = params
    out = (b.as_float - degenerate).mul_(factor.float().view(-1, 1, 1, 1)).add_(degenerate)
    return float_to_uint8(out.clamp_(0, 255))


# --------------------------------------------------------------------------------------------
# fill: Cutout boxes (N, 4) = top, bottom, left, right (exclusive), clipped by the comparison.


def cutout_boxes(b: Batch, side: Tensor) -> Tensor:
    """A square of ``side`` pixels (the argument) centred on each example's position."""
    side = side.long()
    top, left = (b.centres - (side // 2).unsqueeze(1)).unbind(1)
    return torch.stack([top, top + side, left, left + side], 1)


def fill_kernel(b: Batch, boxes: Tensor) -> Tensor:
    n, _, h, w = b.images.shape
    rows, columns = _grid(h, w, b.images.device)
    top, bottom, left, right = boxes.view(n, 4, 1, 1).unbind(1)
    # (N, H, 1) rows and (N, 1, W) columns apart: one image-sized operation, not three
    inside = ((rows >= top) & (rows < bottom)) & ((columns >= left) & (columns < right))
    # x + inside·(FILL − x) in uint8, which wraps mod 256: exactly FILL inside and x outside,
    # and vectorised on the CPU, unlike torch.where with a broadcast mask
    return b.images + inside.unsqueeze(1).to(torch.uint8) * (FILL - b.images)


# --------------------------------------------------------------------------------------------
# Each op's torch kernel: (batch, its argument (N,) float64) → its family's parameters (N, …).

BUILDERS: dict[str, Callable[[Batch, Tensor], Tensor]] = {
    "ShearX": shear_x_matrix, "ShearY": shear_y_matrix, "TranslateX": translate_x_matrix,
    "TranslateY": translate_y_matrix, "Rotate": rotate_matrix, "AutoContrast": autocontrast_lut,
    "Invert": invert_lut, "Equalize": equalize_lut, "Solarize": solarize_lut,
    "Posterize": posterize_lut, "Contrast": contrast_lut, "Color": color_degenerate,
    "Brightness": brightness_lut, "Sharpness": sharpness_degenerate, "Cutout": cutout_boxes,
}
assert sorted(BUILDERS) == sorted(OP_NAMES)  # one torch kernel per op of space.OPS


# --------------------------------------------------------------------------------------------
# Families: the ops sharing one kernel (their ``family`` in space.OPS, in space.OPS order);
# example i gets op ``local[i]`` of the family (−1: none).


@dataclass(frozen=True)
class Family:
    name: str
    identity: Callable[[Batch], Tensor]             # (N, …) parameters that change nothing
    kernel: Callable[[Batch, object], Tensor]
    ops: tuple[OpSpec, ...] = field(init=False)     # its members, in space.OPS order
    builders: dict[str, Callable[[Batch, Tensor], Tensor]] = field(init=False)  # name → kernel

    def __post_init__(self) -> None:
        members = tuple(op for op in OPS if op.family == self.name)
        object.__setattr__(self, "ops", members)
        object.__setattr__(self, "builders", {op.name: BUILDERS[op.name] for op in members})

    def build(self, op: OpSpec, b: Batch) -> Tensor:
        return BUILDERS[op.name](b, argument(op, b))

    def parameters(self, b: Batch, local: Tensor) -> object:
        """Every op built for the whole batch, selected per example by ``local`` (−1: identity):
        static shapes, no host sync (the CUDA path)."""
        chosen = self.identity(b)
        for k, op in enumerate(self.ops):
            built = self.build(op, b)
            chosen = torch.where((local == k).view((-1,) + (1,) * (built.dim() - 1)), built, chosen)
        return chosen

    def parameters_sorted(self, b: Batch, segments: list[tuple[int, int]]) -> object:
        """Examples sorted by op: op k's are rows ``segments[k]``; each op is built for its own
        rows only (data-dependent sizes decided on the host: the CPU path)."""
        chosen = self.identity(b)
        for (start, stop), op in zip(segments, self.ops, strict=True):
            if stop > start:
                chosen[start:stop] = self.build(op, b.rows(start, stop))
        return chosen

    def run(self, b: Batch, local: Tensor) -> Tensor:
        return self.kernel(b, self.parameters(b, local))

    def run_sorted(self, b: Batch, segments: list[tuple[int, int]]) -> Tensor:
        return self.kernel(b, self.parameters_sorted(b, segments))

    def run_one(self, name: str, b: Batch) -> Tensor:
        """Op ``name`` on every example."""
        return self.kernel(b, self.build(OP_BY_NAME[name], b))


class BlendFamily(Family):
    """Color and Sharpness: the degenerate image per example, and the factor, each example's
    op argument (1: identity)."""

    def parameters(self, b: Batch, local: Tensor) -> tuple[Tensor, Tensor]:
        factor = torch.ones_like(b.magnitudes)
        for k, op in enumerate(self.ops):
            factor = torch.where(local == k, argument(op, b).float(), factor)
        return super().parameters(b, local), factor

    def run_sorted(self, b: Batch, segments: list[tuple[int, int]]) -> Tensor:
        """One blend per op on its own rows: no image-sized identity to fill in."""
        return torch.cat([self.run_one(op.name, b.rows(start, stop))
                          for (start, stop), op in zip(segments, self.ops, strict=True)
                          if stop > start])

    def run_one(self, name: str, b: Batch) -> Tensor:
        op = OP_BY_NAME[name]
        factor = argument(op, b)
        return self.kernel(b, (BUILDERS[name](b, factor), factor))


def _identity_tables(b: Batch) -> Tensor:
    return b.levels(torch.uint8).expand(*b.images.shape[:2], 256).clone()


def _any_degenerate(b: Batch) -> Tensor:
    return torch.zeros(b.images.shape, device=b.images.device)  # factor 1 returns the image


def _empty_boxes(b: Batch) -> Tensor:
    return torch.zeros(b.images.shape[0], 4, dtype=torch.int64, device=b.images.device)


# The family kernels, in the order a stage runs them (any order gives the same pixels: an image
# gets at most one op per stage).
KERNEL_FAMILIES: tuple[Family, ...] = (
    Family("affine", identity_matrix, affine_kernel),
    Family("lut", _identity_tables, lut_kernel),
    BlendFamily("blend", _any_degenerate, blend_kernel),
    Family("fill", _empty_boxes, fill_kernel),
)
assert sorted(f.name for f in KERNEL_FAMILIES) == sorted(KERNEL_FAMILY_NAMES)
FAMILY_OF: dict[str, Family] = {op.name: f for f in KERNEL_FAMILIES for op in f.ops}


# --------------------------------------------------------------------------------------------
# Public entry points.


def float_to_uint8(values: Tensor) -> Tensor:
    """Float values in [0, 255] → uint8, truncated. Through int16: torch's direct float → uint8
    conversion is unvectorised on the CPU, slower than this pair."""
    return values.to(torch.int16).to(torch.uint8)


def to_uint8(images: Tensor) -> Tensor:
    """uint8 as is; float in [0, 255] rounded and clipped. Always contiguous N×C×H×W."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise HbaError(f"expected images N×C×H×W with C = 1 or 3, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise HbaError(f"images must be uint8 or float in [0, 255], got {images.dtype}")
    return float_to_uint8(images.round().clamp(0, 255)).contiguous()


def centres_from_uniform(u: Tensor, height: int, width: int) -> Tensor:
    """Uniform pixel positions (N, 2) = (row, column) from uniforms u (N, 2) in [0, 1)."""
    return torch.stack([u[:, 0] * height, u[:, 1] * width], 1).long()


def apply_op(name: str, images: Tensor, magnitudes: Tensor | float | None,
             generator: torch.Generator | None = None, centres: Tensor | None = None) -> Tensor:
    """Apply op ``name`` to every image, each with its own (physical, signed) magnitude.

    ``magnitudes``: (N,) or a scalar; ignored (None, NaN) for probability-only ops.
    ``centres``: (N, 2) pixel positions (row, column) for positioned ops (Cutout's centre);
    None: uniform ones, drawn with ``generator``. Returns the input's dtype and shape, same
    device.
    """
    if name not in FAMILY_OF:
        raise HbaError(f"unknown augmentation op '{name}' (known: {', '.join(OP_NAMES)})")
    x = to_uint8(images)
    n = x.shape[0]
    m = torch.as_tensor(0.0 if magnitudes is None else magnitudes, dtype=torch.float32)
    m = torch.nan_to_num(m.to(x.device).expand(n) if m.dim() == 0 else m.to(x.device).reshape(n))
    if centres is None:
        source = generator.device if generator is not None else x.device
        u = torch.rand(n, 2, generator=generator, device=source).to(x.device)
        centres = centres_from_uniform(u, x.shape[2], x.shape[3])
    batch = Batch(x, m, centres.to(device=x.device, dtype=torch.int64).reshape(n, 2))
    return FAMILY_OF[name].run_one(name, batch).to(images.dtype)


def _batched(name: str) -> Callable[..., Tensor]:
    def op(images: Tensor, magnitudes: Tensor | float | None = None,
           generator: torch.Generator | None = None, centres: Tensor | None = None) -> Tensor:
        return apply_op(name, images, magnitudes, generator, centres)

    op.__name__ = op.__qualname__ = name
    return op


BATCHED_OPS: dict[str, Callable[..., Tensor]] = {name: _batched(name) for name in OP_NAMES}
