"""The baseline pipeline: everything after the policy, in the paper's §4.2 order.

``BaselinePipeline`` turns uint8 batches into standardised float32 ones for a dataset family
(``catalogue.FAMILIES``: flip, pad-and-crop, Cutout; ImageNet's random-resized crop, colour
jitter and PCA lighting). Every kernel is batched, draws its per-example randomness on the
images' device from an optional generator, and never syncs with the host.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .catalogue import FAMILIES, choices
from .errors import HbaError
from .space import FILL

__all__ = ["BaselinePipeline", "standardise", "random_flip", "random_crop", "cutout",
           "random_resized_crop", "centre_crop", "colour_jitter", "pca_lighting"]

MaybeGenerator = torch.Generator | None   # on the images' device; None: torch's default RNG


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device) -> torch.Tensor:
    """A small constant tensor, copied to each device once: a fresh copy per batch would
    block the host on every step (a host-to-device copy from pageable memory syncs)."""
    return torch.tensor(values, dtype=torch.float32, device=device)


# --------------------------------------------------------------------------- augmentation pieces
# Every piece takes float N×C×H×W and draws per-example randomness on the images' device.

def _uniform(n: int, like: torch.Tensor, generator: MaybeGenerator,
             low: float = 0.0, high: float = 1.0, *shape: int) -> torch.Tensor:
    u = torch.rand((n, *shape), generator=generator, device=like.device, dtype=torch.float32)
    return low + (high - low) * u


def _randint(high: int, n: int, like: torch.Tensor, generator: MaybeGenerator) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=like.device)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x/255 − mean)/std for uint8 input, (x − mean)/std for 0..1 floats."""
    mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    if x.dtype == torch.uint8:   # one new tensor, then in place: no four full-size temporaries
        return x.float().sub_(mean * 255.0).div_(std * 255.0)
    return (x - mean) / std


def random_flip(x: torch.Tensor, generator: MaybeGenerator = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _uniform(len(x), x, generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: torch.Tensor, pad: int, generator: MaybeGenerator = None) -> torch.Tensor:
    """Zero-pad by ``pad`` on every side, then crop back to H×W at a random offset per image.

    Offsets are 0..2·pad inclusive (shifts of −pad..pad, as torchvision's RandomCrop).
    """
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    shifts = 2 * pad + 1
    padded = F.pad(x, (pad, pad, pad, pad))
    # Every crop of every image as one strided view (no copy): [image, top, left, C, H, W];
    # indexing it copies exactly the chosen crops, whole rows at a time (no per-pixel gather).
    sn, sc, sh, sw = padded.stride()
    windows = padded.as_strided((n, shifts, shifts, c, h, w), (sn, sh, sw, sc, sh, sw))
    top = _randint(shifts, n, x, generator)
    left = _randint(shifts, n, x, generator)
    return windows[torch.arange(n, device=x.device), top, left]


def cutout(x: torch.Tensor, size: int, generator: MaybeGenerator = None,
           fill: torch.Tensor | None = None) -> torch.Tensor:
    """Paint a size×size square per image, centred anywhere on it and clipped at the borders.

    ``fill``: per-channel values (C,); None paints zero, the dataset mean after
    standardisation (DeVries & Taylor). The baseline pipeline passes grey 128 standardised.
    """
    if size <= 0:
        return x
    n, _, h, w = x.shape
    top = _randint(h, n, x, generator) - size // 2
    left = _randint(w, n, x, generator) - size // 2
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_rows = (r >= top[:, None]) & (r < top[:, None] + size)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + size)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    if fill is None:
        return x.masked_fill(hole[:, None], 0.0)
    return torch.where(hole[:, None], fill.to(x.dtype).view(1, -1, 1, 1), x)


