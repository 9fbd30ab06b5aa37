"""Image size of ``imagefolder:`` data (issue 16, item 2): the images' own size when they share
one square size, ``--image-size N`` otherwise or on request, the choice printed and cached
apart, the baseline pipeline scaled with it, and ``.zip`` archives read like ``.tar``."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_CLASSES
from PIL import Image, ImageOps
from typer.testing import CliRunner

from hbacli import decode, imagefolder, pipeline
from hbacli.catalogue import FAMILIES
from hbacli.datasets import load_dataset
from hbacli.errors import HbaError
from hbacli.pipeline import BaselinePipeline

# Every test decodes into its own cache, with no HBA_DATA from the environment.
pytestmark = pytest.mark.usefixtures("isolated_cache")


def _write_set(root: Path, cifar_slice, sizes, classes=("cat", "dog"), per_class=3,
               test_per_class=1) -> dict[str, list[Image.Image]]:
    """A two-class tree of PNGs made from real CIFAR images, resized to ``sizes`` (w, h) taken
    in turn; returns the PIL images written per split in ImageFolder order."""
    written: dict[str, list[Image.Image]] = {"train": [], "test": []}
    k = 0
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name in classes:
            for j in range(count):
                source = cifar_slice[f"{split}_images"][k % len(cifar_slice[f"{split}_images"])]
                image = Image.fromarray(source.transpose(1, 2, 0)).resize(
                    sizes[k % len(sizes)], Image.BICUBIC)
                path = root / split / name / f"{j:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                written[split].append(image)
                k += 1
    return written


def _load(path: Path, **kwargs):
    return load_dataset(f"imagefolder:{path}", val_size=0, **kwargs)


def _message(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("imagefolder:")]
    assert len(lines) == 1, lines
    return lines[0]


# --------------------------------------------------------------------------- the size chosen

@pytest.mark.parametrize("side", [48, 80])   # 80: above the old 64-px limit, PIL's decoder
def test_a_shared_square_size_is_kept_whatever_it_is(side, tmp_path, cifar_slice, capsys):
    written = _write_set(tmp_path / "set", cifar_slice, [(side, side)])
    s = _load(tmp_path / "set")
    assert s.train_images.shape[1:] == (3, side, side) and s.image_size == side
    expected = np.stack([np.asarray(im).transpose(2, 0, 1) for im in written["test"]])
    np.testing.assert_array_equal(s.test_images.numpy(), expected)
    assert f"kept at their own size, {side}×{side}" in _message(capsys)


def test_image_size_resizes_the_shorter_side_and_centre_crops(tmp_path, cifar_slice, capsys):
    written = _write_set(tmp_path / "set", cifar_slice, [(48, 48), (60, 48), (48, 72)])
    s = _load(tmp_path / "set", image_size=40)
    assert s.train_images.shape[1:] == (3, 40, 40) and s.image_size == 40
    expected = np.stack([np.asarray(ImageOps.fit(im, (40, 40), Image.BICUBIC)).transpose(2, 0, 1)
                         for im in written["train"]])
    np.testing.assert_array_equal(s.train_images.numpy(), expected)
    assert "resized to 40×40 (--image-size 40)" in _message(capsys)


@pytest.mark.parametrize("sizes", [[(40, 40), (24, 24), (50, 50)],    # mixed square sizes
                                   [(48, 40)]])                        # one size, not square
def test_mixed_or_non_square_images_follow_the_stated_rule_and_say_so(sizes, tmp_path,
                                                                      cifar_slice, capsys):
    _write_set(tmp_path / "set", cifar_slice, sizes)
    s = _load(tmp_path / "set")
    side = decode.MIXED_SIZE_SIDE
    assert s.train_images.shape[1:] == (3, side, side) and s.image_size == side
    message = _message(capsys)
    assert f"resized to {side}×{side}" in message and "--image-size" in message


def test_the_choice_is_printed_on_every_load_even_from_the_cache(tmp_path, cifar_slice, capsys,
                                                                 monkeypatch):
    _write_set(tmp_path / "set", cifar_slice, [(48, 48)])
    _load(tmp_path / "set")
    first = _message(capsys)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again: the cache was not used")

    monkeypatch.setattr(imagefolder, "decode_sized", no_decoding)
    again = _load(tmp_path / "set")
    assert _message(capsys) == first and again.image_size == 48


def test_the_cache_keeps_each_size_apart(tmp_path, cifar_slice, isolated_cache, capsys):
    _write_set(tmp_path / "set", cifar_slice, [(48, 48)])
    shapes = {size: _load(tmp_path / "set", image_size=size).train_images.shape[-1]
              for size in (40, 24, None)}
    assert shapes == {40: 40, 24: 24, None: 48}
    assert len(list((isolated_cache / "decoded").glob("imagefolder-*.npz"))) == 3
    assert _load(tmp_path / "set", image_size=40).train_images.shape[-1] == 40   # from the cache


def test_image_size_for_a_named_dataset_is_a_one_line_error():
    with pytest.raises(HbaError) as exc:
        load_dataset("digits", image_size=40)
    message = str(exc.value)
    assert "\n" not in message and "imagefolder" in message and "digits" in message


def test_a_tree_too_large_for_memory_is_streamed_with_the_images_it_would_hold(
        tmp_path, cifar_slice, monkeypatch, capsys):
    """Over a quarter of memory, a tree is not decoded but streamed from its files: the same
    images (its in-memory twin's, file by file), its mean and std from its training images."""
    from hbacli.loaders import StreamingLoader, make_loader

    _write_set(tmp_path / "set", cifar_slice, [(48, 48)])
    twins = {size: _load(tmp_path / "set", image_size=size, cache=tmp_path / "twins")
             for size in (40, None)}      # cached apart: a cached set would be read back whole
    monkeypatch.setattr(decode, "_memory_bytes", lambda: 4 * 6 * 3 * 40 * 40)  # 25%: 6 of 8
    capsys.readouterr()
    for size, side in ((40, 40), (None, 48)):   # the native size is checked too
        streamed = _load(tmp_path / "set", image_size=size)
        assert "8 images at" in _message(capsys) and streamed.files is not None
        twin = twins[size]
        assert streamed.image_size == side and len(streamed.train_images) == 0
        assert np.allclose(streamed.mean, twin.mean) and np.allclose(streamed.std, twin.std)
        for split in ("train", "test"):
            loader = make_loader(streamed, split, batch_size=2, device="cpu", shuffle=False,
                                 drop_last=False)
            assert isinstance(loader, StreamingLoader)
            loader.num_workers = 0
            images = torch.cat([x for x, _ in loader])
            assert torch.equal(images, getattr(twin, f"{split}_images"))
    assert _load(tmp_path / "set", image_size=20).files is None    # a smaller size fits


def test_an_archive_too_large_for_memory_is_refused_in_one_line(tmp_path, cifar_slice,
                                                                monkeypatch):
    _write_set(tmp_path / "set", cifar_slice, [(48, 48)])
    archive = tmp_path / "set.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "set", arcname=".")
    monkeypatch.setattr(decode, "_memory_bytes", lambda: 4 * 6 * 3 * 40 * 40)
    with pytest.raises(HbaError) as exc:
        _load(archive, image_size=40)
    message = str(exc.value)
    assert "\n" not in message and "8 images at 40×40" in message and "--image-size" in message
    assert "extract set.tar into a folder" in message


def test_a_search_runs_on_a_streamed_tree_and_evaluate_says_it_cannot(tmp_path, cifar_slice,
                                                                      monkeypatch):
    from hbacli.presets import resolve_evaluate_config, resolve_search_config
    from hbacli.search import run_search
    from hbacli.trainer import load_training_data

    _write_set(tmp_path / "set", cifar_slice, [(48, 48)], per_class=8, test_per_class=2)
    monkeypatch.setattr(decode, "_memory_bytes", lambda: 3 * 48 * 48)   # nothing fits
    name = f"imagefolder:{tmp_path / 'set'}"
    cfg = resolve_search_config(name, model="wrn16_1", epochs=1, batch_size=4, val_size=4,
                                device="cpu")
    schedule = run_search(cfg, out=tmp_path / "s.json", run_dir=tmp_path / "run",
                          progress=False)
    assert schedule.epochs == 1 and schedule.provenance.train_size == 12
    with pytest.raises(HbaError, match="streamed from image files"):
        load_training_data(resolve_evaluate_config("none", name, "wrn16_1", device="cpu"))


# --------------------------------------------------------------------------- the pipeline

def test_the_baseline_pipeline_scales_pad_and_cutout_with_the_size(tmp_path, cifar_slice,
                                                                    monkeypatch, capsys):
    recipe = FAMILIES["imagefolder"]
    assert (recipe.pad_at_32, recipe.cutout_at_32) == (4, 16)     # as CIFAR at 32×32
    _write_set(tmp_path / "set", cifar_slice, [(64, 64)])
    s = _load(tmp_path / "set")
    assert s.image_size == 64
    seen = {}
    real_crop, real_cutout = pipeline.random_crop, pipeline.cutout

    def crop(x, pad, generator=None):
        seen["pad"] = pad
        return real_crop(x, pad, generator)

    def cut(x, size, generator=None, **kwargs):
        seen["cutout"] = size
        return real_cutout(x, size, generator, **kwargs)

    monkeypatch.setattr(pipeline, "random_crop", crop)
    monkeypatch.setattr(pipeline, "cutout", cut)
    out = BaselinePipeline("imagefolder", s.mean, s.std).train(
        s.train_images, torch.Generator().manual_seed(0))
    assert out.shape == s.train_images.shape and seen == {"pad": 8, "cutout": 32}


# --------------------------------------------------------------------------- .zip archives

def _tar_to_zip(archive: Path, out: Path) -> Path:
    with tarfile.open(archive, "r:*") as tar, zipfile.ZipFile(out, "w") as z:
        for member in tar:
            if member.isfile():
                z.writestr(member.name, tar.extractfile(member).read())
    return out


def test_a_zip_gives_the_same_dataset_as_its_tar(tmp_path, cifar_archive, capsys):
    zipped = _tar_to_zip(cifar_archive, tmp_path / "cifar10-jpeg.zip")
    from_tar, from_zip = _load(cifar_archive), _load(zipped)
    assert from_zip.classes == from_tar.classes == list(CIFAR_CLASSES)
    for split in ("train", "test"):
        for part in ("images", "labels"):
            name = f"{split}_{part}"
            assert torch.equal(getattr(from_zip, name), getattr(from_tar, name))
    assert from_zip.image_size == 32 and len(from_zip.train_labels) == 1000


def test_a_named_dataset_is_found_as_a_zip(tmp_path, cifar_archive, capsys):
    (tmp_path / "data").mkdir()
    _tar_to_zip(cifar_archive, tmp_path / "data" / "cifar10-jpeg.zip")
    s = load_dataset("cifar10", data_dir=tmp_path / "data", download=False, val_size=100)
    assert len(s.test_labels) == 200 and s.classes == list(CIFAR_CLASSES)


def _png_bytes(side: int, value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (value, value, value)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_members_outside_the_tree_are_ignored_and_nothing_is_written(kind, tmp_path, capsys):
    good = [f"set/{split}/{c}/{i}.png" for split in ("train", "test") for c in ("a", "b")
            for i in range(2)]
    bad = ["../../train/zzz/0.png", "set/../../escaped/train/a/9.png", "/abs/train/zzz/1.png"]
    work = tmp_path / "work"
    work.mkdir()
    archive = work / f"set.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for k, name in enumerate(good + bad):
                z.writestr(name, _png_bytes(32, 10 * k))
    else:
        with tarfile.open(archive, "w") as tar:
            for k, name in enumerate(good + bad):
                payload = _png_bytes(32, 10 * k)
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    before = sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts)
    s = _load(archive)
    assert s.classes == ["a", "b"] and len(s.train_labels) == 4 and len(s.test_labels) == 4
    values = sorted(int(v) for v in s.train_images[:, 0, 0, 0])
    assert values == [0, 10, 20, 30]                  # only the good members, in order
    assert sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts) == before
    assert not (tmp_path.parent / "escaped").exists() and not Path("/abs").exists()


