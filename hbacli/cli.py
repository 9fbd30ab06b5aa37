"""The `hba` command: parses arguments, calls the library, prints. Nothing else lives here.

Torch-heavy modules are imported inside the commands that need them, so `hba inspect` and
`hba export` start instantly. The settings' options of `search` and `evaluate` are not written
here: ``options.config_options`` makes one per field of their config models (presets.py), with
the field's description as help; the commands declare only their other parameters.
"""

from __future__ import annotations

import functools
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .catalogue import BASELINES, choices
from .errors import HbaError
from .options import config_options, option_help
from .presets import (
    EVALUATE_PRESET_FIELDS,
    SEARCH_PRESET_FIELDS,
    EvaluateConfig,
    SearchConfig,
    resolve_evaluate_config,
    resolve_search_config,
)

# Path parameters are never pre-checked by click (its readability check prints a usage box):
# the loaders give the one-line error. (options.py does the same for the settings' paths.)
_path_option = functools.partial(typer.Option, readable=False)
_path_argument = functools.partial(typer.Argument, readable=False)
HBA_HELP = ("Hypernetwork-Based Augmentation: search augmentation schedules, replay them, "
            "inspect them.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"hba {version('hbacli')}")
        raise typer.Exit()


app = typer.Typer(
    name="hba",
    help=HBA_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print hba's version and exit.")] = False,
          ) -> None:
    """Hypernetwork-Based Augmentation: search augmentation schedules, replay them, inspect them."""

def _user_errors(fn: Callable) -> Callable:
    """Turn HbaError into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HbaError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished epochs are saved; rerun with --resume to continue",
                       err=True)
            raise typer.Exit(130) from None

    return wrapper


def _command_line() -> str:
    return shlex.join(["hba", *sys.argv[1:]])


def _default_run_dir(name: str, resume: bool, checkpoints: str) -> Path:
    """runs/NAME-YYYYmmdd-HHMMSS for a new run; with --resume, the newest such folder that
    holds a checkpoint (``checkpoints``: a glob inside the run directory)."""
    name = "".join(c if c.isalnum() or c in "._+-" else "_" for c in name)
    if resume:
        earlier = [p for p in sorted(Path("runs").glob(f"{name}-2*")) if any(p.glob(checkpoints))]
        if earlier:
            return earlier[-1]
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
@_user_errors
@config_options(SearchConfig, preset_fields=SEARCH_PRESET_FIELDS,
                preset="the dataset's preset (Table 8)")
def search(
    *,
    config: Annotated[Path | None, _path_option(
        help="YAML or JSON file of settings (any field of the resolved config); flags override "
             "it.")] = None,
    out: Annotated[Path, _path_option(
        help="Where the final schedule is written.")] = Path("schedule.json"),
    run_dir: Annotated[Path | None, _path_option(
        help="Checkpoints, per-epoch schedule, CSV log and resolved config (default: a new "
             "runs/search-DATASET-TIME; with --resume the newest).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the interrupted run in --run-dir.")] = False,
    **settings: Any,
) -> None:
    """Search an augmentation schedule with HBA (Algorithm 1) and write it to --out."""
    from .runtime import use_cpu_threads
    from .search import run_search

    cfg = resolve_search_config(settings.pop("dataset"), config, **settings)
    run_dir = run_dir or _default_run_dir(f"search-{cfg.dataset}", resume, "checkpoint.pt")
    use_cpu_threads(cfg.device)
    run_search(cfg, out=out, run_dir=run_dir, resume=resume, command_line=_command_line())


@app.command()
@_user_errors
@config_options(EvaluateConfig, preset_fields=EVALUATE_PRESET_FIELDS,
                preset="the dataset's preset (Table 9)")
def evaluate(
    policy: Annotated[str, typer.Argument(help=option_help(EvaluateConfig.model_fields["policy"]))],
    *,
    config: Annotated[Path | None, _path_option(
        help="YAML or JSON file of settings; flags override it.")] = None,
    out: Annotated[Path, _path_option(
        help="Per-seed and summary results (JSON).")] = Path("results.json"),
    run_dir: Annotated[Path | None, _path_option(
        help="Checkpoints and per-epoch CSV (default: a new "
             "runs/evaluate-DATASET-MODEL-POLICY-TIME; with --resume the newest).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue interrupted seeds from --run-dir.")] = False,
    **settings: Any,
) -> None:
    """Train a target network with a schedule or a baseline and report test error."""
    from .evaluate import run_evaluation
    from .runtime import use_cpu_threads

    if policy not in BASELINES and not Path(policy).is_file():
        raise HbaError(f"'{policy}' is neither a schedule file nor one of {choices(BASELINES)}")
    cfg = resolve_evaluate_config(policy, settings.pop("dataset"), settings.pop("model"), config,
                                  **settings)
    tag = Path(policy).stem if policy not in BASELINES else policy
    run_dir = run_dir or _default_run_dir(f"evaluate-{cfg.dataset}-{cfg.model}-{tag}", resume,
                                          "seed-*/checkpoint.pt")
    use_cpu_threads(cfg.device)
    run_evaluation(cfg, out=out, run_dir=run_dir, resume=resume, command_line=_command_line())


@app.command()
@_user_errors
def export(
    schedule: Annotated[Path, _path_argument(help="A schedule file (hba-schedule JSON).")],
    *,
    format: Annotated[str, typer.Option(
        "--format", "-f", help="json: the schedule itself, validated (stretched with --epochs); "
        "csv: one row per epoch, a probability and a magnitude column per op copy, a column per "
        "scalar; pba (hba space only): PBA's schedule log (integer levels 0-10, Posterize 0-9, "
        "and probabilities p/10, in PBA's op order).")],
    epochs: Annotated[int | None, typer.Option(
        help="Stretch the schedule linearly to this many epochs first. For pba, PBA's training "
             "epochs (then --hp_policy_epochs the same) replay it exactly.")] = None,
    out: Annotated[Path, _path_option(
        help="Output file (written atomically); for pba its name must end in .txt, as PBA "
             "requires of --hp_policy files.")],
) -> None:
    """Write a schedule in another format."""
    from .export import export_schedule

    export_schedule(schedule, format, out, epochs=epochs)
    typer.echo(f"wrote {out}")


@app.command()
@_user_errors
def inspect(
    schedule: Annotated[Path, _path_argument(help="A schedule file (hba-schedule JSON).")],
    png: Annotated[Path | None, _path_option(
        help="Also write the panels as a PNG picture.")] = None,
) -> None:
    """Draw a schedule: the paper's Figure 4 (hba space), or a heat map per kind of scalar."""
    from .plots import inspect_schedule

    inspect_schedule(schedule, png=png)


@app.command()
@_user_errors
def schema(
    name: Annotated[str, typer.Argument(help="Which file format, e.g. schedule or search-config "
                                        "(an unknown name lists the known ones).")],
) -> None:
    """Print the JSON Schema of a file hba reads or writes (shipped with the package)."""
    from .schemas import read_schema

    typer.echo(read_schema(name), nl=False)


def main() -> None:
    app()
