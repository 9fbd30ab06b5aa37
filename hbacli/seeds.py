"""Seeds: the one mixer every random stream of hba is derived with, and the streams' tags.

A run has one seed (``--seed``, or each of ``--seeds``); every stream it draws from (batch
order, ε, the policy, the baseline pipeline, DataLoader workers, torch's global generator)
gets its own seed ``derive_seed(seed, …, Stream.X)``, a function of what identifies it (epoch,
rank, worker), so a stream never depends on what ran before it: resumed runs replay exactly,
ranks draw independently, and neighbouring seeds give unrelated streams (unlike seed + epoch).
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    """Tags that keep the streams derived from one seed apart."""

    POLICY = 1      # the schedule's or policy's draws
    BASELINE = 2    # the baseline pipeline's crop, flip and Cutout
    GLOBAL = 3      # torch's global generator (dropout, shake-shake, …)
    WORKERS = 4     # DataLoader workers
    ORDER = 5       # batch order of a split
    NOISE = 6       # the search's ε (and, in one generator, its augmentation)


def derive_seed(*numbers: int) -> int:
    """A 63-bit seed mixed from several integers (seed, epoch, rank, stream, …)."""
    words = np.random.SeedSequence([int(n) % 2**63 for n in numbers]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
