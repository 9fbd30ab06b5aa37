"""The checked-in JSON Schemas in schemas/ match the pydantic models they are generated from."""

from __future__ import annotations

import json

from hbacli.schemas import SCHEMA_MODELS, SCHEMAS_DIR, schema_text

FIX = "regenerate with `python -m hbacli.schemas`"


def test_every_checked_in_schema_matches_its_model():
    stale = []
    for file_name, target in SCHEMA_MODELS.items():
        path = SCHEMAS_DIR / file_name
        assert path.is_file(), f"schemas/{file_name} ({target}) is missing: {FIX}"
        if path.read_text(encoding="utf-8") != schema_text(target):
            stale.append(file_name)
    assert not stale, f"out of date with their models: schemas/{', schemas/'.join(stale)}; {FIX}"


def test_every_schema_file_has_a_model():
    files = {p.name for p in SCHEMAS_DIR.glob("*.json")}
    orphans = sorted(files - set(SCHEMA_MODELS))
    assert not orphans, f"no model in hbacli.schemas.SCHEMA_MODELS for schemas/{orphans}"


def test_schedule_schema_documents_the_format():
    schema = json.loads(schema_text(SCHEMA_MODELS["schedule.schema.json"]))
    assert schema["properties"]["format"]["const"] == "hba-schedule"
    assert schema["properties"]["version"]["const"] == 1
    assert set(schema["required"]) >= {"format", "version", "epochs", "ops"}
    series = schema["$defs"]["OpSeries"]
    assert "copy" in series["properties"]  # the file's key, not the Python attribute
    assert series["properties"]["probability"]["items"] == {"maximum": 1, "minimum": 0,
                                                            "type": "number"}
    assert schema_text(SCHEMA_MODELS["schedule.schema.json"]).endswith("}\n")
