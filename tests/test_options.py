"""The options of `hba search` and `hba evaluate` are generated from their config models
(hbacli/options.py): every field is a flag whose --help is the field's description, and a
field added to a model is a flag without anything else written (issue 14)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import typer
from pydantic import Field
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from hbacli import cli
from hbacli.catalogue import BASELINES, DATASET_NAMES, STRATEGIES
from hbacli.cli import app
from hbacli.options import config_options, flag_name, is_path, value_type
from hbacli.presets import EvaluateConfig, Integer, SearchConfig, TrainingConfig

# The command's own parameters: not settings. POLICY is EvaluateConfig's one field that is an
# argument, not a flag.
OWN_OPTIONS = {"config", "out", "run_dir", "resume"}
COMMANDS = {"search": (SearchConfig, set()), "evaluate": (EvaluateConfig, {"policy"})}
WIDE = {"COLUMNS": "1000", "NO_COLOR": "1", "TERM": "dumb"}


def _params(command: str) -> dict[str, Any]:
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def _flat(text: str) -> str:
    """Help as one line of words: without rich's frame and wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_field_is_a_flag_with_the_description_as_help(command):
    model, arguments = COMMANDS[command]
    params = _params(command)
    help_text = _flat(CliRunner().invoke(app, [command, "--help"], env=WIDE).output)
    for name, field in model.model_fields.items():
        param = params[name]
        if name in arguments:
            assert isinstance(param, TyperArgument), name
            assert param.help.startswith(field.description), name
            continue
        assert isinstance(param, TyperOption) and flag_name(name) in param.opts, name
        assert param.help.startswith(field.description), name
        assert param.default is None, f"{name}: unset flags must leave it to file and preset"
        assert " ".join(field.description.split()[:8]) in help_text, name
    assert set(params) == set(model.model_fields) | OWN_OPTIONS


@pytest.mark.parametrize("command", COMMANDS)
def test_flag_kinds_follow_the_field_types(command):
    model, arguments = COMMANDS[command]
    params = _params(command)
    signature = inspect.signature(getattr(cli, command))   # what typer builds the command from
    for name, field in model.model_fields.items():
        if name in arguments:
            continue
        param, held = params[name], value_type(field.annotation)
        flag_type, option = get_args(signature.parameters[name].annotation)
        if held is bool:
            assert param.opts == [flag_name(name)] and param.secondary_opts == \
                [flag_name(name).replace("--", "--no-")], name
        if is_path(field):
            # click must never pre-check a path: the loaders give the one-line error
            assert flag_type == Path | None and option.readable is False, name
        if get_origin(held) is Literal:
            # choices in the help, validated by pydantic (one-line error), not by click
            assert f"One of: {', '.join(get_args(held))}." in param.help, name
            assert flag_type == str | None, name


def test_shared_fields_are_declared_once():
    for name in TrainingConfig.model_fields:
        assert EvaluateConfig.model_fields[name].description == \
            SearchConfig.model_fields[name].description == \
            TrainingConfig.model_fields[name].description, name
    own = set(SearchConfig.__annotations__) & set(EvaluateConfig.__annotations__)
    assert not own, f"declared in both configs, not in TrainingConfig: {own}"


def test_help_reads_the_catalogue():
    search = _flat(CliRunner().invoke(app, ["search", "--help"], env=WIDE).output)
    assert f"One of: {', '.join(STRATEGIES)}." in search
    assert ", ".join(DATASET_NAMES) in search
    evaluate = _flat(CliRunner().invoke(app, ["evaluate", "--help"], env=WIDE).output)
    assert ", ".join(BASELINES) in evaluate
    assert "Default: the dataset's preset (Table 8), else 128." in search   # batch_size


def test_every_default_is_explained():
    """The help says what an unset flag means: the field's default, the preset's, or, for a
    None default, the description's own "(default: …)"."""
    for model in (SearchConfig, EvaluateConfig):
        for name, field in model.model_fields.items():
            if field.default is None:
                assert "(default: " in field.description, f"{model.__name__}.{name}"


class _WithAKnob(SearchConfig):
    """A config that gained one knob."""

    new_knob: Integer = Field(7, gt=0, description="A knob added after the fact")
    new_switch: bool = Field(False, description="A switch added too")
    new_choice: Literal["left", "right"] = Field("left", description="And a choice")


def _throwaway_app(seen: dict[str, Any]) -> typer.Typer:
    throwaway = typer.Typer()

    @throwaway.command()
    @config_options(_WithAKnob)
    def run(*, out: str = typer.Option("x"), **settings: Any) -> None:
        seen.update(settings, out=out)

    return throwaway


def test_a_field_added_to_the_model_is_a_flag_with_its_help():
    seen: dict[str, Any] = {}
    throwaway = _throwaway_app(seen)
    result = CliRunner().invoke(throwaway, ["--new-knob", "9", "--new-switch", "--new-choice",
                                            "right", "--lr-milestones", "3,6", "--out", "y"])
    assert result.exit_code == 0, result.output
    assert (seen["new_knob"], seen["new_switch"], seen["new_choice"]) == (9, True, "right")
    assert seen["lr_milestones"] == [3, 6] and seen["out"] == "y"
    assert seen["epochs"] is None   # not given: left to the file and the preset
    help_text = _flat(CliRunner().invoke(throwaway, ["--help"], env=WIDE).output)
    assert "--new-knob" in help_text and "A knob added after the fact. Default: 7." in help_text
    assert "--new-switch --no-new-switch" in help_text
    assert "And a choice. One of: left, right. Default: left." in help_text


def test_a_field_without_a_description_or_a_flag_form_is_refused_at_import():
    class Undescribed(SearchConfig):
        mystery: int = 3

    class Unflaggable(SearchConfig):
        table: dict[str, int] = Field(default_factory=dict, description="No text form")

    for model, message in ((Undescribed, "has no description"),
                           (Unflaggable, "has no command-line form")):
        with pytest.raises(TypeError, match=message):
            config_options(model)(lambda **settings: None)
