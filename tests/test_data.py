"""Datasets, splits, loaders and baseline pipelines, on real CIFAR-10 images.

The shipped archive tests/data/cifar10-jpeg.tar.gz (1,200 images) is decoded once per session
(reduced-cifar10, into a tmp cache); everything else uses slices written into tmp dirs as trees,
archives or torchvision files. One test checks the default split on the full 60,000-image
archive in ../shared/datasets and is skipped where that optional archive is absent.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_CLASSES, TEST_DATA
from PIL import Image

from hbacli import datasets, decode, imagefolder
from hbacli.datasets import load_dataset
from hbacli.errors import HbaError
from hbacli.loaders import DeviceLoader, StreamingLoader, make_loader
from hbacli.pipeline import BaselinePipeline, cutout, random_crop, random_flip, random_resized_crop
from hbacli.space import FILL

SHIPPED_TRAIN, SHIPPED_TEST = 100, 20      # images per class in tests/data/cifar10-jpeg.tar.gz


# Every test decodes into its own cache, with no HBA_DATA from the environment.
pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture(scope="session")
def reduced_cifar10(shared_cache):
    """reduced-cifar10 from the shipped archive (1,000 train, 200 test images), found by name in
    tests/data/ and decoded once per session; 400 train and 500 validation images."""
    return load_dataset("reduced-cifar10", data_dir=TEST_DATA, cache=shared_cache,
                        train_size=400, val_size=500)


def _png(image_chw: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0))).save(buffer, "PNG")
    return buffer.getvalue()


def _write_tree(root: Path, cifar_slice, per_class_train: int, per_class_test: int,
                test_folder: str = "test") -> dict[str, np.ndarray]:
    """An ImageFolder tree of lossless PNGs; returns the images in ImageFolder order."""
    expected = {}
    for split, folder, per_class in (("train", "train", per_class_train),
                                     ("test", test_folder, per_class_test)):
        images, labels = cifar_slice[f"{split}_images"], cifar_slice[f"{split}_labels"]
        picked = []
        for c, name in enumerate(CIFAR_CLASSES):
            for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
                path = root / folder / name / f"{k:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_png(images[i]))
                picked.append(i)
        expected[split] = images[picked]
    return expected


def _tar(tree: Path, archive: Path, prefix: str = "") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for sub in ("train", "test", "val"):
            if (tree / sub).is_dir():
                tar.add(tree / sub, arcname=f"{prefix}{sub}")
    return archive


def _assert_one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# --------------------------------------------------------------------------- the real archive

def test_reduced_cifar10_from_the_shipped_archive(reduced_cifar10, cifar_slice):
    s = reduced_cifar10
    assert s.classes == list(CIFAR_CLASSES) and s.num_classes == 10 and s.family == "cifar"
    assert s.train_images.shape == (400, 3, 32, 32) and s.train_images.dtype == torch.uint8
    assert s.val_images.shape == (500, 3, 32, 32) and s.test_images.shape == (200, 3, 32, 32)
    assert s.train_labels.dtype == torch.int64 and len(s.train_labels) == 400
    # Disjoint positions in the 1,000 training images; the pool is in ImageFolder order.
    assert len(np.intersect1d(s.train_index, s.val_index)) == 0
    assert s.train_index.max() < 1000 and s.val_index.max() < 1000
    np.testing.assert_array_equal(s.train_labels.numpy(), s.train_index // SHIPPED_TRAIN)
    np.testing.assert_array_equal(s.val_labels.numpy(), s.val_index // SHIPPED_TRAIN)
    # The test set is the archive's own, untouched: 20 per class, in file order.
    assert torch.bincount(s.test_labels).tolist() == [SHIPPED_TEST] * 10
    np.testing.assert_array_equal(s.test_images.numpy(), cifar_slice["test_images"])
    # Training images are the archive's pixels: those among the first 20 of a class match.
    in_slice = np.flatnonzero(s.train_index % SHIPPED_TRAIN < 20)
    assert len(in_slice) > 50
    slice_pos = ((s.train_index[in_slice] // SHIPPED_TRAIN) * 20
                 + s.train_index[in_slice] % SHIPPED_TRAIN)
    np.testing.assert_array_equal(s.train_images[in_slice].numpy(),
                                  cifar_slice["train_images"][slice_pos])
    # 400 images already give the published CIFAR-10 statistics to within 0.01.
    np.testing.assert_allclose(s.mean, (0.491, 0.482, 0.447), atol=0.01)
    np.testing.assert_allclose(s.std, (0.247, 0.243, 0.262), atol=0.01)


@pytest.mark.slow
def test_reduced_cifar10_default_split_from_the_full_archive(full_cifar_data_dir, shared_cache,
                                                             cifar_slice):
    """The recipe's own sizes need the full archive (optional): decodes all 60,000 JPEGs."""
    s = load_dataset("reduced-cifar10", data_dir=full_cifar_data_dir, cache=shared_cache)
    assert s.classes == list(CIFAR_CLASSES) and s.num_classes == 10 and s.family == "cifar"
    assert s.train_images.shape == (4000, 3, 32, 32) and s.train_images.dtype == torch.uint8
    assert s.val_images.shape == (10000, 3, 32, 32) and s.test_images.shape == (10000, 3, 32, 32)
    assert s.train_labels.dtype == torch.int64 and len(s.train_labels) == 4000
    # Disjoint positions in the 50,000 training images; the pool is in ImageFolder order.
    assert len(np.intersect1d(s.train_index, s.val_index)) == 0
    assert s.train_index.max() < 50000 and s.val_index.max() < 50000
    np.testing.assert_array_equal(s.train_labels.numpy(), s.train_index // 5000)
    np.testing.assert_array_equal(s.val_labels.numpy(), s.val_index // 5000)
    # The test set is the archive's own, untouched: 1,000 per class, in file order.
    assert torch.bincount(s.test_labels).tolist() == [1000] * 10
    first_tests = s.test_images.view(10, 1000, 3, 32, 32)[:, :20].reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(first_tests.numpy(), cifar_slice["test_images"])
    # Training images are the archive's pixels: those among the first 20 of a class match.
    in_slice = np.flatnonzero(s.train_index % 5000 < 20)
    slice_pos = (s.train_index[in_slice] // 5000) * 20 + s.train_index[in_slice] % 5000
    np.testing.assert_array_equal(s.train_images[in_slice].numpy(),
                                  cifar_slice["train_images"][slice_pos])
    np.testing.assert_allclose(s.mean, (0.491, 0.482, 0.447), atol=0.01)   # the published stats
    np.testing.assert_allclose(s.std, (0.247, 0.243, 0.262), atol=0.01)
    # Stats of the 4,000 training images standardise the 10,000 others to ≈ 0 mean, 1 std.
    x = BaselinePipeline("cifar", s.mean, s.std).eval(s.val_images)
    assert x.dtype == torch.float32 and x.shape == s.val_images.shape
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=0.02)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3)).numpy(), 1.0, atol=0.02)


