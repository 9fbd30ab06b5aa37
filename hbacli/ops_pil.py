"""The 15 operations on one PIL image: the reference semantics of the batched ops in ``ops.py``.

Every op follows Pillow (``ImageOps``, ``ImageEnhance``, ``Image.transform``) with the project's
conventions (paper Table 7, the operations of PBA), so a schedule replayed per image in a user's
DataLoader means exactly what it meant during the batched search:

- magnitudes are physical (``space.OPS`` ranges) and already signed for the geometric ops; each
  function here takes the op's *argument*, the magnitude scaled and rounded as its row in
  ``space.OPS`` says (``OpSpec.argument``; ``apply_op_pil`` converts): TranslateX/Y take pixels
  (m·W, m·H), Posterize whole bits, Cutout a whole side in pixels (round(m·min(H, W)));
- geometric ops map each output pixel to an input pixel with Pillow's AFFINE matrix
  (output → input, nearest neighbour, the AutoAugment/PBA convention): ShearX (1, m, 0, 0, 1, 0),
  ShearY (1, 0, 0, m, 1, 0), TranslateX (1, 0, m·W, 0, 1, 0), TranslateY (1, 0, 0, 0, 1, m·H);
  Rotate is ``Image.rotate(m)`` (degrees, counter-clockwise, about the centre). Exposed pixels get
  ``FILL`` (grey 128 in every channel);
- Solarize inverts pixels >= 256 − m; Posterize removes round(m) low bits (m = 8: black);
- Contrast, Color, Brightness, Sharpness are ``ImageEnhance`` with factor m (1 = identity);
- Cutout paints a square of side round(m · min(H, W)) centred on a uniformly drawn pixel
  (clipped at the borders) with ``FILL``: positioned ops take that pixel as a third argument.

Images are RGB or L (uint8). Probability-only ops ignore their argument.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .errors import HbaError
from .space import FILL, OP_BY_NAME, OP_NAMES


def _fill(image: Image.Image) -> int | tuple[int, ...]:
    return FILL if len(image.getbands()) == 1 else (FILL,) * len(image.getbands())


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix,
                           resample=Image.Resampling.NEAREST, fillcolor=_fill(image))


def shear_x(image: Image.Image, shear: float) -> Image.Image:
    return _affine(image, (1, shear, 0, 0, 1, 0))


def shear_y(image: Image.Image, shear: float) -> Image.Image:
    return _affine(image, (1, 0, 0, shear, 1, 0))


def translate_x(image: Image.Image, pixels: float) -> Image.Image:
    return _affine(image, (1, 0, pixels, 0, 1, 0))


def translate_y(image: Image.Image, pixels: float) -> Image.Image:
    return _affine(image, (1, 0, 0, 0, 1, pixels))


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.NEAREST, fillcolor=_fill(image))


def auto_contrast(image: Image.Image, _: float = 0.0) -> Image.Image:
    return ImageOps.autocontrast(image)


def invert(image: Image.Image, _: float = 0.0) -> Image.Image:
    return ImageOps.invert(image)


def equalize(image: Image.Image, _: float = 0.0) -> Image.Image:
    return ImageOps.equalize(image)


def solarize(image: Image.Image, m: float) -> Image.Image:
    return ImageOps.solarize(image, 256 - m)


def posterize(image: Image.Image, bits: float) -> Image.Image:
    bits_kept = 8 - int(bits)
    if bits_kept <= 0:  # Pillow refuses 0 bits; removing all 8 leaves black
        return image.point([0] * 256 * len(image.getbands()))
    return ImageOps.posterize(image, min(bits_kept, 8))


def contrast(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def color(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def sharpness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(factor)


def cutout(image: Image.Image, side: float, centre: tuple[int, int]) -> Image.Image:
    """A square of ``side`` pixels centred on ``centre`` (row, column), clipped, painted FILL."""
    side = int(side)
    top, left = centre[0] - side // 2, centre[1] - side // 2
    box = (max(left, 0), max(top, 0), min(left + side, image.width), min(top + side, image.height))
    out = image.copy()
    if side > 0:
        out.paste(_fill(image), box)
    return out


# Each op's reference: (image, argument) → image; positioned ops (image, argument, centre).
PIL_OPS: dict[str, Callable[..., Image.Image]] = {
    "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y,
    "Rotate": rotate, "AutoContrast": auto_contrast, "Invert": invert, "Equalize": equalize,
    "Solarize": solarize, "Posterize": posterize, "Contrast": contrast, "Color": color,
    "Brightness": brightness, "Sharpness": sharpness, "Cutout": cutout,
}
assert sorted(PIL_OPS) == sorted(OP_NAMES)  # one reference per op of space.OPS


def random_position(height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly drawn pixel (row, column): the position a positioned op takes."""
    return int(rng.integers(height)), int(rng.integers(width))


def apply_op_pil(name: str, image: Image.Image, magnitude: float | None,
                 rng: np.random.Generator | None = None,
                 centre: tuple[int, int] | None = None) -> Image.Image:
    """Apply op ``name`` with a physical (signed) magnitude. Positioned ops (Cutout) take
    ``centre`` (row, column), else one drawn with ``rng``; the others ignore both."""
    op = OP_BY_NAME.get(name)
    if op is None:
        raise HbaError(f"unknown augmentation op '{name}' (known: {', '.join(OP_NAMES)})")
    value = op.argument(magnitude, image.height, image.width)
    if not op.positioned:
        return PIL_OPS[name](image, value)
    if centre is None:
        rng = rng if rng is not None else np.random.default_rng()
        centre = random_position(image.height, image.width, rng)
    return PIL_OPS[name](image, value, centre)
