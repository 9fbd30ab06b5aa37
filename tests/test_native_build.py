"""The C kernels built at install time (``setup.py`` → ``hbacli/_ops_native_lib<suffix>``):
preferred over the first-use build, which stays as the fallback (ignoring a library built from
another ``ops_native.c``, or one that does not load), then the torch kernels with one warning
where there is no compiler either; a cold cache shared by parallel processes compiles once; and
the packaged library gives the torch kernels' pixels on real images.

The packaged library is the installed one where the package came from a wheel, else it is
built here with ``setup.py build_ext`` (skipped without setuptools or a C compiler)."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from hbacli import ops_native, policy

ROOT = Path(__file__).resolve().parents[1]
HAS_COMPILER = any(shutil.which(c) for c in ("cc", "gcc", "clang"))
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    """The install-time library: the installed one, else one built now with setup.py."""
    installed = ops_native._installed()
    if installed is not None and ops_native._load_installed() is not None:
        return installed
    pytest.importorskip("setuptools")
    if not HAS_COMPILER or not (ROOT / "setup.py").is_file():
        pytest.skip("needs a C compiler and setup.py to build the packaged library")
    out = tmp_path_factory.mktemp("build")
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib",
                            str(out / "lib"), "--build-temp", str(out / "temp")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    found = list((out / "lib" / "hbacli").glob(ops_native.INSTALLED + "*"))
    assert len(found) == 1, (found, built.stdout, built.stderr)
    return found[0]


@pytest.fixture
def package_dir(monkeypatch, tmp_path):
    """A stand-in for the package folder (``ops_native.c``, and the library where a test puts
    it), an empty kernel cache and no loaded library, all restored afterwards."""
    folder = tmp_path / "hbacli"
    folder.mkdir()
    shutil.copyfile(ops_native.SOURCE, folder / "ops_native.c")
    monkeypatch.setattr(ops_native, "SOURCE", folder / "ops_native.c")
    monkeypatch.setenv("HBA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    ops_native.library.cache_clear()
    yield folder
    ops_native.library.cache_clear()


def _no_compiling():
    raise AssertionError("the first-use build ran")


def _built_kernels(cache: Path) -> list[Path]:
    return list((cache / "kernels").glob("ops_native-*.so")) if cache.is_dir() else []


def test_the_installed_library_is_loaded_without_compiling(packaged, package_dir, monkeypatch,
                                                           tmp_path):
    shutil.copy(packaged, package_dir / packaged.name)
    monkeypatch.setattr(ops_native, "_compiler", _no_compiling)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = ops_native.library()
    assert lib is not None and lib.path == package_dir / packaged.name
    assert not _built_kernels(tmp_path / "cache")
    assert policy.default_kernels(torch.device("cpu")) == "native"


def test_one_built_from_another_source_is_ignored(packaged, package_dir, monkeypatch, tmp_path):
    shutil.copy(packaged, package_dir / packaged.name)
    with open(package_dir / "ops_native.c", "a") as source:  # edited since the install
        source.write("\n/* edited */\n")
    if not HAS_COMPILER:
        monkeypatch.setattr(ops_native, "_build", lambda: packaged)
    lib = ops_native.library()
    assert lib is not None and lib.path != package_dir / packaged.name
    assert lib.path.parent == tmp_path / "cache" / "kernels" or not HAS_COMPILER


def test_one_that_does_not_load_is_skipped(package_dir, monkeypatch, packaged):
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package_dir / f"{ops_native.INSTALLED}{suffix}").write_bytes(b"not a library")
    monkeypatch.setattr(ops_native, "_build", lambda: packaged)  # the fallback, not compiling
    lib = ops_native.library()
    assert lib is not None and lib.path == packaged


@needs_compiler
def test_without_one_the_first_use_build_is_the_fallback(package_dir, tmp_path):
    assert ops_native._installed() is None
    lib = ops_native.library()
    assert lib is not None
    assert _built_kernels(tmp_path / "cache") == [lib.path]


def test_no_library_and_no_compiler_warn_once_and_use_torch(package_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.warns(UserWarning, match="no C compiler found") as caught:
        assert ops_native.library() is None
        assert ops_native.library() is None
        assert policy.default_kernels(torch.device("cpu")) == "sorted"
    assert len([w for w in caught if "C augmentation kernels" in str(w.message)]) == 1
    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    out = policy.augment_batch(x, torch.full((30,), 0.5), torch.zeros(30),
                               torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8


@needs_compiler
@pytest.mark.skipif(os.name != "posix", reason="the build lock uses flock (POSIX)")
def test_parallel_builds_on_a_cold_cache_compile_once(monkeypatch, tmp_path):
    """DataLoader workers starting together: flock excludes separate opens of the lock file
    (threads here, processes there) alike."""
    log = tmp_path / "compiles.log"
    real = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    wrapper = tmp_path / "counting-cc"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> "{log}"\nsleep 1\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    monkeypatch.setenv("HBA_CACHE", str(tmp_path / "cache"))
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda _: ops_native._build(), range(4)))
    assert len(set(built)) == 1
    assert len(log.read_text().split()) == 1  # one compile; the others waited and reused it
    assert _built_kernels(tmp_path / "cache") == built[:1]
    assert not list((tmp_path / "cache" / "kernels").glob(".ops_native-*"))  # no leftovers


def test_the_packaged_library_gives_the_torch_kernels_pixels(packaged, package_dir, monkeypatch,
                                                             cifar_slice, random_policy):
    shutil.copy(packaged, package_dir / packaged.name)
    monkeypatch.setattr(ops_native, "_compiler", _no_compiling)
    assert ops_native.library().path == package_dir / packaged.name
    x = torch.from_numpy(cifar_slice["train_images"][:192]).contiguous()
    gray = x[:64].float().mean(1, keepdim=True).round().to(torch.uint8)
    for images, seed in ((x, 1), (gray, 2)):
        p, m, u = random_policy(len(images), seed=seed)
        native = policy.augment_from_uniform(images, p, m, u, kernels="native")
        assert torch.equal(native, policy.augment_from_uniform(images, p, m, u, kernels="sorted"))
        assert (native != images).flatten(1).any(1).float().mean() > 0.4


def test_setup_py_exports_the_c_functions_not_a_python_module():
    """Windows links with /EXPORT: for each name: setuptools' default, PyInit__ops_native_lib,
    would fail to link (the library is not a Python module)."""
    pytest.importorskip("setuptools")
    if not (ROOT / "setup.py").is_file():
        pytest.skip("no setup.py (installed from a wheel without the source tree)")
    check = textwrap.dedent("""
        import runpy, setuptools
        captured = {}
        setuptools.setup = lambda **kw: captured.update(kw)
        runpy.run_path("setup.py")
        ext, = captured["ext_modules"]
        from setuptools.dist import Distribution
        command = captured["cmdclass"]["build_ext"](Distribution())
        print(ext.name, ext.optional, sorted(command.get_export_symbols(ext)))
    """)
    shown = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split(None, 2) == [
        "hbacli._ops_native_lib", "True",
        "['hba_augment', 'hba_family_name', 'hba_op_name', 'hba_source_key']\n"]
