"""Builds the C augmentation kernels (``hbacli/ops_native.c``) when the package is built or
installed; all metadata is in pyproject.toml.

The result, ``hbacli/_ops_native_lib`` with the interpreter's extension suffix, is a plain C
shared library that ``hbacli.ops_native`` loads with ctypes: it does not include Python.h, has
no ``PyInit_`` function and is never imported. So:

- the export list is the C functions, not setuptools' default ``PyInit__ops_native_lib``
  (which only matters on Windows, where the linker gets ``/EXPORT:`` for each name and would
  fail on a missing ``PyInit``);
- it is tagged for the stable ABI (one ``cp310-abi3`` wheel per platform serves every CPython
  from 3.10), except on free-threaded builds, which have no stable ABI;
- the build is optional: without a working compiler the package installs without it and
  ``ops_native.library()`` falls back to building on first use, then to the torch kernels.

A second, generated source defines ``hba_source_key()``, a hash of ``ops_native.c``, so that
``ops_native`` can tell a library built from an older ``ops_native.c`` (an in-place or
editable build that was not redone after an edit) and ignore it.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "hbacli/ops_native.c"
EXPORTS = ["hba_op_name", "hba_family_name", "hba_augment", "hba_source_key"]
# IEEE arithmetic as torch does it (the same pixels): no fast-math, no fused multiply-adds.
# Kept in step with ops_native.FLAGS, the first-use build's flags.
UNIX_FLAGS = ["-O3", "-std=c99", "-ffp-contract=off"]
MSVC_FLAGS = ["/O2", "/fp:precise"]  # /fp:precise: no contractions (the default since VS 2022)
ABI3 = not sysconfig.get_config_var("Py_GIL_DISABLED")


def source_key(source: Path) -> str:
    """The key ``ops_native._source_key`` computes: the first 16 hex digits of sha256."""
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


class BuildKernels(build_ext):
    """build_ext for a ctypes library: C exports only, per-compiler flags, the source key."""

    def build_extension(self, ext: Extension) -> None:
        key_source = Path(self.build_temp) / "ops_native_key.c"
        key_source.parent.mkdir(parents=True, exist_ok=True)
        key = source_key(Path(SOURCE))
        key_source.write_text(f'const char *hba_source_key(void) {{ return "{key}"; }}\n')
        ext.sources = [SOURCE, str(key_source)]
        msvc = self.compiler.compiler_type == "msvc"
        ext.extra_compile_args = MSVC_FLAGS if msvc else UNIX_FLAGS
        ext.libraries = [] if msvc else ["m"]
        super().build_extension(ext)

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return list(ext.export_symbols)  # no PyInit_: this is not a Python module


setup(
    ext_modules=[Extension("hbacli._ops_native_lib", sources=[SOURCE], export_symbols=EXPORTS,
                           py_limited_api=ABI3, optional=True)],
    cmdclass={"build_ext": BuildKernels},
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ABI3 else {},
)
