"""Regenerate the JSON Schemas shipped in the package from their models (development only).

    python scripts/generate_schemas.py          # rewrites hbacli/schema_files/ and schemas/
    python scripts/generate_schemas.py DIR      # writes them into DIR instead

Run it from a checkout after changing a file model; a new file format is one entry in
``SCHEMA_MODELS``. The models are imported from this checkout, not from an installed hbacli,
and the files are written into the checkout's package folder, from where the wheel ships them
as package data (``hbacli.schemas`` reads them, ``hba schema NAME`` prints them), and into
``schemas/`` at the repository's root, where people browsing the repository look. Both are
generated from the one source, the models; ``tests/test_schemas.py`` fails while either copy
and its model disagree. Output is deterministic (sorted keys, two-space indent, trailing
newline) so the files diff cleanly.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's hbacli, whatever is installed

from hbacli.files import atomic_write_text  # noqa: E402
from hbacli.schemas import SCHEMA_PACKAGE_DIR  # noqa: E402

# File name in hbacli/schema_files/ → "module:Model". A schema's NAME is its file name
# without ".schema.json".
SCHEMA_MODELS: dict[str, str] = {
    "schedule.schema.json": "hbacli.schedule:Schedule",
    "search-config.schema.json": "hbacli.presets:SearchConfig",
    "evaluate-config.schema.json": "hbacli.presets:EvaluateConfig",
    "evaluation-results.schema.json": "hbacli.results:EvaluationResults",
}
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_text(target: str) -> str:
    """The schema file's text for a "module:Model" target."""
    module_name, _, class_name = target.partition(":")
    model = getattr(importlib.import_module(module_name), class_name)
    schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(by_alias=True)}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write every schema of ``SCHEMA_MODELS`` into ``directory``."""
    written = []
    for file_name, target in SCHEMA_MODELS.items():
        path = Path(directory) / file_name
        atomic_write_text(path, schema_text(target))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    directories = [Path(argv[0])] if argv else [ROOT / "hbacli" / SCHEMA_PACKAGE_DIR,
                                                 ROOT / "schemas"]
    for directory in directories:
        for path in write_schemas(directory):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
