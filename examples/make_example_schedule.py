"""Write examples/example-schedule.json: an ILLUSTRATION of an HBA schedule, not a searched one.

Smooth curves shaped like the paper's Figure 4, starting at HBA's initial point (every
hyperparameter at 0.95·lo + 0.05·hi): each magnitude rises quickly over the first epochs and
eases off slowly towards the end; each probability drifts smoothly to its own level, the largest
about five times the smallest. Deterministic: rerunning it reproduces the file exactly.

    python examples/make_example_schedule.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hbacli import space
from hbacli.schedule import Provenance, Schedule, save_schedule

EPOCHS = 200
OUT = Path(__file__).resolve().parent / "example-schedule.json"


def smooth_curves(epochs: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and magnitude fractions in [0, 1], both (epochs, 30)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, epochs)[:, None]
    n = space.NUM_OP_COPIES
    start = space.INITIAL_FRACTION

    # Probabilities: from 0.05 towards a per-copy level with a gentle wave on the way.
    level = rng.uniform(0.05, 0.30, n)
    rate = rng.uniform(4, 12, n)
    wave = rng.uniform(-0.03, 0.03, n) * np.sin(np.pi * t * rng.uniform(1, 2.5, n))
    probs = start + (level - start) * (1 - np.exp(-rate * t)) + wave * t

    # Magnitude fractions: a fast rise to a peak, then a slow decline.
    peak = rng.uniform(0.25, 0.75, n)
    rise = rng.uniform(15, 35, n)
    decline = rng.uniform(0.15, 0.35, n)
    fractions = start + (peak - start) * (1 - np.exp(-rise * t)) * (1 - decline * t**2)
    return np.clip(probs, 0.01, 1), np.clip(fractions, 0, 1)


def example_schedule() -> Schedule:
    probs, fractions = smooth_curves(EPOCHS)
    low = np.array([oc.op.low if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES])
    high = np.array([oc.op.high if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES])
    magnitudes = low + (high - low) * fractions
    provenance = Provenance(
        dataset="reduced-cifar10", train_size=4000, val_size=10000, model="wrn40_2",
        strategy="1st-bn", seed=0, epochs=EPOCHS,
        command="python examples/make_example_schedule.py",
        note="illustration: smooth curves shaped like the paper's Figure 4, made by "
             "examples/make_example_schedule.py, not by a search",
    )
    return Schedule.from_arrays(np.round(probs, 4), np.round(magnitudes, 4), provenance)


if __name__ == "__main__":
    save_schedule(example_schedule(), OUT)
    print(f"wrote {OUT}")
