"""The augmentation kernels of Self-Tuning Networks' CIFAR search space, batched per example.

STN (MacKay et al. 2019; asteroidhouse/self-tuning-networks) gives every example of a batch its
own perturbed hyperparameters and augments it with them, one image at a time in its data
loader. These kernels do the same to a whole batch at once, with the hyperparameters as (N,)
tensors (one value per example): no loop over examples, no host synchronisation, every random
draw from the ``generator`` argument (which lives on the images' device; None: torch's global
generator), results on the images' device and in their dtype. The facts:

- Colour jitter (cnn/datasets/cifar.py ``set_jitters``): per example, torchvision's
  ``ColorJitter(brightness, contrast, saturation, hue)`` with that example's strengths, after
  STN maps each strength v to (1 − 2·1e-3)·v + 1e-3 (``stn_jitter_strength``; the kernels take
  the strengths as given). ColorJitter (``get_params``, ``forward``) draws a brightness,
  contrast and saturation factor in U[max(0, 1 − v), 1 + v] and a hue shift in U[−v, v], and
  applies the four adjustments in a random order. ``colour_jitter_with`` applies them as
  torchvision's tensor functionals do on float images (``adjust_brightness``: x·f clamped to
  [0, 1]; ``adjust_contrast``: blend with the mean of the image's grayscale; ``adjust_saturation``:
  blend with the grayscale; ``adjust_hue``: RGB → HSV, shift the hue modulo 1, → RGB).
- Cutout with several holes (cnn/util/cutout.py): per hole a uniform centre pixel (y, x) and
  the zeroed rows [int(clip(y − L/2, 0, h)), int(clip(y + L/2, 0, h))), columns likewise.
  STN applies it after standardisation, so a hole holds the dataset mean.
- Input dropout (cnn/hypertrain.py, ``tune_indropout``): STN's elementwise inverted dropout
  (cnn/util/dropout.py) of the standardised images, one rate per example.
- Input scaling (cnn/hypertrain.py, ``tune_inscale``): each image times one factor
  u = ((1 + s) − 1/(1 + s))·U + 1/(1 + s), U ~ U[0, 1): u lies in [1/(1 + s), 1 + s).

STN runs ColorJitter on PIL images (uint8, PIL's own HSV conversion); these kernels follow
torchvision's float-tensor path, which differs from PIL's by the uint8 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import HbaError
from .nets.dropout import per_example_dropout

JITTER_EPS = 1e-3      # STN's set_jitters: strengths kept 1e-3 inside [0, 1]
# Columns of the jitter strengths and factors, and the adjustment numbers of an order: those of
# torchvision's ColorJitter (fn_idx 0 brightness, 1 contrast, 2 saturation, 3 hue).
JITTER_ADJUSTMENTS = ("brightness", "contrast", "saturation", "hue")
MAX_HUE = 0.5          # ColorJitter refuses a hue strength above 0.5
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)   # torchvision's rgb_to_grayscale


def _check_images(images: Tensor, what: str, rgb: bool = False) -> None:
    if images.ndim != 4 or not images.is_floating_point() or (rgb and images.shape[1] != 3):
        raise HbaError(f"{what} takes a floating N×{'3' if rgb else 'C'}×H×W batch of images, "
                       f"got {images.dtype} of shape {tuple(images.shape)}")


def _per_example(values: Tensor, images: Tensor, what: str,
                 dtype: torch.dtype | None = None) -> Tensor:
    """``values`` checked to be (N,), on the images' device in ``dtype`` (default: theirs)."""
    if not isinstance(values, Tensor) or values.ndim != 1 or values.shape[0] != images.shape[0]:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise HbaError(f"{what} needs an (N,) tensor, one value per image ({images.shape[0]}), "
                       f"got {shape}")
    return values.to(device=images.device, dtype=dtype or images.dtype)


def _per_image(values: Tensor) -> Tensor:
    """(N,) → (N, 1, 1, 1), to broadcast over an image's pixels."""
    return values.view(-1, 1, 1, 1)


# --- colour jitter -----------------------------------------------------------------------------

def stn_jitter_strength(values: Tensor) -> Tensor:
    """STN's strengths (``set_jitters``): v ↦ (1 − 2·1e-3)·v + 1e-3, applied to every tuned
    jitter before ColorJitter sees it (an untuned one stays 0, i.e. off)."""
    return (1 - 2 * JITTER_EPS) * values + JITTER_EPS


