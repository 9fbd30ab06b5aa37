"""The C kernels: built and cached on first use, the same images as the torch kernels on awkward
shapes, and a clean fallback where they cannot be built. (Agreement with Pillow per op is in
``test_ops.py``; the whole policy against op-by-op application in ``test_policy.py``.)"""

from __future__ import annotations

import shutil

import pytest
import torch

from hbacli import ops, ops_native, policy, space


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


def test_the_c_side_has_every_op_and_family_of_space_and_takes_their_conventions():
    """The C file names its op functions and family kernels; the table passed with each call
    maps every op of space.OPS, in its order, to the C function of the same name and to its
    family's kernel, with its scale and rounding."""
    lib = ops_native.library()
    if lib is None:
        pytest.skip("the C kernels could not be built here")
    functions = ops_native._names(lib.hba_op_name)
    families = ops_native._names(lib.hba_family_name)
    assert sorted(functions) == sorted(space.OP_NAMES)
    assert sorted(families) == sorted(space.KERNEL_FAMILY_NAMES)
    table = ops_native.op_table(lib, 24, 40)
    assert [functions[row.function] for row in table] == list(space.OP_NAMES)
    assert [families[row.family] for row in table] == [op.family for op in space.OPS]
    assert [row.scale for row in table] == [op.scale_factor(24, 40) for op in space.OPS]
    assert [bool(row.rounded) for row in table] == [op.rounding is not None for op in space.OPS]
    assert {f.name for f in ops.KERNEL_FAMILIES} == set(families)


def test_op_tables_that_do_not_match_space_are_refused():
    names, families = list(space.OP_NAMES), list(space.KERNEL_FAMILY_NAMES)
    rows = ops_native.op_rows(names[::-1], families[::-1])  # any order: matched by name
    assert [names[::-1][f] for f, _ in rows] == names
    with pytest.raises(RuntimeError, match="op functions"):
        ops_native.op_rows(names[:-1], families)  # an op without its C function
    with pytest.raises(RuntimeError, match="op functions"):
        ops_native.op_rows(names + ["Blur"], families)  # a C function without its spec row
    with pytest.raises(RuntimeError, match="family kernels"):
        ops_native.op_rows(names, families[:-1])


def test_a_table_or_op_index_out_of_range_is_refused_by_the_c_side(monkeypatch):
    lib = ops_native.library()
    if lib is None:
        pytest.skip("the C kernels could not be built here")
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    m, centres = torch.zeros(2, 2), torch.zeros(2, 2, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="op indices"):
        ops_native.augment_stages(x, torch.full((2, 2), len(space.OPS)), m, centres)
    bad = (ops_native.OpRow * len(space.OPS))(*ops_native.op_table(lib, 8, 8))
    bad[3].family = 99
    monkeypatch.setattr(ops_native, "op_table", lambda *_: bad)
    with pytest.raises(ValueError, match="family kernel"):
        ops_native.augment_stages(x, torch.full((2, 2), -1), m, centres)
