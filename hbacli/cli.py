"""The `hba` command: parses arguments, calls the library, prints. Nothing else lives here.

Torch-heavy modules are imported inside the commands that need them, so `hba inspect` and
`hba export` start instantly.
"""

from __future__ import annotations

import functools
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import typer

from .catalogue import BASELINES, choices
from .errors import HbaError

# Path parameters are never pre-checked by click (its readability check prints a usage box):
# the loaders give the one-line error.
_path_option = functools.partial(typer.Option, readable=False)
_path_argument = functools.partial(typer.Argument, readable=False)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"hba {version('hbacli')}")
        raise typer.Exit()


app = typer.Typer(
    name="hba",
    help="Hypernetwork-Based Augmentation: search augmentation schedules, replay them, inspect them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print hba's version and exit.")) -> None:
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


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise HbaError(f"--seeds must be comma-separated integers, got '{text}'") from None
    if not seeds:
        raise HbaError("--seeds is empty")
    return seeds


def _default_run_dir(name: str, resume: bool, checkpoints: str) -> Path:
    """runs/NAME-YYYYmmdd-HHMMSS for a new run; with --resume, the newest such folder that
    holds a checkpoint (``checkpoints``: a glob inside the run directory)."""
    name = "".join(c if c.isalnum() or c in "._+-" else "_" for c in name)
    if resume:
        earlier = [p for p in sorted(Path("runs").glob(f"{name}-2*")) if any(p.glob(checkpoints))]
        if earlier:
            return earlier[-1]
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


FLIP_FLAG_HELP = ("Random horizontal flip in the baseline pipeline (default: the dataset's: on "
                  "for CIFAR, ImageNet and imagefolder, off for SVHN and digits). Your call for "
                  "your own data: off where mirror images mean something else.")
IMAGE_SIZE_FLAG_HELP = ("imagefolder: data only: resize (shorter side) and centre-crop every "
                        "image to N×N (default: the images' own size when they all share one "
                        "square size, else 32).")
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda, or mps (Apple GPU)."
COMPILE_FLAG_HELP = ("torch.compile the network (default off): fused kernels, and CUDA graphs on "
                     "CUDA; the first run pays the compilation (~45 s for wrn16_1 on a CPU, then "
                     "cached), so it pays off on long or repeated runs. Needs a C++ compiler.")
PRECISION_FLAG_HELP = ("Precision of the forward passes: auto (default: bf16 on GPUs with native "
                       "bf16, compute capability >= 8.0; fp16 with a gradient scaler on older "
                       "GPUs such as V100 and T4; fp32 on the CPU), bf16, fp16 (CUDA only) or "
                       "fp32. The run's files record what it resolved to; a resume must match.")


