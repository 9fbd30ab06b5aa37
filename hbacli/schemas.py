"""JSON Schemas of the files hba reads and writes, as shipped with the package.

They ship inside the package, in ``hbacli/schema_files/*.schema.json`` (package data), and are
read from there with ``importlib.resources`` (``read_schema``; on the command line
``hba schema NAME``). This module only reads them: generating them from their pydantic models
is a development step, ``python scripts/generate_schemas.py`` in a checkout (which lists the
models), and ``tests/test_schemas.py`` fails when a shipped schema and its model disagree.
"""

from __future__ import annotations

import sys
from importlib import resources

from .errors import HbaError

SCHEMA_SUFFIX = ".schema.json"
SCHEMA_PACKAGE_DIR = "schema_files"   # inside the hbacli package, shipped as package data


def shipped_schemas():
    """The package's schema folder, as an ``importlib.resources`` Traversable (read-only)."""
    return resources.files("hbacli").joinpath(SCHEMA_PACKAGE_DIR)


def schema_names() -> list[str]:
    """The shipped schemas' names, sorted: "evaluate-config", "schedule", … (a name is its
    file's name without ".schema.json")."""
    return sorted(entry.name.removesuffix(SCHEMA_SUFFIX) for entry in shipped_schemas().iterdir()
                  if entry.name.endswith(SCHEMA_SUFFIX))


def schema_file_name(name: str) -> str:
    """The shipped file of schema ``name`` (its file name is accepted too); HbaError listing
    the known names for anything else."""
    file_name = name if name.endswith(SCHEMA_SUFFIX) else name + SCHEMA_SUFFIX
    if file_name.removesuffix(SCHEMA_SUFFIX) not in schema_names():
        raise HbaError(f"unknown schema '{name}' (known: {', '.join(schema_names())})")
    return file_name


def read_schema(name: str) -> str:
    """The text of the shipped schema ``name`` (see ``schema_names``), from the package."""
    return shipped_schemas().joinpath(schema_file_name(name)).read_text(encoding="utf-8")


if __name__ == "__main__":
    print("hbacli.schemas writes no files: print a shipped schema with `hba schema NAME` "
          f"(NAME: {', '.join(schema_names())}); in a checkout, regenerate them with "
          "`python scripts/generate_schemas.py`", file=sys.stderr)
    sys.exit(2)
