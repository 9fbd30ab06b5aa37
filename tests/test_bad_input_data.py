"""What a user might hand to ``--dataset imagefolder:PATH`` that is wrong or unusual (issue 13).

Every bad input must end in one line (HbaError; the CLI's ``error: …``, exit code 2) that names
the file or folder and the problem, before any training; an unusual but valid input (16-bit
PNGs) must give the right 8-bit pixels, whatever images lie beside it. The folders are small
real ImageFolder trees (and .tar.gz archives of them) written with Pillow into tmp_path.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hbacli.cli import app
from hbacli.datasets import load_dataset
from hbacli.errors import HbaError

CLASSES = ("cat", "dog")


# Every test decodes into its own cache, with no HBA_DATA from the environment.
pytestmark = pytest.mark.usefixtures("isolated_cache")


# --------------------------------------------------------------------------- making folders

def _image(seed: int, side: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _good_folder(root: Path, side: int = 32) -> Path:
    """A valid two-class ImageFolder tree: train/{cat,dog}/ 3 PNGs each, test/ 2 each."""
    seed = 0
    for split, count in (("train", 3), ("test", 2)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                _image(seed, side).save(root / split / cls / f"{k}.png")
                seed += 1
    return root


def _tar(root: Path) -> Path:
    archive = root.with_name(root.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            if (root / split).exists():
                tar.add(root / split, arcname=split)
    return archive


def _png_bytes(width: int, height: int, bit_depth: int, color_type: int,
               rows: Iterable[bytes]) -> bytes:
    """A PNG written by hand (Pillow cannot write 48-bit RGB, nor a bomb without 200 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    z = zlib.compressobj()
    idat = b"".join(z.compress(b"\0" + row) for row in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _load(path: Path):
    return load_dataset(f"imagefolder:{path}", val_size=0)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and message.strip() == message
    return message


# --------------------------------------------------------------------------- what a user might do
# Each maker gets a valid two-class tree at `root`, spoils it, and returns the path to load.

def _zero_byte_file(root, monkeypatch):
    (root / "train" / "cat" / "3.png").write_bytes(b"")
    return root


def _zero_byte_file_in_tar(root, monkeypatch):
    return _tar(_zero_byte_file(root, monkeypatch))


def _truncated_jpeg_in_tar(root, monkeypatch):
    _image(99).save(root / "train" / "dog" / "9.jpg", "JPEG")
    data = (root / "train" / "dog" / "9.jpg").read_bytes()
    (root / "train" / "dog" / "9.jpg").write_bytes(data[:len(data) // 3])
    return _tar(root)


def _decompression_bomb(root, monkeypatch):
    # 14,000 × 14,000 1-bit pixels in a 20 KB file: over Pillow's limit of 2 × 89,478,485.
    side = 14_000
    (root / "train" / "dog" / "bomb.png").write_bytes(
        _png_bytes(side, side, 1, 0, (bytes(side // 8) for _ in range(side))))
    return root


def _unreadable_file(root, monkeypatch):
    path = root / "test" / "cat" / "0.png"
    path.chmod(0)
    if os.access(path, os.R_OK):       # root reads anything: let the OS's refusal be simulated
        real = Path.read_bytes

        def read_bytes(self):
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return root


def _one_class(root, monkeypatch):
    for split in ("train", "test"):
        shutil.rmtree(root / split / "dog")
    return root


def _one_class_tar(root, monkeypatch):
    return _tar(_one_class(root, monkeypatch))


def _empty_train_class_folder(root, monkeypatch):
    (root / "train" / "bird").mkdir()
    return root


def _empty_test_class_folder(root, monkeypatch):
    shutil.rmtree(root / "test" / "dog")
    (root / "test" / "dog").mkdir()
    return root


def _class_folder_of_non_images(root, monkeypatch):
    (root / "train" / "bird").mkdir()
    (root / "train" / "bird" / "notes.txt").write_text("birds go here")
    (root / "train" / "bird" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _empty_class_folder_in_tar(root, monkeypatch):
    return _tar(_empty_train_class_folder(root, monkeypatch))


BAD_INPUTS: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("a zero-byte image file", _zero_byte_file, ("train/cat/3.png", "empty")),
    ("a zero-byte image inside a .tar.gz", _zero_byte_file_in_tar,
     ("data.tar.gz", "train/cat/3.png", "empty")),
    ("a truncated JPEG inside a .tar.gz", _truncated_jpeg_in_tar,
     ("data.tar.gz", "train/dog/9.jpg", "cannot decode")),
    ("an image over Pillow's decompression-bomb limit", _decompression_bomb,
     ("train/dog/bomb.png", "196,000,000 pixels", "decompression-bomb limit",
      "178,956,970")),
    ("an image file nobody may read", _unreadable_file,
     ("test/cat/0.png", "cannot read", "Permission denied")),
    ("a dataset with a single class", _one_class, ("1 class (cat)", "at least 2 classes")),
    ("a .tar.gz with a single class", _one_class_tar, ("1 class (cat)", "at least 2 classes")),
    ("an empty class folder in train/", _empty_train_class_folder,
     ("empty class folder", "train/bird")),
    ("an empty class folder in test/", _empty_test_class_folder,
     ("empty class folder", "test/dog")),
    ("a class folder holding no images, only other files", _class_folder_of_non_images,
     ("empty class folder", "train/bird")),
    ("an empty class folder inside a .tar.gz", _empty_class_folder_in_tar,
     ("empty class folder", "data.tar.gz", "train/bird")),
]


@pytest.mark.parametrize("what, spoil, fragments", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_in_one_line_naming_it(what, spoil, fragments, tmp_path,
                                                     monkeypatch):
    path = spoil(_good_folder(tmp_path / "data"), monkeypatch)
    with pytest.raises(HbaError) as exc:
        _load(path)
    message = _one_line(exc)
    for fragment in fragments:
        assert fragment in message, f"{what}: {fragment!r} not in {message!r}"


def test_the_cli_says_error_and_exits_2_before_training(tmp_path):
    path = _one_class(_good_folder(tmp_path / "data"), None)
    result = CliRunner().invoke(app, ["search", "--dataset", f"imagefolder:{path}",
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "at least 2 classes" in lines[-1]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_an_empty_class_folder_made_after_a_load_is_not_hidden_by_the_cache(tmp_path):
    """The decoded-image cache must not hide a class folder emptied after the first load."""
    root = _good_folder(tmp_path / "data")
    assert _load(root).classes == list(CLASSES)
    (root / "train" / "bird").mkdir()
    with pytest.raises(HbaError, match="empty class folder"):
        _load(root)


# --------------------------------------------------------------------------- 16-bit PNGs

def _grey16(values: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG, written by Pillow (mode I;16)."""
    image = Image.fromarray(values.astype(np.uint16))
    assert image.mode == "I;16"
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _rgb48(values: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (16 bits a channel), as photo tools export."""
    h, w, _ = values.shape
    return _png_bytes(w, h, 16, 2, (values[y].astype(">u2").tobytes() for y in range(h)))


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_16bit_png_keeps_its_high_byte_whatever_its_neighbours(kind, tmp_path):
    """v >> 8 (Pillow's own 16→8-bit rule for RGB PNGs, torchvision's to_dtype(scale=True)),
    the same whether the neighbours share its size (kept as is) or not (all resized to 32)."""
    rng = np.random.default_rng(16)
    if kind == "grey":
        values = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
        values[0, :4] = (0, 255, 256, 65535)        # the values wrapping and clipping got wrong
        data, expected = _grey16(values), np.repeat((values >> 8)[None], 3, axis=0)
    else:
        values = rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
        values[0, 0] = (255, 256, 65535)
        data, expected = _rgb48(values), (values >> 8).transpose(2, 0, 1)
    for neighbours_side in (32, 40):     # 40: mixed sizes, every image is resized to 32 × 32
        root = _good_folder(tmp_path / f"beside-{neighbours_side}", side=neighbours_side)
        (root / "train" / "cat" / "0.png").write_bytes(data)     # the first training image
        s = _load(root)
        assert s.train_images.shape[1:] == (3, 32, 32) and s.train_index[0] == 0
        np.testing.assert_array_equal(s.train_images[0].numpy(), expected.astype(np.uint8),
                                      err_msg=f"16-bit {kind} beside {neighbours_side}-px images")
