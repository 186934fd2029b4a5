"""Every seeded random stream of bcgc-sim, named once.

A stream is numpy's SeedSequence(seed, spawn_key=(root, *key)): the same seed gives the same
draws on any machine, in the testbed and in every prediction (DESIGN.md, Conventions). The root
values are fixed for good: changing one changes every seeded figure that uses it.
"""

from __future__ import annotations

import numpy as np

ROOT_TESTBED = 0  # key (iteration, worker): worker n's cycle time in one testbed iteration
ROOT_MONTE_CARLO = 1  # key (stream,): K x N cycle times for predictions and tuning
ROOT_CODES = 2  # key (N, s): the Gaussian candidates of Tandon's B(s) (model/codes.py)
ROOT_COMBINER = 7  # key (): the partial-gc master's combiner Phi (partial/decoder.py)
ROOT_COMPARISON_ORDERS = 8  # key (N, delta): a fresh random order per draw (comparison.py)
ROOT_ORDERING = 9  # key (N, delta): partial-gc's random ordering, one per run (partial/plan.py)
ROOT_SYSTEM = (
    11  # key (stream,): the system model's compute multipliers and latencies (model/machine.py)
)

# The `stream` of a Monte-Carlo draw (root ROOT_MONTE_CARLO): schemes tune on TUNING (and the
# optimiser on batches 1, 2, ...), round on ROUNDING; predictions evaluate on EVALUATION, which
# no scheme ever sees (out-of-sample, common to all schemes).
STREAM_TUNING = 0
STREAM_ROUNDING = 1_000_000
STREAM_EVALUATION = 2_000_000


def generator(seed: int, root: int, *key: int) -> np.random.Generator:
    """The generator of stream (root, *key) of `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(root, *key)))
