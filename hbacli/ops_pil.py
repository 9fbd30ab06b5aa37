"""The 15 operations on one PIL image: the reference semantics of the batched ops in ``ops.py``.

Every op follows Pillow (``ImageOps``, ``ImageEnhance``, ``Image.transform``) with the project's
conventions (SPEC.md §3), so a schedule replayed per image in a user's DataLoader means exactly
what it meant during the batched search:

- magnitudes are physical (``space.OPS`` ranges) and already signed for the geometric ops;
- geometric ops map each output pixel to an input pixel with Pillow's AFFINE matrix
  (output → input, nearest neighbour, the AutoAugment/PBA convention): ShearX (1, m, 0, 0, 1, 0),
  ShearY (1, 0, 0, m, 1, 0), TranslateX (1, 0, m·W, 0, 1, 0), TranslateY (1, 0, 0, 0, 1, m·H);
  Rotate is ``Image.rotate(m)`` (degrees, counter-clockwise, about the centre). Exposed pixels get
  ``FILL`` (grey 128 in every channel);
- Solarize inverts pixels >= 256 − m; Posterize removes round(m) low bits (m = 8: black);
- Contrast, Color, Brightness, Sharpness are ``ImageEnhance`` with factor m (1 = identity);
- Cutout paints a square of side round(m · min(H, W)) centred on a uniformly drawn pixel
  (clipped at the borders) with ``FILL``.

Images are RGB or L (uint8). Probability-only ops ignore their magnitude (None is fine).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .errors import HbaError
from .space import FILL, OP_NAMES, cutout_side


def _fill(image: Image.Image) -> int | tuple[int, ...]:
    return FILL if len(image.getbands()) == 1 else (FILL,) * len(image.getbands())


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix,
                           resample=Image.Resampling.NEAREST, fillcolor=_fill(image))


def shear_x(image: Image.Image, m: float) -> Image.Image:
    return _affine(image, (1, m, 0, 0, 1, 0))


def shear_y(image: Image.Image, m: float) -> Image.Image:
    return _affine(image, (1, 0, 0, m, 1, 0))


def translate_x(image: Image.Image, m: float) -> Image.Image:
    return _affine(image, (1, 0, m * image.width, 0, 1, 0))


def translate_y(image: Image.Image, m: float) -> Image.Image:
    return _affine(image, (1, 0, 0, 0, 1, m * image.height))


def rotate(image: Image.Image, m: float) -> Image.Image:
    return image.rotate(m, resample=Image.Resampling.NEAREST, fillcolor=_fill(image))


def auto_contrast(image: Image.Image, m: float | None = None) -> Image.Image:
    return ImageOps.autocontrast(image)


def invert(image: Image.Image, m: float | None = None) -> Image.Image:
    return ImageOps.invert(image)


def equalize(image: Image.Image, m: float | None = None) -> Image.Image:
    return ImageOps.equalize(image)


def solarize(image: Image.Image, m: float) -> Image.Image:
    return ImageOps.solarize(image, 256 - m)


def posterize(image: Image.Image, m: float) -> Image.Image:
    bits_kept = 8 - round(m)
    if bits_kept <= 0:  # Pillow refuses 0 bits; removing all 8 leaves black
        return image.point([0] * 256 * len(image.getbands()))
    return ImageOps.posterize(image, bits_kept)


def contrast(image: Image.Image, m: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(m)


def color(image: Image.Image, m: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(m)


def brightness(image: Image.Image, m: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(m)


def sharpness(image: Image.Image, m: float) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(m)


def cutout_at(image: Image.Image, m: float, centre: tuple[int, int]) -> Image.Image:
    """Cutout with a given centre (row, column): the deterministic half of ``cutout``."""
    side = cutout_side(m, image.height, image.width)
    top, left = centre[0] - side // 2, centre[1] - side // 2
    box = (max(left, 0), max(top, 0), min(left + side, image.width), min(top + side, image.height))
    out = image.copy()
    if side > 0:
        out.paste(_fill(image), box)
    return out


def cutout(image: Image.Image, m: float, rng: np.random.Generator | None = None) -> Image.Image:
    rng = rng if rng is not None else np.random.default_rng()
    centre = (int(rng.integers(image.height)), int(rng.integers(image.width)))
    return cutout_at(image, m, centre)


PIL_OPS: dict[str, Callable[..., Image.Image]] = {
    "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y,
    "Rotate": rotate, "AutoContrast": auto_contrast, "Invert": invert, "Equalize": equalize,
    "Solarize": solarize, "Posterize": posterize, "Contrast": contrast, "Color": color,
    "Brightness": brightness, "Sharpness": sharpness, "Cutout": cutout,
}
assert tuple(PIL_OPS) == OP_NAMES  # one registry order: space.py's Table 7


def apply_op_pil(name: str, image: Image.Image, magnitude: float | None,
                 rng: np.random.Generator | None = None) -> Image.Image:
    """Apply op ``name`` with a physical (signed) magnitude; ``rng`` draws Cutout's centre."""
    if name not in PIL_OPS:
        raise HbaError(f"unknown augmentation op '{name}' (known: {', '.join(OP_NAMES)})")
    if name == "Cutout":
        return cutout(image, float(magnitude), rng)
    return PIL_OPS[name](image, None if magnitude is None else float(magnitude))
