"""Schemes measured side by side: alternating rounds on one natural-mode cluster, each round
watched for the neighbours' load (master/instrumented.py).

Round r runs every plan for `per_round` iterations, one plan after the other, then round r + 1
begins; the runs are named "scheme#r" in the run folder. A round's first iteration (just after
the plan's set-up) is a warm-up, and its last one carries the load reading (about a
millisecond of the master's time inside the measured runtime): both are left out of the
means. A round during which other processes
used more than FOREIGN_LIMIT of a core is set aside when at least half the rounds are clean.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcgc_sim.config import Config
from bcgc_sim.model.plans import Plan

from .instrumented import InstrumentedCluster, LoopTiming, per_iteration
from .runner import local_cluster_factory, run_testbed

FOREIGN_LIMIT = 0.05  # cores of other processes' CPU above which a round is set aside
SEPARATOR = "#"


@dataclass(frozen=True)
class Measured:
    """One scheme's runtimes (seconds) over its kept rounds, warm-ups left out."""

    plan: Plan
    runtimes: np.ndarray
    round_means: np.ndarray  # every round's mean, kept or not
    foreign: np.ndarray  # every round's foreign load (cores)
    kept: np.ndarray  # bool per round
    cpu: list[dict]  # every round's CPU seconds per iteration by (role, rank)
    loops: list[LoopTiming]  # every round's master-loop CPU per iteration

    @property
    def mean(self) -> float:
        return float(self.runtimes.mean())

    @property
    def median_round(self) -> float:
        """The median of the kept rounds' means (seconds): robust to a round under load."""
        return float(np.median(self.round_means[self.kept]))

    @property
    def round_spread(self) -> float:
        """Half the interquartile range of the kept rounds' means over their median."""
        q1, q3 = np.quantile(self.round_means[self.kept], [0.25, 0.75])
        return float((q3 - q1) / 2 / self.median_round)


def run_rounds(
    config: Config, folder: Path, plans: dict[str, Plan], rounds: int, per_round: int
) -> dict[str, Measured]:
    """Run every plan in `rounds` alternating rounds of `per_round` iterations."""
    if per_round < 3:
        raise ValueError("a round needs at least 3 iterations (the first and last are not kept)")
    config = _with_iterations(config, per_round)
    factory = local_cluster_factory(config, folder)
    holder: dict[str, InstrumentedCluster] = {}

    def instrumented():
        holder["cluster"] = InstrumentedCluster(factory(), (0, per_round - 1))
        return holder["cluster"]

    named = {f"{name}{SEPARATOR}{r}": plan for r in range(rounds) for name, plan in plans.items()}
    run_testbed(
        config,
        folder,
        log=lambda text: None,
        plans=lambda model: named,
        cluster_factory=instrumented,
    )
    foreign, cpu, loops = {}, {}, {}
    for run_id, snaps in holder["cluster"].snapshots.items():
        label = run_id.rsplit("-", 1)[0]
        loops[label] = holder["cluster"].loops[run_id]
        shares = per_iteration(snaps[0], snaps[per_round - 1], per_round - 1)
        foreign[label], cpu[label] = shares["foreign"], shares["cpu"]
    with open(folder / "iterations.csv") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for name, plan in plans.items():
        per = [
            np.array(
                [float(r["measured_s"]) for r in rows if r["scheme"] == f"{name}{SEPARATOR}{k}"][
                    1:-1
                ]
            )
            for k in range(rounds)
        ]
        load = np.array([foreign.get(f"{name}{SEPARATOR}{k}", 0.0) for k in range(rounds)])
        kept = load <= FOREIGN_LIMIT
        if kept.sum() < max(1, rounds / 2):
            kept = np.ones(rounds, dtype=bool)  # too few clean rounds: keep them all
        out[name] = Measured(
            plan,
            np.concatenate([p for p, k in zip(per, kept, strict=True) if k]),
            np.array([p.mean() for p in per]),
            load,
            kept,
            [cpu.get(f"{name}{SEPARATOR}{k}", {}) for k in range(rounds)],
            [loops.get(f"{name}{SEPARATOR}{k}", LoopTiming()) for k in range(rounds)],
        )
    return out


def _with_iterations(config: Config, iterations: int) -> Config:
    import dataclasses

    return dataclasses.replace(config, run=dataclasses.replace(config.run, iterations=iterations))