@app.command()
@_user_errors
def search(
    dataset: Optional[str] = typer.Option(None, help="digits, reduced-cifar10, cifar10, "
                                          "reduced-cifar100, cifar100, reduced-svhn, svhn, "
                                          "reduced-imagenet, imagenet, or imagefolder:PATH. "
                                          "Brings the paper's Table 8 settings (default: the "
                                          "--config file's, else digits)."),
    data_dir: Optional[Path] = _path_option(None, help="Where datasets are found or downloaded "
                                            "(default: $HBA_DATA, else a user cache dir)."),
    model: Optional[str] = typer.Option(None, help="Network the hypernetwork is built from "
                                        "(default: the dataset's preset, e.g. wrn40_2)."),
    strategy: Optional[str] = typer.Option(None, help="Weight sharing: which layers become "
                                           "hyper-layers: conv+bn, conv, bn, 1st-conv, "
                                           "1st-bn (default, the paper's)."),
    epochs: Optional[int] = typer.Option(None, help="Search epochs (default: preset)."),
    batch_size: Optional[int] = typer.Option(None, help="Training and validation batch size "
                                             "(default: preset, 128)."),
    train_size: Optional[int] = typer.Option(None, help="Training images (default: dataset's)."),
    val_size: Optional[int] = typer.Option(None, help="Validation images (default: dataset's)."),
    seed: Optional[int] = typer.Option(None, help="Seed of initialisation, noise, augmentation "
                                       "and batch order (default 0)."),
    lr: Optional[float] = typer.Option(None, help="α: SGD learning rate of the hypernetwork "
                                       "(default: preset)."),
    lr_schedule: Optional[str] = typer.Option(None, help="Schedule of α: cosine, step (needs "
                                              "lr_milestones in --config) or constant."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay of the hypernetwork "
                                                 "(default: preset)."),
    hyper_lr: Optional[float] = typer.Option(None, help="α': Adam learning rate of λ, constant "
                                             "(default: preset)."),
    sigma: Optional[float] = typer.Option(None, help="Std of the per-example perturbation ε of "
                                          "λ (default 1.0, the paper's)."),
    train_steps: Optional[int] = typer.Option(None, help="T_train: hypernetwork steps per round "
                                              "(default 2)."),
    val_steps: Optional[int] = typer.Option(None, help="T_val: λ steps per round (default 1)."),
    warmup_epochs: Optional[int] = typer.Option(None, help="Epochs of hypernetwork steps only, "
                                                "before λ moves (default 0; the paper has none, "
                                                "Self-Tuning Networks' code uses 5)."),
    val_bn_mode: Optional[str] = typer.Option(None, help="BatchNorm mode on the λ step: train "
                                              "(the validation batch's statistics; default) or "
                                              "eval (running statistics)."),
    hyper_input: Optional[str] = typer.Option(None, help="What the hyper-layers are fed: "
                                              "centred (λ − λ0, default) or raw (λ, the paper's "
                                              "literal form); the same function family."),
    init: Optional[Path] = _path_option(None, help="Warm start: λ starts from this schedule's "
                                        "values (continue a search, or start from a policy you "
                                        "trust)."),
    init_epoch: Optional[int] = typer.Option(None, help="Which epoch of --init to start from "
                                             "(0-based, default 0)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help=FLIP_FLAG_HELP),
    image_size: Optional[int] = typer.Option(None, help=IMAGE_SIZE_FLAG_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_FLAG_HELP),
    precision: Optional[str] = typer.Option(None, help=PRECISION_FLAG_HELP),
    config: Optional[Path] = _path_option(None, help="YAML or JSON file of settings (any field "
                                          "of the resolved config); flags override it."),
    out: Path = _path_option(Path("schedule.json"), help="Where the final schedule is written."),
    run_dir: Optional[Path] = _path_option(None, help="Checkpoints, per-epoch schedule, CSV log "
                                           "and resolved config (default: a new "
                                           "runs/search-DATASET-TIME; with --resume the newest)."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --run-dir."),
) -> None:
    """Search an augmentation schedule with HBA (Algorithm 1) and write it to --out."""
    from .presets import resolve_search_config
    from .runtime import use_cpu_threads
    from .search import run_search

    cfg = resolve_search_config(
        dataset, config, data_dir=None if data_dir is None else str(data_dir), model=model,
        strategy=strategy, epochs=epochs, batch_size=batch_size, train_size=train_size,
        val_size=val_size, seed=seed, lr=lr, lr_schedule=lr_schedule, weight_decay=weight_decay,
        hyper_lr=hyper_lr, sigma=sigma, train_steps=train_steps, val_steps=val_steps,
        warmup_epochs=warmup_epochs, val_bn_mode=val_bn_mode, hyper_input=hyper_input,
        init=None if init is None else str(init), init_epoch=init_epoch, flip=flip,
        image_size=image_size, device=device, compile=compile, precision=precision,
    )
    run_dir = run_dir or _default_run_dir(f"search-{cfg.dataset}", resume, "checkpoint.pt")
    use_cpu_threads(cfg.device)
    run_search(cfg, out=out, run_dir=run_dir, resume=resume, command_line=_command_line())


@app.command()
@_user_errors
def evaluate(
    policy: str = typer.Argument(..., help="A schedule file, or a baseline: none, cutout, "
                                 "autoaugment, randaugment, trivialaugment (torchvision's)."),
    model: Optional[str] = typer.Option(None, help="Target network, e.g. wrn40_2, "
                                        "shake26_2x96d (default: the dataset's usual one)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name, as for search "
                                          "(default: the --config file's, else digits)."),
    data_dir: Optional[Path] = _path_option(None, help="As for search."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: Table 9); the "
                                         "schedule is stretched linearly to this length."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: Table 9)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: Table 9)."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay (default: Table 9)."),
    train_size: Optional[int] = typer.Option(None, help="Training images (default: dataset's)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds, one trained model "
                                        "each, e.g. 0,1,2,3,4; results report mean ± std "
                                        "(default: the --config file's, else 0)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help=FLIP_FLAG_HELP),
    image_size: Optional[int] = typer.Option(None, help=IMAGE_SIZE_FLAG_HELP),
    replay: Optional[str] = typer.Option(None, help="How a schedule is applied: batched (on the "
                                         "device, default) or per-image (in DataLoader workers, "
                                         "for comparison)."),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers per process for "
                                          "per-image policies (default: up to 8, by the CPUs)."),
    eval_every: Optional[int] = typer.Option(None, help="Also test the network every N epochs, "
                                             "into epochs.csv (default 0: only at the end, as "
                                             "the paper)."),
    init_weights: Optional[Path] = _path_option(None, help="Start the network from this state "
                                                "dict instead of a random init, e.g. a "
                                                "search's network.pt (same --model)."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_FLAG_HELP),
    precision: Optional[str] = typer.Option(None, help=PRECISION_FLAG_HELP),
    config: Optional[Path] = _path_option(None, help="YAML or JSON file of settings; flags "
                                          "override it."),
    out: Path = _path_option(Path("results.json"), help="Per-seed and summary results (JSON)."),
    run_dir: Optional[Path] = _path_option(None, help="Checkpoints and per-epoch CSV "
                                           "(default: a new runs/evaluate-DATASET-MODEL-POLICY-"
                                           "TIME; with --resume the newest)."),
    resume: bool = typer.Option(False, help="Continue interrupted seeds from --run-dir."),
) -> None:
    """Train a target network with a schedule or a baseline and report test error."""
    from .evaluate import run_evaluation
    from .presets import resolve_evaluate_config
    from .runtime import use_cpu_threads

    if policy not in BASELINES and not Path(policy).is_file():
        raise HbaError(f"'{policy}' is neither a schedule file nor one of {choices(BASELINES)}")
    cfg = resolve_evaluate_config(
        policy, dataset, model, config, data_dir=None if data_dir is None else str(data_dir),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        train_size=train_size, seeds=None if seeds is None else _parse_seeds(seeds), flip=flip,
        image_size=image_size, device=device,
        compile=compile, precision=precision,
        init_weights=None if init_weights is None else str(init_weights),
        replay=replay, workers=workers, eval_every=eval_every,
    )
    tag = Path(policy).stem if policy not in BASELINES else policy
    run_dir = run_dir or _default_run_dir(f"evaluate-{cfg.dataset}-{cfg.model}-{tag}", resume,
                                          "seed-*/checkpoint.pt")
    use_cpu_threads(cfg.device)
    run_evaluation(cfg, out=out, run_dir=run_dir, resume=resume, command_line=_command_line())