def jitter_parameters(strengths: Tensor, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
    """ColorJitter's random draw, per example: ``strengths`` (N, 4) as (brightness, contrast,
    saturation, hue) → factors (N, 4) (three factors and a hue shift, same columns) and order
    (N, 4) long, a random permutation of 0..3 per example.

    Negative strengths count as 0 and hue strengths above 0.5 as 0.5, the ends of the range
    ColorJitter accepts (it raises instead; a tensor's values cannot be checked without a host
    synchronisation). A strength of 0 gives factor 1 (shift 0) exactly.
    """
    if strengths.ndim != 2 or strengths.shape[1] != 4 or not strengths.is_floating_point():
        raise HbaError(f"jitter strengths must be a floating (N, 4) tensor (brightness, contrast, "
                       f"saturation, hue), got {strengths.dtype} of shape "
                       f"{tuple(strengths.shape)}")
    strengths = strengths.clamp_min(0)
    scale, hue = strengths[:, :3], strengths[:, 3:].clamp_max(MAX_HUE)
    low = torch.cat([(1 - scale).clamp_min(0), -hue], dim=1)
    high = torch.cat([1 + scale, hue], dim=1)
    uniform = torch.rand(strengths.shape, generator=generator, device=strengths.device,
                         dtype=strengths.dtype)
    factors = low + (high - low) * uniform
    # torch.randperm draws one permutation per call; sorting i.i.d. uniforms draws one per row
    # (ties, of probability ~1e-6 per row, still give a permutation).
    order = torch.rand(strengths.shape, generator=generator, device=strengths.device,
                       dtype=torch.float32).argsort(dim=1)
    return factors, order


def _grayscale(images: Tensor) -> Tensor:
    """N×1×H×W luma, with torchvision's weights."""
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(images: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's _blend of float images, per-example ratio (N, 1, 1, 1)."""
    return (ratio * images + (1 - ratio) * other).clamp(0, 1)


def _rgb_to_hsv(images: Tensor) -> Tensor:
    """torchvision's tensor RGB → HSV (after Pillow's), hue in [0, 1)."""
    r, g, b = images.unbind(1)
    maxc, minc = images.amax(1), images.amin(1)
    grey = maxc == minc
    spread = maxc - minc
    ones = torch.ones_like(maxc)
    # Grey pixels have saturation and hue 0; the denominators are replaced by 1 there rather
    # than dividing by zero (the hue's three terms then sum to a multiple of 6, i.e. hue 0).
    saturation = spread / torch.where(grey, ones, maxc)
    divisor = torch.where(grey, ones, spread)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, maxc), dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """torchvision's tensor HSV → RGB: the hue's sextant i picks each channel among v, p, q, t."""
    h, s, v = hsv.unbind(1)
    sextant = torch.floor(h * 6.0)
    f = h * 6.0 - sextant
    i = sextant.to(torch.int32) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # Sextants 0..5: red is v q p p t v, green t v v q p p, blue p p t v v q.
    r = torch.where((i == 0) | (i == 5), v, torch.where(i == 1, q, torch.where(i == 4, t, p)))
    g = torch.where((i == 1) | (i == 2), v, torch.where(i == 0, t, torch.where(i == 3, q, p)))
    b = torch.where((i == 3) | (i == 4), v, torch.where(i == 2, t, torch.where(i == 5, q, p)))
    return torch.stack((r, g, b), dim=1)


def _adjust(images: Tensor, adjustment: int, factor: Tensor) -> Tensor:
    """One of the four adjustments with a per-example factor (N, 1, 1, 1)."""
    if adjustment == 0:
        return (images * factor).clamp(0, 1)
    if adjustment == 1:
        return _blend(images, _grayscale(images).mean(dim=(1, 2, 3), keepdim=True), factor)
    if adjustment == 2:
        return _blend(images, _grayscale(images), factor)
    hsv = _rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, :1] + factor, 1.0)
    return _hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


