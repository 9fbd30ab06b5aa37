"""The JSON Schemas shipped in the package (hbacli/schema_files/, read through
importlib.resources) match the pydantic models they are generated from; `hba schema NAME`
prints them; the development script regenerates them; the wheel carries them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hbacli.cli import app
from hbacli.schemas import read_schema, schema_names, shipped_schemas

ROOT = Path(__file__).resolve().parents[1]
FIX = "regenerate with `python scripts/generate_schemas.py`"


def _generator_script():
    """scripts/generate_schemas.py, which knows the models (the package only reads schemas)."""
    spec = importlib.util.spec_from_file_location("generate_schemas",
                                                  ROOT / "scripts" / "generate_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_generator = _generator_script()
SCHEMA_MODELS, schema_text = _generator.SCHEMA_MODELS, _generator.schema_text


def test_every_shipped_schema_matches_its_freshly_generated_model():
    stale = []
    for file_name, target in SCHEMA_MODELS.items():
        shipped = shipped_schemas().joinpath(file_name)
        assert shipped.is_file(), f"hbacli/schema_files/{file_name} ({target}) is missing: {FIX}"
        if read_schema(file_name) != schema_text(target):
            stale.append(file_name)
    assert not stale, f"out of date with their models: hbacli/schema_files/{stale}; {FIX}"


def test_every_schema_file_has_a_model_and_the_browsable_copy_is_the_shipped_one():
    files = {p.name for p in shipped_schemas().iterdir() if p.name.endswith(".json")}
    orphans = sorted(files - set(SCHEMA_MODELS))
    assert not orphans, f"no model in SCHEMA_MODELS (scripts/generate_schemas.py) for {orphans}"
    assert schema_names() == sorted(name.removesuffix(".schema.json") for name in SCHEMA_MODELS)
    # schemas/ at the root is for people browsing the repository: generated, never edited.
    browsable = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "schemas").iterdir()}
    assert browsable == {name: read_schema(name) for name in SCHEMA_MODELS}, FIX


def test_schemas_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["hbacli"]
    assert "schema_files/*.schema.json" in patterns


def test_hba_schema_prints_a_shipped_schema():
    runner = CliRunner()
    for name in schema_names():
        result = runner.invoke(app, ["schema", name])
        assert result.exit_code == 0, result.output
        assert result.stdout == read_schema(name)
        assert json.loads(result.stdout)["$schema"].startswith("https://json-schema.org/")
    assert json.loads(runner.invoke(app, ["schema", "schedule"]).stdout)["properties"][
        "format"]["const"] == "hba-schedule"


def test_hba_schema_with_an_unknown_name_is_a_one_line_error():
    result = CliRunner().invoke(app, ["schema", "schedules"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown schema 'schedules'")
    assert all(name in lines[0] for name in schema_names())
    assert result.stdout == ""


def test_the_generator_script_writes_what_the_package_ships(tmp_path):
    script = ROOT / "scripts" / "generate_schemas.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.count("wrote ") == len(SCHEMA_MODELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SCHEMA_MODELS)
    for file_name in SCHEMA_MODELS:
        assert (tmp_path / file_name).read_text(encoding="utf-8") == read_schema(file_name)


def test_the_module_no_longer_writes_beside_the_package():
    done = subprocess.run([sys.executable, "-m", "hbacli.schemas"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "scripts/generate_schemas.py" in done.stderr


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