def test_second_load_reads_the_cache_and_reproduces_the_split(reduced_cifar10, shared_cache,
                                                              monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the archive was read again instead of the cache")

    monkeypatch.setattr(imagefolder, "_archive_records", no_decoding)
    again = load_dataset("reduced-cifar10", data_dir=TEST_DATA, cache=shared_cache,
                         train_size=400, val_size=500)
    np.testing.assert_array_equal(again.train_index, reduced_cifar10.train_index)
    assert torch.equal(again.train_images, reduced_cifar10.train_images)
    assert torch.equal(again.val_labels, reduced_cifar10.val_labels)

    other = load_dataset("reduced-cifar10", data_dir=TEST_DATA, cache=shared_cache,
                         split_seed=1, train_size=300, val_size=500)
    assert len(other.train_labels) == 300 and len(other.val_labels) == 500
    assert len(np.intersect1d(other.val_index, reduced_cifar10.val_index)) < 400
    assert torch.equal(other.test_images, reduced_cifar10.test_images)


def test_training_statistics_standardise_validation_images(reduced_cifar10):
    """Stats of the 400 training images standardise them to 0 mean, 1 std, and the 500
    validation images to ≈ 0, 1 (0.05: a 400-image sample; the full-archive test asks 0.02)."""
    pipeline = BaselinePipeline("cifar", reduced_cifar10.mean, reduced_cifar10.std)
    own = pipeline.eval(reduced_cifar10.train_images)
    np.testing.assert_allclose(own.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(own.std(dim=(0, 2, 3)).numpy(), 1.0, atol=1e-4)
    x = pipeline.eval(reduced_cifar10.val_images)
    assert x.dtype == torch.float32 and x.shape == reduced_cifar10.val_images.shape
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=0.05)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3)).numpy(), 1.0, atol=0.05)


