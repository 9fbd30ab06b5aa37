"""Command-line options generated from a config model: one flag per field, its help the field's
description, so that a setting is declared once (in ``presets.py``) and is a flag as well.

``config_options(SearchConfig, …)`` decorates a command function. The function declares only
what is not a setting (``--config``, ``--out``, an argument, …) and takes the settings as
``**settings``; the decorator gives it a signature, which typer reads, with one option per
other field of the model:

- ``--train-size`` for ``train_size``; a bool field is a ``--flip/--no-flip`` pair;
- every option defaults to None, "not given", so that the config file and the preset decide
  (``resolve_search_config`` ignores None);
- a Literal field is text, its choices listed in its help, and a list of integers is
  comma-separated text: pydantic validates the values, so a bad one is the same one-line
  "invalid setting …" error as in a config file, never click's usage box;
- a field whose JSON Schema says ``"format": "path"`` is a Path that click never pre-checks
  (the loaders give the one-line error);
- the help is the description, then the choices, then the default: the field's own, or the
  preset's where a preset sets the field.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import typer

from .errors import HbaError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo


def config_options(model: type[BaseModel], *, preset_fields: Collection[str] = (),
                   preset: str = "") -> Callable[[Callable], Callable]:
    """Add an option for every field of ``model`` that the decorated command does not declare
    itself; the command receives them in ``**settings``, converted to config values (None:
    not given). ``preset_fields``: the fields a preset sets, whose default is ``preset``."""

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True).parameters
        fields = {name: field for name, field in model.model_fields.items() if name not in own}
        options = [_option(name, field, preset if name in preset_fields else None)
                   for name, field in fields.items()]

        @functools.wraps(command)
        def with_settings(**values: Any) -> Any:
            for name, field in fields.items():
                values[name] = _setting(name, field, values[name])
            return command(**values)

        # The settings first, then the command's own options; all keyword-only, as typer
        # passes them (arguments stay arguments whatever their place).
        own_parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.values()
                          if p.kind is not inspect.Parameter.VAR_KEYWORD]
        with_settings.__signature__ = inspect.Signature([*options, *own_parameters])
        return with_settings

    return decorate


def flag_name(field_name: str) -> str:
    """``train_size`` → ``--train-size``."""
    return "--" + field_name.replace("_", "-")


def comma_separated_integers(flag: str, text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; a one-line HbaError naming ``flag`` for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HbaError(f"{flag} must be comma-separated integers, got '{text}'") from None
    if not values:
        raise HbaError(f"{flag} is empty")
    return values


def value_type(annotation: Any) -> Any:
    """The type a field holds, under ``Optional`` and ``Annotated``: int for ``Integer | None``,
    ``list[Seed]`` for ``list[Seed]``."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def is_path(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("format") == "path"


def option_help(field: FieldInfo, preset: str | None = None) -> str:
    """The field's description as a sentence, then its choices, then its default."""
    parts = [_sentence(field.description or "")]
    held = value_type(field.annotation)
    if get_origin(held) is Literal:
        parts.append(f"One of: {', '.join(map(str, get_args(held)))}.")
    if get_origin(held) is list:
        parts.append("Comma-separated integers.")
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    own_default = None if default is None else _default_text(default)
    if preset:
        parts.append(f"Default: {preset}" + (f", else {own_default}." if own_default else "."))
    elif own_default:
        parts.append(f"Default: {own_default}.")
    return " ".join(parts)


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _flag_type(name: str, field: FieldInfo) -> type:
    """The type click parses the flag's text into; pydantic validates the value after."""
    held = value_type(field.annotation)
    if get_origin(held) is Literal:
        return str
    if get_origin(held) is list and value_type(get_args(held)[0]) is int:
        return str   # comma-separated, see comma_separated_integers
    if held is str and is_path(field):
        return Path
    if held in (bool, int, float, str):
        return held
    raise TypeError(f"config field {name} ({held}) has no command-line form: add one to "
                    f"hbacli/options.py")


def _option(name: str, field: FieldInfo, preset: str | None) -> inspect.Parameter:
    if not field.description:
        raise TypeError(f"config field {name} has no description: it is the flag's --help")
    flag_type = _flag_type(name, field)
    flag = flag_name(name)
    declaration = f"{flag}/--no-{flag[2:]}" if flag_type is bool else flag
    extra = {"readable": False} if flag_type is Path else {}
    option = typer.Option(declaration, help=option_help(field, preset), **extra)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[flag_type | None, option])


def _setting(name: str, field: FieldInfo, value: Any) -> Any:
    """A flag's value as the config takes it: a path as text, a comma-separated list parsed."""
    if value is None:
        return None
    if isinstance(value, Path):
        return str(value)
    if get_origin(value_type(field.annotation)) is list:
        return comma_separated_integers(flag_name(name), value)
    return value
