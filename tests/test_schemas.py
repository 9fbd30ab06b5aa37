"""The JSON Schemas shipped in the package (hbacli/schema_files/, read through
importlib.resources) match the pydantic models they are generated from; `hba schema NAME`
prints them; the development script regenerates them; the wheel carries them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hbacli.cli import app
from hbacli.errors import HbaError
from hbacli.schedule import Schedule, load_schedule, schedule_json_text
from hbacli.schemas import read_schema, schema_names, shipped_schemas
from hbacli.spaces import SEARCH_SPACES

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
    assert schema["properties"]["version"]["enum"] == [1, 2]
    assert schema["properties"]["space"]["enum"] == list(SEARCH_SPACES)
    assert set(schema["required"]) >= {"format", "version", "epochs", "ops"}
    series = schema["$defs"]["OpSeries"]
    assert "copy" in series["properties"]  # the file's key, not the Python attribute
    assert series["properties"]["probability"]["items"] == {"maximum": 1, "minimum": 0,
                                                            "type": "number"}
    assert set(schema["$defs"]["ScalarSeries"]["required"]) == {
        "name", "kind", "low", "high", "unit", "discrete", "values"}
    assert schema_text(SCHEMA_MODELS["schedule.schema.json"]).endswith("}\n")


# ---------------------------------------------------------------------------------------------
# The shipped schedule schema against real documents of both versions and every space.


def _stn_document() -> dict:
    stn = SEARCH_SPACES["stn"]
    values = np.tile(stn.start_values(), (4, 1))
    return json.loads(schedule_json_text(Schedule.from_values("stn", values)))


def _documents() -> dict[str, dict]:
    return {
        "version 1 (a real search's output)": json.loads(
            (ROOT / "examples" / "digits-schedule.json").read_text()),
        "version 2, hba space": json.loads(
            (ROOT / "examples" / "example-schedule.json").read_text()),
        "version 2, stn space": _stn_document(),
    }


def _changed(name: str, change) -> dict:
    document = _documents()[name]
    change(document)
    return document


V1, HBA, STN = _documents()
BAD_DOCUMENTS = {
    "version 3": lambda: _changed(HBA, lambda d: d.update(version=3)),
    "version 1 naming a space": lambda: _changed(V1, lambda d: d.update(space="hba")),
    "version 1 with scalars": lambda: _changed(V1, lambda d: d.update(scalars=[])),
    "version 2 without space": lambda: _changed(HBA, lambda d: d.pop("space")),
    "version 2 without scalars": lambda: _changed(STN, lambda d: d.pop("scalars")),
    "unknown space": lambda: _changed(STN, lambda d: d.update(space="autoaugment")),
    "stn with op copies": lambda: _changed(STN, lambda d: d.update(ops=_documents()[HBA]["ops"])),
    "stn with sampling": lambda: _changed(
        STN, lambda d: d.update(sampling=_documents()[HBA]["sampling"])),
    "stn scalar renamed": lambda: _changed(STN, lambda d: d["scalars"][5].update(name="hues")),
    "stn scalars out of order": lambda: _changed(STN, lambda d: d["scalars"].reverse()),
    "stn scalar missing": lambda: _changed(STN, lambda d: d["scalars"].pop()),
    "stn value out of range": lambda: _changed(
        STN, lambda d: d["scalars"][5]["values"].__setitem__(0, 0.7)),
    "stn discrete flag": lambda: _changed(STN, lambda d: d["scalars"][11].update(discrete=False)),
    "hba with a scalar": lambda: _changed(HBA, lambda d: d.update(
        scalars=_documents()[STN]["scalars"][:1])),
    "hba missing op copies": lambda: _changed(HBA, lambda d: d["ops"].pop()),
    "probability above 1": lambda: _changed(
        V1, lambda d: d["ops"][0]["probability"].__setitem__(0, 1.5)),
}


@pytest.fixture(scope="module")
def schedule_validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(read_schema("schedule"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", [V1, HBA, STN])
def test_schedule_schema_accepts_real_documents_of_both_versions(schedule_validator, name):
    document = _documents()[name]
    assert [error.message for error in schedule_validator.iter_errors(document)] == []
    assert _load(document).version == document["version"]  # and so does the loader


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_schedule_schema_rejects_what_the_loader_rejects(schedule_validator, case, tmp_path):
    document = BAD_DOCUMENTS[case]()
    assert not schedule_validator.is_valid(document), case
    with pytest.raises(HbaError):
        _load(document, tmp_path)


def _load(document: dict, directory: Path | None = None):
    if directory is None:
        return Schedule.model_validate(document)
    path = directory / "schedule.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return load_schedule(path)