def test_a_zip_that_is_not_an_imagefolder_says_so(tmp_path, capsys):
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "no images")
    with pytest.raises(HbaError, match="no images in"):
        _load(archive)


# --------------------------------------------------------------------------- the CLI and config

def test_the_image_size_flag_and_field_reach_the_configs(tmp_path, monkeypatch):
    import hbacli.evaluate
    import hbacli.search
    from hbacli.cli import app

    seen = {}
    monkeypatch.setattr(hbacli.search, "run_search", lambda cfg, **kw: seen.update(search=cfg))
    monkeypatch.setattr(hbacli.evaluate, "run_evaluation",
                        lambda cfg, **kw: seen.update(evaluate=cfg))
    runner = CliRunner()
    dataset = f"imagefolder:{tmp_path / 'mine'}"
    result = runner.invoke(app, ["search", "--dataset", dataset, "--image-size", "96",
                                 "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "none", "--dataset", dataset, "--model", "wrn16_1",
                                 "--image-size", "40", "--run-dir", str(tmp_path / "run2")])
    assert result.exit_code == 0, result.output
    assert seen["search"].image_size == 96 and seen["evaluate"].image_size == 40

    config = tmp_path / "config.yaml"
    config.write_text(f"dataset: '{dataset}'\nimage_size: 64\n")
    result = runner.invoke(app, ["search", "--config", str(config),
                                 "--run-dir", str(tmp_path / "run3")])
    assert result.exit_code == 0, result.output
    assert seen["search"].image_size == 64
    config.write_text(f"dataset: '{dataset}'\nimage_size: 0\n")
    result = runner.invoke(app, ["search", "--config", str(config),
                                 "--run-dir", str(tmp_path / "run4")])
    assert result.exit_code == 2 and "image_size" in result.output