@app.command()
@_user_errors
def export(
    schedule: Path = _path_argument(..., help="A schedule file (hba-schedule JSON)."),
    format: str = typer.Option(..., "--format", "-f", help="json: the schedule itself, "
                               "validated (stretched with --epochs); csv: one row per epoch, "
                               "a probability and a magnitude column per op copy; pba: PBA's "
                               "schedule log (integer levels 0-10, Posterize 0-9, and "
                               "probabilities p/10, in PBA's op order)."),
    epochs: Optional[int] = typer.Option(None, help="Stretch the schedule linearly to this "
                                         "many epochs first. For pba, PBA's training epochs "
                                         "(then --hp_policy_epochs the same) replay it exactly."),
    out: Path = _path_option(..., help="Output file (written atomically); for pba its name "
                             "must end in .txt, as PBA requires of --hp_policy files."),
) -> None:
    """Write a schedule in another format."""
    from .export import export_schedule

    export_schedule(schedule, format, out, epochs=epochs)
    typer.echo(f"wrote {out}")


@app.command()
@_user_errors
def inspect(
    schedule: Path = _path_argument(..., help="A schedule file (hba-schedule JSON)."),
    png: Optional[Path] = _path_option(None, help="Also write the two panels as a PNG picture."),
) -> None:
    """Draw a schedule as the paper's Figure 4: magnitudes per epoch and a probability heat map."""
    from .plots import inspect_schedule

    inspect_schedule(schedule, png=png)


@app.command()
@_user_errors
def schema(
    name: str = typer.Argument(..., help="Which file format, e.g. schedule or "
                               "search-config (an unknown name lists the known ones)."),
) -> None:
    """Print the JSON Schema of a file hba reads or writes (shipped with the package)."""
    from .schemas import read_schema

    typer.echo(read_schema(name), nl=False)


def main() -> None:
    app()
