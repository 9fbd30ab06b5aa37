"""The 15 operations of the search space (paper Table 7) on a batch, with per-example magnitudes.

Every op takes uint8 images N×C×H×W (C = 1 or 3; float images in [0, 255] are accepted and are
rounded to integers first) on any device and magnitudes (N,) in physical units — already signed
for the geometric ops — and returns images of the input's dtype, shape and device. There is no
loop over images and no host-device synchronisation. The reference semantics are Pillow's, as
written out in ``ops_pil.py``; conventions (directions, ``FILL``) are documented there.

The ops fall into four kernel families, so that the policy (``policy.py``) can run all ops of a
family in one pass with a different op per example:

- ``affine``: ShearX/Y, TranslateX/Y, Rotate — one gather through an integer index map. The map
  is Pillow's own nearest-neighbour arithmetic (16.16 fixed point, half-pixel centres), so
  output pixels are the very pixels Pillow picks; exposed pixels get ``FILL``.
- ``lut``: AutoContrast, Invert, Equalize, Solarize, Posterize, Contrast, Brightness — each is a
  per-(image, channel) 256-entry lookup table built with Pillow's arithmetic (float64 where Pillow
  uses doubles, float32 where it uses C floats), applied with one gather. Histograms come from one
  ``scatter_add`` over all images and channels.
- ``blend``: Color, Sharpness — ``ImageEnhance`` blends with a degenerate image (Pillow's L
  conversion; the SMOOTH kernel with borders kept), truncated and clipped as ``Image.blend`` does.
- ``fill``: Cutout — a box per example painted with ``FILL``.

Agreement with Pillow (``tests/test_ops.py``, real CIFAR-10 images): every op is bit-exact in the
tests' grids; the tests allow mean absolute difference ≤ 1 level for the colour ops and 0.5% of
mismatched pixels (4-px margin excluded) for the geometric ops, headroom for platform float
differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .errors import HbaError
from .space import OP_NAMES

FILL = 128  # the one fill colour (every channel) for pixels exposed by geometric ops, and Cutout

_FIXED_ONE = 65536  # Pillow's affine_fixed works in 16.16 fixed point


def cutout_side(magnitude: float, height: int, width: int) -> int:
    """Cutout's square side in pixels: round(m · min(H, W)) (round half to even, like torch)."""
    return round(magnitude * min(height, width))


# --------------------------------------------------------------------------------------------
# One batch of images with its per-example op arguments and lazily computed statistics.


@dataclass
class Batch:
    images: Tensor        # uint8 N×C×H×W, contiguous
    magnitudes: Tensor    # float32 (N,), physical, signed for geometric ops
    centres: Tensor       # int64 (N, 2): Cutout's (row, column); only Cutout reads it

    @property
    def height(self) -> int:
        return self.images.shape[2]

    @property
    def width(self) -> int:
        return self.images.shape[3]

    @cached_property
    def lut_index(self) -> Tensor:
        """Flat index of every pixel's entry in an (N·C·256) table: value + 256·(n·C + c)."""
        n, c = self.images.shape[:2]
        offsets = torch.arange(0, n * c * 256, 256, device=self.images.device).view(n, c, 1, 1)
        return (self.images.long() + offsets).view(-1)

    @cached_property
    def histogram(self) -> Tensor:
        """(N, C, 256) int64 pixel counts per image and channel."""
        n, c = self.images.shape[:2]
        counts = torch.zeros(n * c * 256, dtype=torch.int64, device=self.images.device)
        ones = torch.ones(1, dtype=torch.int64, device=self.images.device).expand(self.lut_index.numel())
        return counts.scatter_add_(0, self.lut_index, ones).view(n, c, 256)

    @cached_property
    def luma(self) -> Tensor:
        """(N, 1, H, W) uint8: Pillow's RGB → L conversion (ITU-R 601-2, integer, rounded)."""
        if self.images.shape[1] == 1:
            return self.images
        rgb = self.images.int()
        weighted = rgb[:, 0:1] * 19595 + rgb[:, 1:2] * 38470 + rgb[:, 2:3] * 7471 + 0x8000
        return (weighted >> 16).to(torch.uint8)

    @cached_property
    def luma_mean(self) -> Tensor:
        """(N,) int64: ImageEnhance.Contrast's grey level int(mean(L) + 0.5), in integers."""
        total = self.luma.sum(dim=(1, 2, 3), dtype=torch.int64)
        pixels = self.height * self.width
        return torch.div(2 * total + pixels, 2 * pixels, rounding_mode="floor")


def _column(values: Tensor) -> Tensor:
    """(N,) → (N, 1, 1) for broadcasting against (N, C, 256) tables."""
    return values.view(-1, 1, 1)