# --------------------------------------------------------------------------- splits

def test_split_indices_are_seeded_disjoint_and_validation_comes_first():
    train, val = datasets.split_indices(1000, 300, 200, seed=3)
    assert len(train) == 300 and len(val) == 200 and len(np.intersect1d(train, val)) == 0
    again_train, again_val = datasets.split_indices(1000, 300, 200, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    _, other_val = datasets.split_indices(1000, 300, 200, seed=4)
    assert not np.array_equal(val, other_val)
    rest_train, same_val = datasets.split_indices(1000, None, 200, seed=3)
    np.testing.assert_array_equal(same_val, val)          # train_size does not move validation
    assert len(rest_train) == 800 and set(train) <= set(rest_train)
    with pytest.raises(HbaError, match="exceed"):
        datasets.split_indices(1000, 900, 200, seed=0)
    with pytest.raises(HbaError, match="val_size"):
        datasets.split_indices(100, None, 200, seed=0)


def test_digits_load_offline_with_their_own_split(monkeypatch, tmp_path):
    monkeypatch.setenv("HBA_DATA", str(tmp_path / "nothing-here"))
    s = load_dataset("digits", download=False)
    assert (len(s.train_labels), len(s.val_labels), len(s.test_labels)) == (1000, 400, 397)
    assert s.train_images.shape[1:] == (3, 32, 32) and s.train_images.dtype == torch.uint8
    assert s.classes == [str(d) for d in range(10)] and s.family == "digits"
    assert torch.equal(s.train_images[:, 0], s.train_images[:, 2])       # grey as RGB
    assert s.train_images.max() == 255 and s.train_images.min() == 0
    assert len(np.intersect1d(s.train_index, s.val_index)) == 0
    assert set(torch.bincount(s.train_labels).tolist()) != {0}
    other = load_dataset("digits", split_seed=1)
    assert torch.equal(other.test_images, s.test_images)                 # test is fixed
    assert not np.array_equal(other.val_index, s.val_index)
    assert not (tmp_path / "nothing-here").exists()
    with pytest.raises(HbaError) as exc:
        load_dataset("digits", train_size=1200, val_size=400)
    assert "1400" in _assert_one_line(exc)


# --------------------------------------------------------------------------- finding data

def test_imagefolder_tree_and_archive_give_the_same_dataset(tmp_path, cifar_slice):
    expected = _write_tree(tmp_path / "tree", cifar_slice, per_class_train=5, per_class_test=2)
    archive = _tar(tmp_path / "tree", tmp_path / "mine.tar.gz", prefix="mine/")
    from_tree = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    from_tar = load_dataset(f"imagefolder:{archive}")
    for s in (from_tree, from_tar):
        assert s.classes == list(CIFAR_CLASSES) and s.family == "imagefolder"
        assert (len(s.train_labels), len(s.val_labels), len(s.test_labels)) == (40, 10, 20)
        np.testing.assert_array_equal(s.test_images.numpy(), expected["test"])
        np.testing.assert_array_equal(s.train_images.numpy(), expected["train"][s.train_index])
        np.testing.assert_array_equal(s.train_labels.numpy(), s.train_index // 5)
    assert torch.equal(from_tree.val_images, from_tar.val_images)


def test_imagefolder_of_mixed_sizes_is_resized_and_val_stands_for_test(tmp_path, cifar_slice):
    root = tmp_path / "mixed"
    for k, (name, side, mode) in enumerate([("a", 40, "RGB"), ("a", 24, "L"), ("b", 50, "RGBA"),
                                            ("b", 32, "RGB"), ("a", 36, "RGB")]):
        image = Image.fromarray(cifar_slice["train_images"][k].transpose(1, 2, 0))
        path = root / ("train" if k < 4 else "val") / name / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.resize((side, side + 3)).convert(mode).save(path)
    s = load_dataset(f"imagefolder:{root}", val_size=1)
    assert s.train_images.shape == (3, 3, 32, 32) and s.test_images.shape == (1, 3, 32, 32)
    assert s.classes == ["a", "b"] and s.test_labels.tolist() == [0]


def test_named_dataset_found_under_its_folder_and_archive_names(tmp_path, cifar_slice):
    tree = tmp_path / "data" / "cifar10"
    expected = _write_tree(tree, cifar_slice, per_class_train=3, per_class_test=1)
    s = load_dataset("cifar10", data_dir=tmp_path / "data", train_size=12, val_size=8,
                     download=False)
    assert (len(s.train_labels), len(s.val_labels)) == (12, 8)
    np.testing.assert_array_equal(s.test_images.numpy(), expected["test"])

    archive_dir = tmp_path / "archives"
    archive_dir.mkdir()
    _tar(tree, archive_dir / "cifar10-jpeg.tar.gz")
    from_archive = load_dataset("reduced-cifar10", data_dir=archive_dir, train_size=12,
                                val_size=8, download=False)
    assert torch.equal(from_archive.train_images, s.train_images)
    assert not any(p.name != "cifar10-jpeg.tar.gz" for p in archive_dir.iterdir())  # read-only use


def test_torchvision_files_are_read_without_download(tmp_path, cifar_slice, monkeypatch):
    """A small cifar-10-batches-py in torchvision's pickle format (its md5s are bypassed)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train, train_labels = cifar_slice["train_images"], cifar_slice["train_labels"]
    for b, part in enumerate(np.array_split(np.arange(len(train)), 5)):
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({"data": train[part].reshape(len(part), -1),
                         "labels": train_labels[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": cifar_slice["test_images"].reshape(200, -1),
                     "labels": cifar_slice["test_labels"].tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR_CLASSES)}, f)

    s = load_dataset("cifar10", data_dir=tmp_path, train_size=50, val_size=100, download=False)
    assert s.classes == list(CIFAR_CLASSES)
    np.testing.assert_array_equal(s.test_images.numpy(), cifar_slice["test_images"])
    np.testing.assert_array_equal(s.train_images.numpy(), train[s.train_index])
    np.testing.assert_array_equal(s.val_labels.numpy(), train_labels[s.val_index])


def test_missing_dataset_is_one_line_naming_what_and_where(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(HbaError) as exc:
        load_dataset("reduced-cifar100", data_dir=tmp_path)
    message = _assert_one_line(exc)
    for part in (str(tmp_path), "cifar-100-python", "cifar100", "train/", "download failed",
                 "Name or service not known", "HBA_DATA"):
        assert part in message
    with pytest.raises(HbaError) as exc:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "download not allowed" in _assert_one_line(exc)
    with pytest.raises(HbaError) as exc:
        load_dataset("imagenet", data_dir=tmp_path)
    assert "imagenet" in _assert_one_line(exc)
    with pytest.raises(HbaError) as exc:
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    assert "nope" in _assert_one_line(exc)
    with pytest.raises(HbaError) as exc:
        load_dataset("mnist")
    assert "reduced-cifar10" in _assert_one_line(exc)


def test_failed_download_leaves_no_folder_behind(tmp_path, isolated_cache, monkeypatch):
    """torchvision creates the data folder before it downloads: a failed download (here: no
    network, then a connection lost mid-file) removes the folders it made, and only those."""
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    fresh = tmp_path / "fresh" / "datasets"
    with pytest.raises(HbaError) as exc:
        load_dataset("reduced-cifar10", data_dir=fresh)
    message = _assert_one_line(exc)
    assert "download failed" in message and "Name or service not known" in message
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(HbaError) as exc:                  # the default data dir, <cache>/datasets
        load_dataset("cifar100")
    assert "download failed" in _assert_one_line(exc) and not isolated_cache.exists()

    def cut_off(url, filename, *args, **kwargs):
        Path(filename).write_bytes(b"the first bytes of an archive")
        raise urllib.error.URLError("Connection reset by peer")

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", cut_off)
    with pytest.raises(HbaError) as exc:
        load_dataset("cifar10", data_dir=fresh)
    assert "Connection reset by peer" in _assert_one_line(exc)
    assert not (tmp_path / "fresh").exists()              # partial download and all
    mine = tmp_path / "mine"                              # a folder the user made stays
    mine.mkdir()
    with pytest.raises(HbaError):
        load_dataset("cifar10", data_dir=mine)
    assert mine.is_dir()


def test_reduced_imagenet_keeps_120_classes_at_32px(tmp_path, cifar_slice):
    root = tmp_path / "imagenet"
    images = cifar_slice["train_images"]
    for c in range(121):
        for split, count in (("train", 2), ("val", 1)):
            for k in range(count):
                path = root / split / f"n{c:08d}" / f"{k}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                big = Image.fromarray(images[(c * 3 + k) % 200].transpose(1, 2, 0)).resize((64, 48))
                big.save(path, "JPEG")
    s = load_dataset("reduced-imagenet", data_dir=tmp_path, train_size=100, val_size=40)
    assert s.num_classes == 120 and s.family == "imagenet"
    assert s.train_images.shape == (100, 3, 32, 32) and s.test_images.shape == (120, 3, 32, 32)
    assert sorted(set(s.test_labels.tolist())) == list(range(120))


def test_parallel_resizing_matches_serial(cifar_slice):
    payloads = [_png(image) for image in cifar_slice["train_images"][:24]]
    serial = decode.decode_images(payloads, side=20, workers=1)
    parallel = decode.decode_images(payloads, side=20, workers=2)
    assert serial.shape == (24, 3, 20, 20)
    np.testing.assert_array_equal(serial, parallel)


# --------------------------------------------------------------------------- loaders

def test_device_loader_visits_every_image_once_in_a_seeded_order():
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1).expand(103, 3, 2, 2)
    labels = torch.arange(103)
    loader = DeviceLoader(images, labels, batch_size=10, device="cpu", drop_last=False, seed=7)
    assert len(loader) == 11
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])             # iterating advances the epoch
    assert sorted(epoch0.tolist()) == list(range(103)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    resumed = DeviceLoader(images, labels, batch_size=10, device="cpu", drop_last=False, seed=7)
    resumed.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in resumed]), epoch1)
    first_images, first_labels = next(iter(DeviceLoader(images, labels, 10, "cpu", seed=7)))
    assert first_images.dtype == torch.uint8
    assert torch.equal(first_images[:, 0, 0, 0].long(), first_labels)
    assert len(DeviceLoader(images, labels, 10, "cpu")) == 10                # drop_last
    plain = DeviceLoader(images, labels, 10, "cpu", shuffle=False, drop_last=False)
    assert torch.equal(torch.cat([y for _, y in plain]), labels)
    other_seed = DeviceLoader(images, labels, 10, "cpu", drop_last=False, seed=8)
    assert not torch.equal(torch.cat([y for _, y in other_seed]), epoch0)
    with pytest.raises(HbaError, match="batch size"):
        DeviceLoader(images, labels, 200, "cpu")


def test_imagenet_is_streamed_from_files(tmp_path, cifar_slice):
    root = tmp_path / "imagenet"
    for c in range(3):
        for split, count in (("train", 6), ("val", 2)):
            for k in range(count):
                path = root / split / f"n0{c}" / f"{k}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                image = Image.fromarray(cifar_slice["train_images"][c * 8 + k].transpose(1, 2, 0))
                image.resize((40 + k, 36)).save(path, "JPEG")
    s = load_dataset("imagenet", data_dir=tmp_path, val_size=3)
    assert len(s.files["train"]) == 15 and len(s.files["val"]) == 3 and len(s.files["test"]) == 6
    assert s.mean == datasets.IMAGENET_MEAN and s.train_images.shape[0] == 0
    assert isinstance(make_loader(s, "train", 4, "cpu"), StreamingLoader)

    loader = StreamingLoader(s.files["train"], s.train_labels, 4, "cpu", drop_last=False,
                             seed=1, num_workers=0, side=32)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape == (4, 3, 32, 32)
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(s.train_labels.tolist())
    loader.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, loader))   # same crops, order


# --------------------------------------------------------------------------- baseline pipelines

def test_flip_mirrors_about_half_of_the_images(cifar_slice):
    x = torch.from_numpy(cifar_slice["train_images"]).float()
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.35 < mirrored.float().mean().item() < 0.65


def test_random_crop_shifts_by_at_most_the_padding():
    n, pad = 64, 4
    x = (1 + torch.arange(32 * 32, dtype=torch.float32)).view(1, 1, 32, 32).repeat(n, 3, 1, 1)
    out = random_crop(x, pad, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shifts = set()
    for i in range(n):     # find the shift: the output is the input moved by (dy, dx), zero-filled
        value = out[i, 0][out[i, 0] > 0].min().item()
        src = int(value) - 1
        row = torch.nonzero(out[i, 0] == value)[0]
        dy, dx = src // 32 - row[0].item(), src % 32 - row[1].item()
        assert abs(dy) <= pad and abs(dx) <= pad
        shifted = torch.zeros_like(x[i])
        ys, xs = slice(max(0, -dy), min(32, 32 - dy)), slice(max(0, -dx), min(32, 32 - dx))
        shifted[:, ys, xs] = x[i][:, ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
        assert torch.equal(out[i], shifted)
        shifts.add((dy, dx))
    assert len(shifts) > 10


def test_cutout_paints_one_clipped_square_per_image():
    x = torch.ones(200, 3, 32, 32)
    out = cutout(x, 16, torch.Generator().manual_seed(0))
    full = 0
    for i in range(200):
        hole = out[i, 0] == 0
        assert torch.equal(hole, (out[i] == 0).all(0))       # same hole in every channel
        rows, cols = torch.nonzero(hole.any(1)).flatten(), torch.nonzero(hole.any(0)).flatten()
        height, width = len(rows), len(cols)
        assert hole.sum().item() == height * width > 0        # one rectangle
        assert height <= 16 and width <= 16
        assert height == 16 or rows[0] == 0 or rows[-1] == 31   # smaller only at a border
        assert width == 16 or cols[0] == 0 or cols[-1] == 31
        full += height == width == 16
    assert full > 50


def _is_grey(x: torch.Tensor, pipeline: BaselinePipeline) -> torch.Tensor:
    """N×H×W: where every channel holds grey FILL as the pipeline standardises it."""
    fill = pipeline.eval(torch.full((1, 3, 1, 1), FILL, dtype=torch.uint8)).view(1, 3, 1, 1)
    return (x == fill).all(1)


def test_every_fill_is_grey_128_standardised_like_any_pixel(cifar_slice):
    """The baseline Cutout paints the policy's fill (space.FILL), not the dataset mean."""
    images = torch.from_numpy(cifar_slice["train_images"][:64])
    pipeline = BaselinePipeline("svhn", (0.44, 0.44, 0.47), (0.2, 0.21, 0.22))  # Cutout only
    out = pipeline.train(images, torch.Generator().manual_seed(0))
    painted = (out != pipeline.eval(images)).any(1)
    assert painted.any() and _is_grey(out, pipeline)[painted].all()
    assert FILL == 128


def _ramp_images(n: int) -> torch.Tensor:
    """Images that brighten left to right: a mirrored one darkens."""
    ramp = (10 + 7 * torch.arange(32)).to(torch.uint8)
    return ramp.view(1, 1, 1, 32).expand(n, 3, 32, 32).contiguous()


@pytest.mark.parametrize("family, flip, mirrored", [
    ("cifar", None, True), ("imagefolder", None, True), ("digits", None, False),
    ("svhn", None, False), ("imagefolder", False, False), ("digits", True, True)])
def test_flip_follows_the_family_unless_the_user_says(family, flip, mirrored):
    """Digits are not mirror-invariant: no flip by default; the `flip` setting overrides."""
    pipeline = BaselinePipeline(family, (0.5,) * 3, (0.25,) * 3, cutout=False, flip=flip)
    out = pipeline.train(_ramp_images(200), torch.Generator().manual_seed(0))
    # Columns 10 and 20 stay inside the image whatever the crop's shift (at most 4 pixels).
    darker_right = (out[:, 0, 16, 20] < out[:, 0, 16, 10]).float().mean().item()
    assert (0.35 < darker_right < 0.65) if mirrored else darker_right == 0.0


def test_digits_cutout_hides_a_stroke_not_half_the_digit():
    pipeline = BaselinePipeline("digits", (0.5,) * 3, (0.25,) * 3)
    images = torch.zeros(200, 3, 32, 32, dtype=torch.uint8)
    painted = _is_grey(pipeline.train(images, torch.Generator().manual_seed(0)), pipeline)
    assert painted.flatten(1).sum(1).max().item() == 6 * 6   # of 32×32: 1.5 of 8 source pixels


def test_cifar_pipeline_is_per_example_random_and_generator_seeded(cifar_slice):
    images = torch.from_numpy(cifar_slice["train_images"][:1]).repeat(64, 1, 1, 1)
    pipeline = BaselinePipeline("cifar", (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    a = pipeline.train(images, torch.Generator().manual_seed(5))
    b = pipeline.train(images, torch.Generator().manual_seed(5))
    assert a.dtype == torch.float32 and a.shape == images.shape and torch.equal(a, b)
    assert len({tuple(row.tolist()) for row in a.flatten(1)[:, ::97]}) > 32   # differ per image
    grey = _is_grey(a, pipeline)
    assert bool((grey.flatten(1).sum(1) >= 64).all())   # at least Cutout's clipped 8×8 corner
    no_cutout = BaselinePipeline("cifar", (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), cutout=False)
    assert _is_grey(no_cutout.train(images, torch.Generator().manual_seed(5)), pipeline).sum() \
        < grey.sum()
    with pytest.raises(HbaError):
        BaselinePipeline("mnist", (0.5,) * 3, (0.5,) * 3)


def test_svhn_pipeline_is_standardise_then_cutout_20(cifar_slice):
    images = torch.from_numpy(cifar_slice["train_images"][:50])
    pipeline = BaselinePipeline("svhn", (0.44, 0.44, 0.47), (0.2, 0.2, 0.2))
    plain = pipeline.eval(images)
    out = pipeline.train(images, torch.Generator().manual_seed(0))
    changed = (out != plain).any(1)
    for i in range(50):
        rows = torch.nonzero(changed[i].any(1)).flatten()
        cols = torch.nonzero(changed[i].any(0)).flatten()
        assert len(rows) <= 20 and len(cols) <= 20 and _is_grey(out[i:i + 1], pipeline)[0][
            changed[i]].all()
    assert max(int(changed[i].sum()) for i in range(50)) == 400


def test_imagenet_pipeline_crops_jitters_and_standardises(cifar_slice):
    small = torch.from_numpy(cifar_slice["train_images"][:16])
    pipeline = BaselinePipeline("imagenet", datasets.IMAGENET_MEAN, datasets.IMAGENET_STD)
    out = pipeline.train(small, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and torch.isfinite(out).all()
    assert pipeline.eval(small).shape == (16, 3, 32, 32)
    big = torch.nn.functional.interpolate(small[:2].float(), size=256).to(torch.uint8)
    assert pipeline.train(big, torch.Generator().manual_seed(0)).shape == (2, 3, 224, 224)
    assert pipeline.eval(big).shape == (2, 3, 224, 224)
    # The crop is a box of the image: the whole image when asked so, else a smaller one.
    whole = random_resized_crop(small.float(), 32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(whole, small.float(), atol=1e-3, rtol=0)
    columns = torch.arange(32.0).expand(16, 3, 32, 32)
    quarter = random_resized_crop(columns, 32, torch.Generator().manual_seed(2), scale=(0.25, 0.25),
                                  ratio=(1.0, 1.0))
    spans = quarter.amax(dim=(1, 2, 3)) - quarter.amin(dim=(1, 2, 3))
    assert bool(((spans > 14.5) & (spans < 16)).all())          # a 16-pixel-wide box each
    assert len(set(quarter.amin(dim=(1, 2, 3)).tolist())) > 4     # at different places
    # On a flat grey image crops change nothing; jitter and lighting change each image's colour:
    # brightness ×U[0.6, 1.4] spreads the grey level widely; lighting (σ 0.1) shifts it ~0.02.
    grey = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    jittered = pipeline.train(grey, torch.Generator().manual_seed(1))
    per_image = jittered.mean(dim=(2, 3))
    assert torch.allclose(jittered, per_image[:, :, None, None].expand_as(jittered), atol=1e-4)
    level = per_image * torch.tensor(datasets.IMAGENET_STD) + torch.tensor(datasets.IMAGENET_MEAN)
    assert level.mean(1).max() - level.mean(1).min() > 0.25
    channel_spread = level - level.mean(1, keepdim=True)
    assert 2e-4 < channel_spread.abs().mean() < 0.01   # only lighting tints grey, a little
