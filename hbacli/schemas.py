"""JSON Schemas of the files hba writes, generated from their pydantic models.

``python -m hbacli.schemas`` rewrites ``schemas/*.schema.json``; ``tests/test_schemas.py`` fails
when a checked-in schema and its model disagree. Owners of a new file format add an entry here
and regenerate. Output is deterministic (sorted keys, two-space indent, trailing newline) so
the files diff cleanly.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from .files import atomic_write_text

# File name in schemas/ → "module:Model".
SCHEMA_MODELS: dict[str, str] = {
    "schedule.schema.json": "hbacli.schedule:Schedule",
    "search-config.schema.json": "hbacli.presets:SearchConfig",
    "evaluate-config.schema.json": "hbacli.presets:EvaluateConfig",
    "evaluation-results.schema.json": "hbacli.results:EvaluationResults",
}

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_text(target: str) -> str:
    """The schema file's text for a "module:Model" target."""
    module_name, _, class_name = target.partition(":")
    model = getattr(importlib.import_module(module_name), class_name)
    schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(by_alias=True)}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = SCHEMAS_DIR) -> list[Path]:
    written = []
    for file_name, target in SCHEMA_MODELS.items():
        path = directory / file_name
        atomic_write_text(path, schema_text(target))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas():
        print(f"wrote {written_path}")