# --------------------------------------------------------------------------------------------
# affine: Pillow's Image.transform(AFFINE, NEAREST) matrices (output pixel → input pixel).


def _affine_rows(a: list[Tensor]) -> Tensor:
    return torch.stack(a, dim=1)  # (N, 6) float64


def shear_x_matrix(b: Batch) -> Tensor:
    m = b.magnitudes.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine_rows([one, m, zero, zero, one, zero])


def shear_y_matrix(b: Batch) -> Tensor:
    m = b.magnitudes.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine_rows([one, zero, zero, m, one, zero])


def translate_x_matrix(b: Batch) -> Tensor:
    m = b.magnitudes.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine_rows([one, zero, m * b.width, zero, one, zero])


def translate_y_matrix(b: Batch) -> Tensor:
    m = b.magnitudes.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine_rows([one, zero, zero, zero, one, m * b.height])


def rotate_matrix(b: Batch) -> Tensor:
    """Image.rotate(m) about the centre: Pillow's matrix, its cos/sin rounded to 15 digits."""
    angle = -torch.deg2rad(torch.remainder(b.magnitudes.double(), 360.0))
    cos = torch.round(torch.cos(angle), decimals=15)
    sin = torch.round(torch.sin(angle), decimals=15)
    cx, cy = b.width / 2.0, b.height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return _affine_rows([cos, sin, c, -sin, cos, f])


def identity_matrix(b: Batch) -> Tensor:
    m = torch.zeros_like(b.magnitudes, dtype=torch.float64)
    return _affine_rows([m + 1, m, m, m, m + 1, m])


def affine_kernel(b: Batch, matrices: Tensor) -> Tensor:
    """Nearest-neighbour resampling with Pillow's integer arithmetic; exposed pixels get FILL.

    Pillow evaluates the map at pixel centres in 16.16 fixed point (``affine_fixed``), except
    for pure translations (``ImagingScaleAffine``), whose offset it floors instead of rounding.
    """
    n, c, h, w = b.images.shape
    a0, a1, a2, a3, a4, a5 = matrices.unbind(1)
    x_offset = a2 + 0.5 * a0 + 0.5 * a1
    y_offset = a5 + 0.5 * a3 + 0.5 * a4
    translation = (a1 == 0) & (a3 == 0)
    rounding = torch.where(translation, 0.0, 0.5).to(matrices)

    def fixed(v: Tensor, add: Tensor | float = 0.5) -> Tensor:
        return torch.floor(v * _FIXED_ONE + add).to(torch.int32)

    xs = torch.arange(w, device=b.images.device, dtype=torch.int32).view(1, 1, w)
    ys = torch.arange(h, device=b.images.device, dtype=torch.int32).view(1, h, 1)
    x_in = (fixed(x_offset, rounding).view(n, 1, 1) + ys * fixed(a1).view(n, 1, 1)
            + xs * fixed(a0).view(n, 1, 1)) >> 16
    y_in = (fixed(y_offset, rounding).view(n, 1, 1) + ys * fixed(a4).view(n, 1, 1)
            + xs * fixed(a3).view(n, 1, 1)) >> 16
    inside = (x_in >= 0) & (x_in < w) & (y_in >= 0) & (y_in < h)
    source = (y_in.clamp(0, h - 1) * w + x_in.clamp(0, w - 1)).long().view(n, 1, h * w)
    picked = b.images.view(n, c, h * w).gather(2, source.expand(n, c, h * w))
    return torch.where(inside.view(n, 1, h * w), picked, FILL).view(n, c, h, w)


# --------------------------------------------------------------------------------------------
# lut: per-(image, channel) lookup tables, (N, C or 1, 256), integer values in [0, 255].


def _levels(b: Batch, dtype: torch.dtype) -> Tensor:
    return torch.arange(256, device=b.images.device, dtype=dtype).view(1, 1, 256)


def _blend_levels(degenerate: Tensor, b: Batch) -> Tensor:
    """Image.blend(degenerate, image, factor) for every level: C-float maths, clip, truncate."""
    factor = _column(b.magnitudes.float())
    levels = _levels(b, torch.float32)
    return (degenerate + factor * (levels - degenerate)).clamp(0, 255).trunc()


def invert_lut(b: Batch) -> Tensor:
    return 255 - _levels(b, torch.int64)


def solarize_lut(b: Batch) -> Tensor:
    levels = _levels(b, torch.int64)
    threshold = _column(256 - b.magnitudes.double())
    return torch.where(levels >= threshold, 255 - levels, levels)


def posterize_lut(b: Batch) -> Tensor:
    step = torch.pow(2, torch.round(b.magnitudes).clamp(0, 8).long())  # 2^(bits removed)
    return torch.div(_levels(b, torch.int64), _column(step), rounding_mode="floor") * _column(step)


