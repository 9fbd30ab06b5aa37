"""Does the search tell good from bad? Three checks on the embedded digits, on the CPU.

1. Harmful op. The search starts (``--init``) from the default policy except one op made
   destructive: both copies of Posterize at p = 0.5 and m = 7.6 (round(m) = 8 bits removed: a
   black image). Per seed, each copy's change of probability logit is compared with the mean
   change of the other 28 probabilities. Pass: pushed down in ≥ 5 of 6 copies (3 seeds) and,
   on average, below the others' mean.
2. Copies agree. Default searches (the README's demo, one per seed): each copy's final change
   of probability logit minus that seed's mean change (the common mode) is its deviation. The
   two copies of one op are the same op, so their deviations should correlate across ops and
   seeds (Pearson r over 15 ops × seeds; magnitudes likewise over 12 ops); and Color, an exact
   identity on grey digits, should move no more than the median op.
3. Accuracy. ``hba evaluate`` (the digits recipe, wrn16_1) of each seed's searched schedule
   against ``none``, ``cutout``, ``randaugment`` and ``trivialaugment``, same seeds: mean ± std
   of test error. Pass: the schedule within 0.5 points of the better of ``none`` and ``cutout``.

Jobs (searches, evaluations) run in ``--jobs`` processes of one thread each. Everything is kept
under ``--out`` (schedules, results, ``quality.json``); the last line printed is one JSON object.

    python benchmarks/quality.py                          # all three, 3 seeds (~18 min, 2 cores)
    python benchmarks/quality.py --skip-accuracy          # checks 1 and 2 only
    python benchmarks/quality.py --set hyper_input=raw    # the same with any search setting
    python benchmarks/quality.py --dataset reduced-cifar10 --device cuda   # GPU scale
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from hbacli import space
from hbacli.errors import HbaError

HARMFUL_OP = "Posterize"
HARMFUL_PROBABILITY = 0.5
HARMFUL_MAGNITUDE = 7.6          # rounds to 8: every bit removed, a black image
IDENTITY_OP_ON_GREY = "Color"    # an exact identity on grey images (digits)
COMPARED_BASELINES = ("none", "cutout", "randaugment", "trivialaugment")
ACCURACY_MARGIN = 0.5            # points of test error the schedule may trail by
PROBABILITY_OF = {oc.label: i for i, oc in enumerate(space.OP_COPIES)}


# ------------------------------------------------------------------------ jobs (one process each)

def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def search_job(dataset: str, seed: int, epochs: int | None, overrides: dict[str, Any],
               run_dir: str) -> dict[str, Any]:
    """One search; its schedule file, λ0 and final λ (logits)."""
    _one_thread()
    import torch

    from hbacli.presets import resolve_search_config
    from hbacli.search import CHECKPOINT_NAME, run_search

    cfg = resolve_search_config(dataset, None, seed=seed, epochs=epochs, **overrides)
    run = Path(run_dir)
    started = time.perf_counter()
    run_search(cfg, out=run / "schedule-final.json", run_dir=run, progress=False)
    state = torch.load(run / CHECKPOINT_NAME, map_location="cpu", weights_only=True)["engine"]
    return {"seed": seed, "schedule": str(run / "schedule-final.json"),
            "lam_origin": state["lam_origin"].double().tolist(),
            "lam_final": state["lam"].double().tolist(),
            "seconds": time.perf_counter() - started}


def evaluate_job(dataset: str, policy: str, seed: int, epochs: int | None, device: str,
                 run_dir: str) -> dict[str, Any]:
    _one_thread()
    from hbacli.evaluate import run_evaluation
    from hbacli.presets import resolve_evaluate_config

    cfg = resolve_evaluate_config(policy, dataset, None, seeds=[seed], epochs=epochs,
                                  device=device)
    run = Path(run_dir)
    results = run_evaluation(cfg, out=run / "results.json", run_dir=run, progress=False)
    seed_result = results.per_seed[0]
    return {"seed": seed, "test_error": seed_result.test_error,
            "test_loss": seed_result.test_loss}


# --------------------------------------------------------------------------- the checks

def harmful_init(path: Path, dataset: str) -> None:
    """A one-epoch schedule: the default starting policy with HARMFUL_OP made destructive."""
    from hbacli.schedule import Provenance, Schedule, save_schedule

    probabilities, magnitudes = space.split_physical(space.lambda_to_physical(
        space.initial_lambda()))
    for oc_index, oc in enumerate(space.OP_COPIES):
        if oc.op.name == HARMFUL_OP:
            probabilities[oc_index] = HARMFUL_PROBABILITY
            magnitudes[oc_index] = HARMFUL_MAGNITUDE
    save_schedule(Schedule.from_arrays(probabilities[None], magnitudes[None], Provenance(
        dataset=dataset, note=f"benchmarks/quality.py: {HARMFUL_OP} destructive")), path)


def probability_changes(job: dict[str, Any]) -> np.ndarray:
    """(30,) change of each copy's probability logit over the search."""
    final, origin = np.array(job["lam_final"]), np.array(job["lam_origin"])
    return (final - origin)[space.PROBABILITY_SLOTS]


