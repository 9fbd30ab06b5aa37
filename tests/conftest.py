"""Shared fixtures: slices of real CIFAR-10 images from the small copy shipped in tests/data/.

tests/data/cifar10-jpeg.tar.gz (1,200 images, see tests/data/README.md) is always used, so the
results do not depend on the machine; the full 60,000-image archive in ../shared/datasets is
optional and only read by the few tests that need the full dataset (skipped without it)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
CIFAR_ARCHIVE = TEST_DATA / "cifar10-jpeg.tar.gz"        # shipped: 100 train, 20 test per class
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"     # optional: the full archive
FULL_CIFAR_ARCHIVE = SHARED_DATASETS / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")


def _shipped_archive() -> Path:
    if not CIFAR_ARCHIVE.is_file():
        pytest.fail(f"the test data {CIFAR_ARCHIVE} is missing (rebuild it with "
                    "tests/data/make_fixture.py)")
    return CIFAR_ARCHIVE


def _read_cifar_slice(per_class: int) -> dict[str, np.ndarray]:
    """The first `per_class` train and test images of every class, decoded with PIL."""
    picked: dict[tuple[str, str], list[np.ndarray]] = {}
    with tarfile.open(_shipped_archive(), "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or not member.isfile():
                continue
            split, cls, _ = parts
            bucket = picked.setdefault((split, cls), [])
            if len(bucket) < per_class:
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                    bucket.append(np.asarray(im.convert("RGB")))
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = [img for c in CIFAR_CLASSES for img in picked[(split, c)]]
        labels = [i for i, c in enumerate(CIFAR_CLASSES) for _ in picked[(split, c)]]
        out[f"{split}_images"] = np.stack(images).transpose(0, 3, 1, 2).copy()  # N×3×32×32 uint8
        out[f"{split}_labels"] = np.array(labels, dtype=np.int64)
    return out


@pytest.fixture(scope="session")
def cifar_slice() -> dict[str, np.ndarray]:
    """20 train and 20 test images per class of real CIFAR-10: uint8 N×3×32×32 and labels."""
    return _read_cifar_slice(per_class=20)


@pytest.fixture(scope="session")
def cifar_archive() -> Path:
    """The shipped ImageFolder archive: train/<class>/NNNN.jpg (100), test/<class>/NNNN.jpg (20)."""
    return _shipped_archive()


@pytest.fixture(scope="session")
def full_cifar_data_dir() -> Path:
    """The folder holding the full CIFAR-10 archive; skips the test where it is absent."""
    if not FULL_CIFAR_ARCHIVE.is_file():
        pytest.skip(f"needs the full CIFAR-10 archive {FULL_CIFAR_ARCHIVE} (optional; 60,000 "
                    "images, more than the 1,200 shipped in tests/data/)")
    return SHARED_DATASETS


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of the test's own (decoded datasets are cached by file listing) and no
    HBA_DATA from the environment. Use with ``pytest.mark.usefixtures("isolated_cache")``."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HBA_CACHE", str(cache))
    monkeypatch.delenv("HBA_DATA", raising=False)
    return cache


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """`hba search`/`hba evaluate` set torch's thread count where they start (an entry point's
    job); run in-process through CliRunner, they would change it for every later test, and CPU
    results depend on it (a search resumed on another thread count is not bit-identical)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets gain nothing from a second thread and lose much to OpenMP contention when
    other jobs share the two cores (measured: 80 s → 26 s for the evaluate tests under load).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_policy():
    """make(n, seed) → per-example probabilities in [0.2, 1) and magnitudes anywhere in their
    ranges (N, 30), and the policy's uniforms (N, UNIFORMS_PER_IMAGE): a busy, varied walk."""
    import torch

    from hbacli import policy, space

    def make(n: int, seed: int):
        rng = np.random.default_rng(seed)
        p = torch.tensor(rng.uniform(0.2, 1.0, (n, 30)), dtype=torch.float32)
        m = torch.tensor(np.nan_to_num(space.split_physical(space.lambda_to_physical(
            rng.normal(0, 2, (n, 54))))[1]), dtype=torch.float32)
        u = torch.rand(n, policy.UNIFORMS_PER_IMAGE, generator=torch.Generator().manual_seed(seed))
        return p, m, u

    return make
