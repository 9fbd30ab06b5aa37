"""JSON Schemas of the files hba writes, generated from their pydantic models.

They ship inside the package, in ``hbacli/schema_files/*.schema.json`` (package data), and are
read from there with ``importlib.resources`` (``read_schema``; on the command line
``hba schema NAME``). Generating them is a development step, not something the installed
package does: ``python scripts/generate_schemas.py`` (in a checkout) rewrites the package's
copies from the models, and ``tests/test_schemas.py`` fails when a shipped schema and its
model disagree. Owners of a new file format add an entry to ``SCHEMA_MODELS`` and regenerate.
Output is deterministic (sorted keys, two-space indent, trailing newline) so the files diff
cleanly.
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib import resources
from pathlib import Path

from .errors import HbaError
from .files import atomic_write_text

# File name in hbacli/schema_files/ → "module:Model". A schema's NAME is its file name
# without ".schema.json".
SCHEMA_MODELS: dict[str, str] = {
    "schedule.schema.json": "hbacli.schedule:Schedule",
    "search-config.schema.json": "hbacli.presets:SearchConfig",
    "evaluate-config.schema.json": "hbacli.presets:EvaluateConfig",
    "evaluation-results.schema.json": "hbacli.results:EvaluationResults",
}

SCHEMA_SUFFIX = ".schema.json"
SCHEMA_PACKAGE_DIR = "schema_files"   # inside the hbacli package, shipped as package data
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_names() -> list[str]:
    """The known schema names, sorted: "evaluate-config", "schedule", …"""
    return sorted(file_name.removesuffix(SCHEMA_SUFFIX) for file_name in SCHEMA_MODELS)


def schema_file_name(name: str) -> str:
    """The shipped file of schema ``name`` (its file name is accepted too); HbaError listing
    the known names for anything else."""
    file_name = name if name.endswith(SCHEMA_SUFFIX) else name + SCHEMA_SUFFIX
    if file_name not in SCHEMA_MODELS:
        raise HbaError(f"unknown schema '{name}' (known: {', '.join(schema_names())})")
    return file_name


def shipped_schemas():
    """The package's schema folder, as an ``importlib.resources`` Traversable (read-only)."""
    return resources.files("hbacli").joinpath(SCHEMA_PACKAGE_DIR)


def read_schema(name: str) -> str:
    """The text of the shipped schema ``name`` (see ``schema_names``), from the package."""
    return shipped_schemas().joinpath(schema_file_name(name)).read_text(encoding="utf-8")


def schema_text(target: str) -> str:
    """The schema file's text for a "module:Model" target."""
    module_name, _, class_name = target.partition(":")
    model = getattr(importlib.import_module(module_name), class_name)
    schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(by_alias=True)}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write every schema into ``directory`` (for ``scripts/generate_schemas.py``, which
    passes the checkout's ``hbacli/schema_files``; nothing writes beside an installed package)."""
    written = []
    for file_name, target in SCHEMA_MODELS.items():
        path = Path(directory) / file_name
        atomic_write_text(path, schema_text(target))
        written.append(path)
    return written


if __name__ == "__main__":
    print("hbacli.schemas writes no files: print a shipped schema with `hba schema NAME` "
          f"(NAME: {', '.join(schema_names())}); in a checkout, regenerate them with "
          "`python scripts/generate_schemas.py`", file=sys.stderr)
    sys.exit(2)