def magnitude_changes(job: dict[str, Any]) -> np.ndarray:
    """(30,) change of each copy's magnitude logit (NaN for probability-only ops)."""
    final, origin = np.array(job["lam_final"]), np.array(job["lam_origin"])
    out = np.full(space.NUM_OP_COPIES, np.nan)
    out[space.MAGNITUDE_COPY_INDEX] = (final - origin)[space.MAGNITUDE_SLOTS]
    return out


def harmful_report(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    copies = [i for i, oc in enumerate(space.OP_COPIES) if oc.op.name == HARMFUL_OP]
    rows, pushed_down, gaps = [], 0, []
    for job in jobs:
        change = probability_changes(job)
        others = float(np.delete(change, copies).mean())
        for i in copies:
            rows.append({"seed": job["seed"], "copy": space.OP_COPIES[i].label,
                         "logit_change": float(change[i]), "others_mean": others})
            pushed_down += change[i] < 0
            gaps.append(float(change[i]) - others)
    total = len(rows)
    return {"op": HARMFUL_OP, "rows": rows, "pushed_down": int(pushed_down), "copies": total,
            "mean_gap_to_others": statistics.fmean(gaps),
            "passed": bool(pushed_down >= total - 1 and statistics.fmean(gaps) < 0)}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def copies_report(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    n_ops = len(space.OPS)
    prob_dev = np.stack([probability_changes(j) - probability_changes(j).mean() for j in jobs])
    mag = np.stack([magnitude_changes(j) for j in jobs])
    mag_dev = mag - np.nanmean(mag, axis=1, keepdims=True)
    # OP_COPIES is copy-major: columns [0, 15) are copy 0, [15, 30) copy 1 of the same ops.
    r_prob = _pearson(prob_dev[:, :n_ops].ravel(), prob_dev[:, n_ops:].ravel())
    r_mag = _pearson(mag_dev[:, :n_ops].ravel(), mag_dev[:, n_ops:].ravel())
    per_op = np.abs(prob_dev).reshape(len(jobs), 2, n_ops).mean(axis=(0, 1))   # (15,)
    identity = float(per_op[space.OP_NAMES.index(IDENTITY_OP_ON_GREY)])
    common = [float(probability_changes(j).mean()) for j in jobs]
    return {"r_probability": r_prob, "r_magnitude": r_mag,
            "identity_op": IDENTITY_OP_ON_GREY, "identity_abs_deviation": identity,
            "median_abs_deviation": float(np.median(per_op)),
            "identity_within_typical": bool(identity <= np.median(per_op)),
            "mean_probability_logit_change": statistics.fmean(common),
            "final_mean_probability": statistics.fmean(
                float(np.mean(space.lambda_to_physical(np.array(j["lam_final"]))
                              [space.PROBABILITY_SLOTS])) for j in jobs)}


def accuracy_report(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table = {}
    for policy, runs in results.items():
        errors = [r["test_error"] for r in sorted(runs, key=lambda r: r["seed"])]
        losses = [r["test_loss"] for r in sorted(runs, key=lambda r: r["seed"])]
        table[policy] = {"test_error": errors, "mean": statistics.fmean(errors),
                         "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                         "test_loss_mean": statistics.fmean(losses)}
    report: dict[str, Any] = {"policies": table}
    if "schedule" in table and {"none", "cutout"} <= set(table):
        best = min(table["none"]["mean"], table["cutout"]["mean"])
        report["gap_to_best_of_none_cutout"] = table["schedule"]["mean"] - best
        report["passed"] = bool(report["gap_to_best_of_none_cutout"] <= ACCURACY_MARGIN)
    return report


# --------------------------------------------------------------------------- driver

def _announce(future, label: str, started: float, total: int, done: list[int]):
    """Print one line per finished job (the whole benchmark runs for minutes)."""
    def report(_):
        done.append(1)
        print(f"[{time.perf_counter() - started:6.0f} s] {len(done)}/{total} {label}",
              file=sys.stderr, flush=True)
    future.add_done_callback(report)
    return future


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise HbaError(f"--set takes FIELD=VALUE, got '{pair}'")
        try:
            overrides[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.replace("-", "_")] = value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--harm-epochs", type=int, default=8,
                        help="epochs of the harmful-op searches")
    parser.add_argument("--search-epochs", type=int, default=None,
                        help="epochs of the default searches (default: the preset's)")
    parser.add_argument("--eval-epochs", type=int, default=None,
                        help="evaluation epochs (default: the recipe's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="a search setting, e.g. hyper_input=raw")
    parser.add_argument("--skip-harmful", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {"device": args.device, **parse_overrides(args.overrides)}
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    init = out / "harmful-init.json"
    harmful_init(init, args.dataset)
    started = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"))
    total = len(seeds) * ((0 if args.skip_harmful else 1) + 1
                          + (0 if args.skip_accuracy else len(COMPARED_BASELINES) + 1))
    done: list[int] = []

    def submit(label: str, *job):
        return _announce(pool.submit(*job), label, started, total, done)

    with pool:
        harmful = [] if args.skip_harmful else [submit(
            f"harmful-op search, seed {s}", search_job, args.dataset, s, args.harm_epochs,
            {**overrides, "init": str(init)}, str(out / f"harmful-seed{s}")) for s in seeds]
        default = [submit(f"search, seed {s}", search_job, args.dataset, s, args.search_epochs,
                          overrides, str(out / f"search-seed{s}")) for s in seeds]
        evaluations: dict[str, list] = {}
        if not args.skip_accuracy:
            for policy in COMPARED_BASELINES:
                evaluations[policy] = [submit(
                    f"evaluate {policy}, seed {s}", evaluate_job, args.dataset, policy, s,
                    args.eval_epochs, args.device, str(out / f"evaluate-{policy}-seed{s}"))
                    for s in seeds]
        default_jobs = [f.result() for f in default]
        if not args.skip_accuracy:
            evaluations["schedule"] = [submit(
                f"evaluate schedule, seed {job['seed']}", evaluate_job, args.dataset,
                job["schedule"], job["seed"], args.eval_epochs, args.device,
                str(out / f"evaluate-schedule-seed{job['seed']}")) for job in default_jobs]
        harmful_jobs = [f.result() for f in harmful]
        evaluated = {p: [f.result() for f in fs] for p, fs in evaluations.items()}

    report: dict[str, Any] = {
        "benchmark": "quality", "dataset": args.dataset, "seeds": seeds,
        "search_settings": overrides, "harm_epochs": args.harm_epochs,
        "search_epochs": args.search_epochs, "eval_epochs": args.eval_epochs,
        "copies": copies_report(default_jobs),
        "search_seconds_mean": statistics.fmean(j["seconds"] for j in default_jobs),
    }
    if harmful_jobs:
        report["harmful"] = harmful_report(harmful_jobs)
    if evaluated:
        report["accuracy"] = accuracy_report(evaluated)
    report["wall_seconds"] = time.perf_counter() - started
    print_report(report)
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))


def print_report(report: dict[str, Any]) -> None:
    if "harmful" in report:
        h = report["harmful"]
        print(f"harmful op ({h['op']} at p={HARMFUL_PROBABILITY}, m={HARMFUL_MAGNITUDE}, "
              f"{report['harm_epochs']} epochs): pushed down in {h['pushed_down']}/{h['copies']} "
              f"copies, mean gap to the others {h['mean_gap_to_others']:+.3f} logits "
              f"-> {'PASS' if h['passed'] else 'FAIL'}")
        for row in h["rows"]:
            print(f"  seed {row['seed']} {row['copy']:<12} {row['logit_change']:+.3f}  "
                  f"(others {row['others_mean']:+.3f})")
    c = report["copies"]
    print(f"copies agree: r(probability) {c['r_probability']:+.2f}, r(magnitude) "
          f"{c['r_magnitude']:+.2f}; {c['identity_op']} |dev| {c['identity_abs_deviation']:.3f} "
          f"vs median op {c['median_abs_deviation']:.3f}; mean probability logit change "
          f"{c['mean_probability_logit_change']:+.3f} (final mean p "
          f"{c['final_mean_probability']:.3f})")
    if "accuracy" in report:
        a = report["accuracy"]
        print("| policy | test error % (mean ± std) | test loss |")
        print("|---|---|---|")
        for policy, row in a["policies"].items():
            print(f"| {policy} | {row['mean']:.2f} ± {row['std']:.2f} | "
                  f"{row['test_loss_mean']:.3f} |")
        if "passed" in a:
            print(f"schedule vs best of none/cutout: {a['gap_to_best_of_none_cutout']:+.2f} "
                  f"points -> {'PASS' if a['passed'] else 'FAIL'}")


if __name__ == "__main__":
    try:
        main()
    except HbaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