def random_resized_crop(x: torch.Tensor, out_size: int, generator: MaybeGenerator = None,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        tries: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop, batched: a box per image, bilinear to out_size².

    Ten candidate boxes per image; the first that fits is used, else the whole image.
    """
    n, _, h, w = x.shape
    area = h * w * _uniform(n, x, generator, scale[0], scale[1], tries)
    log_ratio = _uniform(n, x, generator, math.log(ratio[0]), math.log(ratio[1]), tries)
    aspect = torch.exp(log_ratio)
    box_w = torch.sqrt(area * aspect).round()
    box_h = torch.sqrt(area / aspect).round()
    fits = (box_w >= 1) & (box_w <= w) & (box_h >= 1) & (box_h <= h)
    first = fits.int().argmax(dim=1, keepdim=True)
    any_fit = fits.any(dim=1)
    box_w = torch.where(any_fit, box_w.gather(1, first).squeeze(1), float(w))
    box_h = torch.where(any_fit, box_h.gather(1, first).squeeze(1), float(h))
    top = torch.floor(_uniform(n, x, generator) * (h - box_h + 1))
    left = torch.floor(_uniform(n, x, generator) * (w - box_w + 1))
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = box_w / w
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 1] = box_h / h
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def colour_jitter(x: torch.Tensor, strength: float = 0.4,
                  generator: MaybeGenerator = None) -> torch.Tensor:
    """Brightness, contrast, saturation, each ×U[1−s, 1+s] per image, on 0..1 floats.

    A fixed order (fb.resnet.torch shuffles it per image) keeps it one batched pass.
    """
    n = len(x)
    factor = _uniform(n, x, generator, 1 - strength, 1 + strength, 3).view(n, 3, 1, 1, 1)
    x = (x * factor[:, 0]).clamp(0, 1)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factor[:, 1] + mean).clamp(0, 1)
    grey = _grey(x)
    return ((x - grey) * factor[:, 2] + grey).clamp(0, 1)


# AlexNet's PCA lighting noise: eigenvalues/vectors of ImageNet's RGB covariance (0..1 scale).
_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
               (-0.5808, -0.0045, -0.8140),
               (-0.5836, -0.6948, 0.4203))


def pca_lighting(x: torch.Tensor, alpha_std: float = 0.1,
                 generator: MaybeGenerator = None) -> torch.Tensor:
    """Add eigvec · (α ⊙ eigval) to every pixel, α ~ N(0, alpha_std²) per image."""
    alpha = torch.randn((len(x), 3), generator=generator, device=x.device) * alpha_std
    eigval = _constant(_PCA_EIGVAL, x.device)
    eigvec = _constant(_PCA_EIGVEC, x.device)
    shift = (alpha * eigval) @ eigvec.T                  # N×3: Σ_j eigvec[c, j]·α_j·λ_j
    return x + shift[:, :, None, None]


class BaselinePipeline:
    """Everything after the policy (paper §4.2), uint8 in, standardised float32 out.

    cifar: standardise → flip → zero-pad-4 random crop → Cutout 16. svhn: standardise →
    Cutout 20. imagenet: random-resized-crop → flip → colour jitter → PCA lighting →
    standardise. digits: standardise → pad-4 crop → Cutout 6; imagefolder: as cifar; pad and
    Cutout scale by side/32 (``catalogue.FAMILIES``). ``flip`` None takes the family's default.
    cutout=False drops Cutout. Images of side > 64 in the imagenet family (streamed 256²)
    come out at 7/8 of their side (224), smaller ones keep their size (reduced ImageNet: 32).

    Fill: Cutout paints grey ``space.FILL`` (128), the policy's fill for exposed pixels and
    its own Cutout, so every fill in hba follows one rule (see ``space.FILL``).
    """

    def __init__(self, family: str, mean, std, cutout: bool = True, flip: bool | None = None):
        if family not in FAMILIES:
            raise HbaError(f"unknown dataset family '{family}' (known: {choices(FAMILIES)})")
        self.family, self.cutout = family, cutout
        self.recipe = FAMILIES[family]
        self.flip = self.recipe.flip if flip is None else flip
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # What a grey-FILL pixel becomes after standardise(), computed by standardise itself
        # so a painted pixel equals a grey image pixel bit for bit.
        grey = torch.full((1, len(self.mean), 1, 1), FILL, dtype=torch.uint8)
        self.fill = tuple(standardise(grey, *self._stats(torch.device("cpu"))).flatten().tolist())

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return _constant(self.mean, device), _constant(self.std, device)

    @staticmethod
    def output_side(side: int) -> int:
        """ImageNet-family crop size: 224 for 256² streamed images, unchanged for ≤ 64."""
        return side * 7 // 8 if side > 64 else side

    @staticmethod
    def _scaled(size_at_32: int, h: int, w: int) -> int:
        return round(size_at_32 * min(h, w) / 32)

    def train(self, images_uint8: torch.Tensor, generator: MaybeGenerator = None) -> torch.Tensor:
        mean, std = self._stats(images_uint8.device)
        h, w = images_uint8.shape[-2:]
        if self.family == "imagenet":
            x = images_uint8.float() / 255.0
            x = random_resized_crop(x, self.output_side(min(h, w)), generator)
            if self.flip:
                x = random_flip(x, generator)
            x = colour_jitter(x, 0.4, generator)
            x = pca_lighting(x, 0.1, generator)
            return standardise(x, mean, std)
        x = standardise(images_uint8, mean, std)
        if self.flip:
            x = random_flip(x, generator)
        x = random_crop(x, self._scaled(self.recipe.pad_at_32, h, w), generator)
        if self.cutout:
            x = cutout(x, self._scaled(self.recipe.cutout_at_32, h, w), generator,
                       fill=_constant(self.fill, x.device))
        return x

    def eval(self, images_uint8: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(images_uint8.device)
        x = images_uint8
        if self.family == "imagenet":
            side = min(x.shape[-2:])
            if self.output_side(side) != side:
                x = centre_crop(x, self.output_side(side))
        return standardise(x, mean, std)