def colour_jitter_with(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Apply, to each image, the four adjustments with its ``factors`` (N, 4) in its ``order``
    (N, 4): images float N×3×H×W in [0, 1].

    Four stages; in stage k every adjustment is computed for the whole batch and each image
    keeps the one its order names. An image whose factor is 1 (shift 0) keeps its pixels for
    that adjustment, as ColorJitter skips an adjustment of strength 0 (and the HSV round trip
    is not exact).
    """
    _check_images(images, "colour jitter", rgb=True)
    n = images.shape[0]
    if factors.shape != (n, 4) or order.shape != (n, 4):
        raise HbaError(f"colour jitter of {n} images needs factors and order of shape ({n}, 4), "
                       f"got {tuple(factors.shape)} and {tuple(order.shape)}")
    factors = factors.to(device=images.device, dtype=images.dtype)
    order = order.to(images.device)
    neutral = (1.0, 1.0, 1.0, 0.0)
    for stage in range(4):
        adjustment = _per_image(order[:, stage])
        result = images
        for index in range(4):
            factor = _per_image(factors[:, index])
            chosen = (adjustment == index) & (factor != neutral[index])
            result = torch.where(chosen, _adjust(images, index, factor), result)
        images = result
    return images


def colour_jitter(images: Tensor, strengths: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """ColorJitter per example: ``strengths`` (N, 4) as (brightness, contrast, saturation, hue);
    see ``jitter_parameters`` and ``colour_jitter_with``."""
    _check_images(images, "colour jitter", rgb=True)
    if strengths.ndim != 2 or strengths.shape[0] != images.shape[0]:
        raise HbaError(f"colour jitter of {images.shape[0]} images needs strengths of shape "
                       f"({images.shape[0]}, 4), got {tuple(strengths.shape)}")
    factors, order = jitter_parameters(strengths.to(images.device), generator)
    return colour_jitter_with(images, factors, order)


# --- Cutout ------------------------------------------------------------------------------------

def cutout_holes_at(images: Tensor, length: Tensor, holes: Tensor, centres: Tensor) -> Tensor:
    """STN's Cutout with the hole centres given: ``centres`` (N, max_holes, 2) long as (y, x).

    Image i gets its first floor(holes[i]) holes (at most max_holes), squares of side
    floor(length[i]) zeroed in every channel. The kernel floors ``length`` and ``holes`` itself
    (a no-op on whole numbers): a caller that wants a tolerance under whole numbers (a
    sigmoid's 3.9999998 read as 4) applies it before. Length or holes ≤ 0: image unchanged.
    """
    _check_images(images, "Cutout")
    n, _, height, width = images.shape
    if centres.ndim != 3 or centres.shape[0] != n or centres.shape[2] != 2:
        raise HbaError(f"Cutout of {n} images needs hole centres of shape ({n}, max_holes, 2), "
                       f"got {tuple(centres.shape)}")
    # Float32 holds the pixel coordinates and half lengths exactly, whatever the images' dtype.
    side = _per_example(length, images, "Cutout's length", torch.float32).floor()
    count = _per_example(holes, images, "Cutout's holes", torch.float32).floor()
    half = side[:, None] / 2
    centres = centres.to(device=images.device, dtype=torch.float32)
    y, x = centres.unbind(2)                                       # (N, max_holes) each
    # STN: int(np.clip(y ∓ L/2, 0, h)); int truncates, which is floor on the clipped values.
    top, bottom = (y - half).clamp(0, height).floor(), (y + half).clamp(0, height).floor()
    left, right = (x - half).clamp(0, width).floor(), (x + half).clamp(0, width).floor()
    rows = torch.arange(height, device=images.device, dtype=torch.float32)
    columns = torch.arange(width, device=images.device, dtype=torch.float32)
    in_rows = (rows >= top[..., None]) & (rows < bottom[..., None])         # (N, holes, H)
    in_columns = (columns >= left[..., None]) & (columns < right[..., None])  # (N, holes, W)
    keep = torch.ones((n, height, width), dtype=torch.bool, device=images.device)
    for hole in range(centres.shape[1]):
        used = (count > hole).view(-1, 1, 1)
        keep &= ~(used & in_rows[:, hole, :, None] & in_columns[:, hole, None, :])
    return images * keep[:, None].to(images.dtype)


def cutout_holes(images: Tensor, length: Tensor, holes: Tensor, max_holes: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """STN's Cutout per example: ``length`` and ``holes`` (N,) (floored, see
    ``cutout_holes_at``), each hole's centre a uniform pixel; at most ``max_holes`` holes
    (STN's range of holes is [0, 4])."""
    _check_images(images, "Cutout")
    if isinstance(max_holes, bool) or not isinstance(max_holes, int) or max_holes < 0:
        raise HbaError(f"Cutout's max_holes must be a whole number ≥ 0, got {max_holes!r}")
    n, _, height, width = images.shape
    y = torch.randint(height, (n, max_holes), generator=generator, device=images.device)
    x = torch.randint(width, (n, max_holes), generator=generator, device=images.device)
    return cutout_holes_at(images, length, holes, torch.stack((y, x), dim=2))


# --- input dropout and scaling -----------------------------------------------------------------

def input_dropout(images: Tensor, rates: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """STN's input dropout: elementwise inverted dropout, image i at rate ``rates[i]`` in [0, 1)
    (not checked on the device; a rate of 1 gives zeros). The rates get no gradient (STN
    detaches them)."""
    _check_images(images, "input dropout")
    return per_example_dropout(images, _per_example(rates, images, "input dropout's rates"),
                               channelwise=False, generator=generator)


def input_scale(images: Tensor, scale: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
    """STN's input scaling: image i times u_i = ((1 + s_i) − 1/(1 + s_i))·U + 1/(1 + s_i),
    U ~ U[0, 1), s = ``scale`` (N,) ≥ 0; s_i = 0 leaves image i unchanged."""
    _check_images(images, "input scaling")
    s = _per_example(scale, images, "input scaling's scale")
    low, high = 1 / (1 + s), 1 + s
    uniform = torch.rand(s.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images * _per_image((high - low) * uniform + low)