def brightness_lut(b: Batch) -> Tensor:
    return _blend_levels(torch.zeros(1, device=b.images.device), b)


def contrast_lut(b: Batch) -> Tensor:
    return _blend_levels(_column(b.luma_mean.float()), b)


def autocontrast_lut(b: Batch) -> Tensor:
    """ImageOps.autocontrast (cutoff 0): stretch [lowest, highest] level to [0, 255] per channel."""
    present = b.histogram > 0
    low = present.int().argmax(dim=2, keepdim=True).double()
    high = 255 - present.flip(2).int().argmax(dim=2, keepdim=True).double()
    # a true division: torch turns `255.0 / tensor` into a reciprocal times 255 (1 ulp off)
    scale = torch.full_like(low, 255.0) / (high - low).clamp(min=1)
    levels = _levels(b, torch.float64)
    stretched = torch.trunc(levels * scale + (-low * scale)).clamp(0, 255)
    return torch.where(high <= low, levels, stretched)


def equalize_lut(b: Batch) -> Tensor:
    """ImageOps.equalize per channel: cumulative histogram in steps of (N − count(top)) // 255."""
    hist = b.histogram
    present = hist > 0
    top = 255 - present.flip(2).int().argmax(dim=2, keepdim=True)
    pixels = b.height * b.width
    step = (pixels - hist.gather(2, top)) // 255
    below = hist.cumsum(2) - hist
    equalised = torch.div(step // 2 + below, step.clamp(min=1), rounding_mode="floor").clamp(max=255)
    flat = (present.sum(2, keepdim=True) <= 1) | (step == 0)
    return torch.where(flat, _levels(b, torch.int64), equalised)


def identity_lut(b: Batch) -> Tensor:
    return _levels(b, torch.int64)


def lut_kernel(b: Batch, tables: Tensor) -> Tensor:
    n, c = b.images.shape[:2]
    tables = tables.to(torch.uint8).expand(n, c, 256).reshape(-1)
    return tables.take(b.lut_index).view(b.images.shape)


# --------------------------------------------------------------------------------------------
# blend: ImageEnhance with a per-image degenerate image, float32 (N, C, H, W).


def color_degenerate(b: Batch) -> Tensor:
    return b.luma.float().expand(b.images.shape)


def sharpness_degenerate(b: Batch) -> Tensor:
    """ImageFilter.SMOOTH (3×3: 1s around a 5, /13, rounded); the one-pixel border is kept."""
    x = b.images.float()
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    smooth = torch.div(box + 4 * x[..., 1:-1, 1:-1] + 6, 13, rounding_mode="floor")
    out = x.clone()
    out[..., 1:-1, 1:-1] = smooth
    return out


def blend_kernel(b: Batch, params: tuple[Tensor, Tensor]) -> Tensor:
    """Image.blend(degenerate, image, factor): float32 maths, clipped, truncated (not rounded)."""
    degenerate, factor = params
    factor = factor.float().view(-1, 1, 1, 1)
    out = degenerate + factor * (b.images.float() - degenerate)
    return out.clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------
# fill: Cutout boxes (N, 4) = top, bottom, left, right (exclusive), clipped to the image.


def cutout_boxes(b: Batch) -> Tensor:
    side = torch.round(b.magnitudes.double() * min(b.height, b.width)).long()  # as cutout_side
    top = b.centres[:, 0] - side // 2
    left = b.centres[:, 1] - side // 2
    return torch.stack([top, top + side, left, left + side], dim=1)


def empty_boxes(b: Batch) -> Tensor:
    return torch.zeros(b.images.shape[0], 4, dtype=torch.int64, device=b.images.device)


def fill_kernel(b: Batch, boxes: Tensor) -> Tensor:
    n, _, h, w = b.images.shape
    ys = torch.arange(h, device=b.images.device).view(1, h, 1)
    xs = torch.arange(w, device=b.images.device).view(1, 1, w)
    top, bottom, left, right = (v.view(n, 1, 1) for v in boxes.unbind(1))
    inside = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
    return torch.where(inside.unsqueeze(1), FILL, b.images)


# --------------------------------------------------------------------------------------------
# Families: ops sharing one kernel, so a batch with a different op per example is one pass.


@dataclass(frozen=True)
class Family:
    name: str
    builders: dict[str, Callable[[Batch], Tensor]]   # op name → kernel parameters
    identity: Callable[[Batch], Tensor]
    kernel: Callable[[Batch, object], Tensor]

    def parameters(self, b: Batch, local: Tensor) -> Tensor:
        """Per-example parameters: example i gets op ``local[i]`` of this family (−1: identity)."""
        n = b.images.shape[0]
        candidates = [self.identity(b)] + [build(b) for build in self.builders.values()]
        shape = (n,) + tuple(torch.broadcast_shapes(*(t.shape for t in candidates))[1:])
        dtype = candidates[0].dtype
        table = torch.stack([t.to(dtype).expand(shape) for t in candidates])
        return table[local + 1, torch.arange(n, device=local.device)]

    def run(self, b: Batch, local: Tensor) -> Tensor:
        return self.kernel(b, self.parameters(b, local))

    def run_one(self, name: str, b: Batch) -> Tensor:
        return self.kernel(b, self.builders[name](b))


class BlendFamily(Family):
    """Color and Sharpness: select the degenerate image per example, factor 1 for identity."""

    def parameters(self, b: Batch, local: Tensor) -> tuple[Tensor, Tensor]:
        names = list(self.builders)
        is_color = (local == names.index("Color")).view(-1, 1, 1, 1)
        degenerate = torch.where(is_color, self.builders["Color"](b), self.builders["Sharpness"](b))
        factor = torch.where(local >= 0, b.magnitudes.float(), 1.0)
        return degenerate, factor

    def run_one(self, name: str, b: Batch) -> Tensor:
        return self.kernel(b, (self.builders[name](b), b.magnitudes))


FAMILIES: tuple[Family, ...] = (
    Family("affine", {"ShearX": shear_x_matrix, "ShearY": shear_y_matrix,
                      "TranslateX": translate_x_matrix, "TranslateY": translate_y_matrix,
                      "Rotate": rotate_matrix}, identity_matrix, affine_kernel),
    Family("lut", {"AutoContrast": autocontrast_lut, "Invert": invert_lut,
                   "Equalize": equalize_lut, "Solarize": solarize_lut,
                   "Posterize": posterize_lut, "Contrast": contrast_lut,
                   "Brightness": brightness_lut}, identity_lut, lut_kernel),
    BlendFamily("blend", {"Color": color_degenerate, "Sharpness": sharpness_degenerate},
                lambda b: b.images, blend_kernel),
    Family("fill", {"Cutout": cutout_boxes}, empty_boxes, fill_kernel),
)
FAMILY_OF: dict[str, Family] = {name: f for f in FAMILIES for name in f.builders}
assert sorted(FAMILY_OF) == sorted(OP_NAMES)  # the registry covers space.py's 15 ops exactly


# --------------------------------------------------------------------------------------------
# Public entry points.


def to_uint8(images: Tensor) -> Tensor:
    """uint8 as is; float in [0, 255] rounded and clipped. Always contiguous N×C×H×W."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise HbaError(f"expected images N×C×H×W with C = 1 or 3, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise HbaError(f"images must be uint8 or float in [0, 255], got {images.dtype}")
    return images.round().clamp(0, 255).to(torch.uint8).contiguous()


def draw_centres(n: int, height: int, width: int, generator: torch.Generator | None,
                 device: torch.device) -> Tensor:
    """Uniform pixel positions (N, 2) = (row, column) for Cutout, drawn with ``generator``."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, 2, generator=generator, device=gen_device).to(device)
    return (u * torch.tensor([height, width], device=device)).long()


def make_batch(images: Tensor, magnitudes: Tensor | float | None,
               centres: Tensor | None = None) -> Batch:
    images = to_uint8(images)
    n = images.shape[0]
    if magnitudes is None:
        magnitudes = 0.0
    m = torch.as_tensor(magnitudes, dtype=torch.float32, device=images.device)
    m = torch.nan_to_num(m.expand(n) if m.dim() == 0 else m.reshape(n))  # NaN: prob-only op
    if centres is None:
        centres = torch.zeros(n, 2, dtype=torch.int64, device=images.device)
    return Batch(images, m, centres)


def apply_op(name: str, images: Tensor, magnitudes: Tensor | float | None,
             generator: torch.Generator | None = None) -> Tensor:
    """Apply op ``name`` to every image, each with its own (physical, signed) magnitude.

    ``generator`` draws Cutout's centres. Returns the input's dtype, shape and device.
    """
    if name not in FAMILY_OF:
        raise HbaError(f"unknown augmentation op '{name}' (known: {', '.join(OP_NAMES)})")
    b = make_batch(images, magnitudes)
    if name == "Cutout":
        b.centres = draw_centres(b.images.shape[0], b.height, b.width, generator, b.images.device)
    return FAMILY_OF[name].run_one(name, b).to(images.dtype)


def _batched(name: str) -> Callable[..., Tensor]:
    def op(images: Tensor, magnitudes: Tensor | float | None = None,
           generator: torch.Generator | None = None) -> Tensor:
        return apply_op(name, images, magnitudes, generator)

    op.__name__ = name
    return op


BATCHED_OPS: dict[str, Callable[..., Tensor]] = {name: _batched(name) for name in OP_NAMES}

