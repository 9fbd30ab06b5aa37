"""Decoding: encoded images (bytes or paths) → uint8 N×3×H×W RGB arrays.

Images that share one square size keep it (torchvision's decoder for small images, PIL for
large ones); otherwise every image is resized and centre-cropped to one side (PIL, in worker
processes when there are many). 16 bits a channel become 8 by the high byte on every path.
The memory a set would take is checked before any decoding, and every unreadable image is a
one-line HbaError naming it. Nothing here knows where the images came from.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .errors import HbaError, one_line

# ImageFolder data keeps its images' own size when they all share one square size; images of
# different sizes, or not square, are resized to MIXED_SIZE_SIDE (the scale the paper searches
# at: CIFAR, reduced ImageNet) unless --image-size says otherwise. Images larger than
# TORCHVISION_MAX_SIDE are decoded by PIL, which checks its decompression-bomb limit first.
TORCHVISION_MAX_SIDE = 64
MIXED_SIZE_SIDE = 32
# Decoded images live in memory (then on the device): a set larger than this fraction of the
# machine's RAM is not decoded; an imagefolder tree is then streamed from its files instead.
MEMORY_FRACTION = 0.25


class TooLargeForMemory(HbaError):
    """The decoded images would overfill memory; ``side`` is the size they were decoded at."""

    def __init__(self, message: str, side: int):
        super().__init__(message)
        self.side = side


class _MixedSizes(Exception):
    """The images do not share one square size: decode again with resizing."""


# Pillow's modes of 16-bit greys (and "I", 32-bit, read as 16-bit: older Pillows open 16-bit
# grey PNGs so). Pillow's convert("RGB") clips them at 255; they are scaled like the rest.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_images(payloads: Sequence[bytes | Path], side: int | None = None,
                  workers: int | None = None, names: Sequence[str] | None = None) -> np.ndarray:
    """Encoded images (bytes or paths) → uint8 N×3×side×side RGB.

    Without ``side``, images that all share one square size keep it; otherwise every image is
    resized (shorter side) and centre-cropped to ``side`` (default MIXED_SIZE_SIDE). Native-size
    decoding uses torchvision's decoder for images up to TORCHVISION_MAX_SIDE (faster than PIL
    for small images, same pixels), PIL above; resizing uses PIL's JPEG draft mode, in worker
    processes when there are many images. HbaError before decoding when the images would take
    more than MEMORY_FRACTION of the machine's memory.

    16 bits a channel become 8 by keeping the high byte (v >> 8) on every path: what Pillow
    does itself for 16-bit RGB PNGs and torchvision's ``to_dtype(..., scale=True)`` does, so an
    image's pixels never depend on the images beside it. ``names`` (paths by default) name the
    images in errors: HbaError, one line, for an image that cannot be read, is empty, cannot
    be decoded, or is over Pillow's decompression-bomb limit (a PNG or JPEG larger than
    TORCHVISION_MAX_SIDE goes straight to PIL, which checks the limit in the header first).
    """
    if names is None:
        names = [str(p) if isinstance(p, Path) else f"#{i + 1} of {len(payloads)}"
                 for i, p in enumerate(payloads)]
    return decode_sized(payloads, side, workers, names)[0]


def decode_sized(payloads: Sequence[bytes | Path], side: int | None, workers: int | None,
                 names: Sequence[str]) -> tuple[np.ndarray, str]:
    """``decode_images`` and a line saying how the images were sized (the choice made)."""
    if side is not None:
        return (_decode_resized(payloads, side, workers, names),
                f"images resized to {side}×{side} (--image-size {side})")
    try:
        images = _decode_native(payloads, names)
        side = images.shape[-1]
        return images, (f"images kept at their own size, {side}×{side} (--image-size N "
                        "resizes them)")
    except _MixedSizes:
        side = MIXED_SIZE_SIDE
        return (_decode_resized(payloads, side, workers, names),
                f"images resized to {side}×{side} (they differ in size or are not square; "
                "--image-size N sets the size)")


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes; None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits(count: int, side: int) -> None:
    """HbaError (one line) when count images of side×side would overfill memory."""
    need, total = count * 3 * side * side, _memory_bytes()
    if total is not None and need > MEMORY_FRACTION * total:
        raise TooLargeForMemory(
            f"{count:,} images at {side}×{side} take {need / 2**30:.1f} GiB in memory, over "
            f"{MEMORY_FRACTION:.0%} of this machine's {total / 2**30:.1f} GiB; choose a smaller "
            "--image-size or fewer images", side)


def _read(payload: bytes | Path, where: str) -> bytes:
    if isinstance(payload, Path):
        try:
            payload = payload.read_bytes()
        except OSError as exc:
            raise HbaError(f"cannot read image {where}: {exc.strerror or one_line(exc)}") \
                from None
    if not payload:
        raise HbaError(f"image {where} is empty (0 bytes)")
    return payload


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's or JPEG's header, without decoding; None if not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:                                  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:      # markers without a segment
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # SOFn
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        elif marker == 0xDA:                                # scan data before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _torchvision_decode(data: bytes) -> np.ndarray:
    """Faster than PIL on small JPEGs, same pixels (both libjpeg-turbo)."""
    from torchvision.io import ImageReadMode, decode_image

    with warnings.catch_warnings():   # torchvision 0.29 deprecates its decoders for torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                             mode=ImageReadMode.RGB).numpy()
    if image.dtype == np.uint16:      # 16-bit PNGs: the high byte, as _pil_rgb8 does
        image = (image >> 8).astype(np.uint8)
    return image


def _decode_native(payloads: Sequence[bytes | Path], names: Sequence[str]) -> np.ndarray:
    out: np.ndarray | None = None
    for i, payload in enumerate(payloads):
        data = _read(payload, names[i])
        size = _header_size(data)
        if size is not None and (size[0] != size[1] or (
                out is not None and size[0] != out.shape[-1])):
            raise _MixedSizes     # told by the header, before decoding
        if size is not None and max(size) > TORCHVISION_MAX_SIDE:
            image = _pil_decode(data, None, names[i])   # PIL checks the bomb limit first
        else:
            try:
                image = _torchvision_decode(data)
            except (RuntimeError, ImportError):   # a format (bmp, tiff…) or no torchvision one
                image = _pil_decode(data, None, names[i])
        if out is None:
            if image.shape[1] != image.shape[2]:
                raise _MixedSizes
            _check_fits(len(payloads), image.shape[-1])
            out = np.empty((len(payloads), *image.shape), np.uint8)
        elif image.shape != out.shape[1:]:
            raise _MixedSizes
        out[i] = image
    if out is None:
        return np.zeros((0, 3, MIXED_SIZE_SIDE, MIXED_SIZE_SIDE), np.uint8)
    return out


def _pil_rgb8(im):
    """A PIL image as 8-bit RGB; 16-bit greys by their high byte, not clipped at 255."""
    from PIL import Image

    if im.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(im)
        if im.mode == "I":
            grey = np.clip(grey, 0, 65535)
        im = Image.fromarray((grey >> 8).astype(np.uint8))
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_file(path: str | Path, side: int) -> np.ndarray:
    """One image file as the in-memory decoder makes it at ``side``: uint8 3×side×side."""
    return _pil_decode(Path(path), side)


def _pil_decode(payload: bytes | Path, side: int | None, where: str | None = None) -> np.ndarray:
    """One image with PIL, optionally shorter side → ``side`` and centre crop to side×side."""
    from PIL import Image, ImageOps

    if where is None:
        where = str(payload) if isinstance(payload, Path) else "an archive member"
    data = _read(payload, where)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if side is not None:
                im.draft("RGB", (side, side))   # JPEG: decode at the smallest scale ≥ side
                im = ImageOps.fit(_pil_rgb8(im), (side, side), Image.BICUBIC)
            return np.asarray(_pil_rgb8(im)).transpose(2, 0, 1)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise HbaError(f"image {where} has {pixels}, over Pillow's decompression-bomb limit of "
                       f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (2 × "
                       "PIL.Image.MAX_IMAGE_PIXELS); shrink it or leave it out") from None
    except Exception as exc:   # Pillow raises many types for broken files (OSError, SyntaxError…)
        raise HbaError(f"cannot decode image {where}: {one_line(exc)}") from None


def _decode_resized(payloads: Sequence[bytes | Path], side: int, workers: int | None,
                    names: Sequence[str]) -> np.ndarray:
    _check_fits(len(payloads), side)
    out = np.empty((len(payloads), 3, side, side), np.uint8)
    if workers is None:   # worker start-up only pays off for many (large) images
        workers = (os.cpu_count() or 1) if len(payloads) >= 5000 else 1
    if workers <= 1:
        for i, payload in enumerate(payloads):
            out[i] = _pil_decode(payload, side, names[i])
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        sides = [side] * len(payloads)
        for i, image in enumerate(pool.map(_pil_decode, payloads, sides, names, chunksize=256)):
            out[i] = image
    return out
