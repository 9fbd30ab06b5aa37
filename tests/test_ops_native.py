"""The C kernels: built and cached on first use, the same images as the torch kernels on awkward
shapes, and a clean fallback where they cannot be built. (Agreement with Pillow per op is in
``test_ops.py``; the whole policy against op-by-op application in ``test_policy.py``.)"""

from __future__ import annotations

import shutil

import pytest
import torch

from hbacli import ops_native, policy


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """An empty kernel cache, no loaded library and none installed (these tests are about the
    first-use build), restored afterwards."""
    monkeypatch.setenv("HBA_CACHE", str(tmp_path))
    monkeypatch.setattr(ops_native, "_installed", lambda: None)
    ops_native.library.cache_clear()
    yield tmp_path
    ops_native.library.cache_clear()


@pytest.mark.skipif(not any(shutil.which(c) for c in ("cc", "gcc", "clang")),
                    reason="no C compiler on this machine")
def test_built_once_into_the_cache_and_reused(fresh_library):
    assert ops_native.library() is not None
    built = list((fresh_library / "kernels").glob("ops_native-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    ops_native.library.cache_clear()
    assert ops_native.library() is not None
    assert [p.stat().st_mtime_ns for p in (fresh_library / "kernels").glob("*.so")] == [stamp]
    assert policy.default_kernels(torch.device("cpu")) == "native"


@pytest.mark.parametrize("shape", [(256, 3, 32, 32), (128, 1, 32, 32), (32, 3, 64, 48),
                                   (64, 3, 7, 5), (64, 1, 3, 3), (64, 3, 2, 2)])
def test_same_images_as_the_torch_kernels(shape, random_policy):
    if ops_native.library() is None:
        pytest.skip("the C kernels could not be built here")
    n = shape[0]
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    x[: n // 4] = x[: n // 4] // 4 + 100  # low-contrast images: AutoContrast, Equalize stretch
    x[n // 4: n // 4 + 4] = 77  # flat images: the ops' degenerate cases
    p, m, u = random_policy(n, seed=shape[2])
    native = policy.augment_from_uniform(x, p, m, u, kernels="native")
    assert torch.equal(native, policy.augment_from_uniform(x, p, m, u, kernels="sorted"))
    assert (native != x).flatten(1).any(1).float().mean() > 0.4  # most images changed


def test_disabled_by_environment_falls_back_to_torch(fresh_library, monkeypatch):
    monkeypatch.setenv("HBA_NATIVE", "0")
    assert ops_native.library() is None
    assert policy.default_kernels(torch.device("cpu")) == "sorted"
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = policy.augment_batch(x, torch.full((30,), 0.5), torch.zeros(30),
                               torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    with pytest.raises(RuntimeError, match="not available"):
        ops_native.augment_stages(x, torch.full((16, 2), -1), torch.zeros(16, 2),
                                  torch.zeros(16, 2, 2, dtype=torch.int64))


def test_a_failing_compiler_warns_once_and_falls_back(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", shutil.which("false") or "false")
    with pytest.warns(UserWarning, match="falls back to the slower torch kernels"):
        assert ops_native.library() is None
    assert not list(fresh_library.glob("kernels/*.so"))  # no half-built library left behind
    assert policy.default_kernels(torch.device("cpu")) == "sorted"


def test_bad_arguments_are_refused():
    if ops_native.library() is None:
        pytest.skip("the C kernels could not be built here")
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    stages, m, centres = torch.full((4, 2), -1), torch.zeros(4, 2), torch.zeros(4, 2, 2)
    with pytest.raises(ValueError, match="uint8 CPU"):
        ops_native.augment_stages(x.float(), stages, m, centres)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ops_native.augment_stages(x, stages[:3], m, centres)
    assert torch.equal(ops_native.augment_stages(x, stages, m, centres), x)
