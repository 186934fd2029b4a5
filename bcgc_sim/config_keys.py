"""What every config key means: the one place its description is written (`bcgc config` lists
them with default and effective value; README points there).

A test checks that this table and the Config dataclasses name the same keys, so a new key
cannot be added without its meaning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import Config

MEANINGS: dict[str, str] = {
    "seed": "seeds every stream: stragglers (seed, iteration, worker), Monte Carlo, codes",
    "cluster.workers": "N, the number of workers",
    "cluster.pin": "pin each worker (all its threads) to one core, round-robin; false: the OS "
    "schedules",
    "cluster.heartbeat": "seconds without a message before a peer sends a heartbeat",
    "cluster.liveness": "heartbeat intervals of silence before a peer counts as dead",
    "cluster.on_failure": "a block can no longer be decoded: 'error' ends the run, 'replace' "
    "waits for a new worker",
    "cluster.replace_timeout": "seconds to wait for a replacement worker",
    "cluster.stall_timeout": "seconds without a usable message before an iteration ends with an "
    "error; 0 = liveness x heartbeat + 2 x the predicted iteration + 1 s",
    "cluster.transport": "bulk arrays: 'auto' (shared memory when master and worker share a "
    "host, else ZeroMQ frames), 'zmq' (always frames), 'shm' (shared memory or a set-up error)",
    "straggler.distribution": "cycle-time law: 'shifted-exponential', 'failure-mixture', "
    "'pareto' or 'empirical'",
    "straggler.rate": "mu of the shifted exponential, per model time unit",
    "straggler.shift": "t0 of the shifted exponential, model time units per cycle",
    "straggler.failure_probability": "p of the failure mixture (a worker never answers)",
    "straggler.pareto_shape": "Pareto tail index",
    "straggler.pareto_scale": "Pareto minimum, model time units per cycle",
    "straggler.csv": "measured cycle times for 'empirical' (column cycle_time, or the first)",
    "model.coordinates": "L, coordinates of the gradient (synthetic data: its features)",
    "model.samples": "M, samples (synthetic data: its rows)",
    "model.cycles": "C, cycles per coded partial derivative",
    "predict.samples": "Monte-Carlo draws of the N cycle times",
    "predict.schemes": "schemes 'bcgc predict' compares",
    "predict.exact": "also E[tau] by integrating the exact completion probability",
    "predict.time_limit": "seconds: 'bcgc predict' and 'bcgc plan' refuse, before starting, "
    "work estimated to take longer; 0 = no limit",
    "predict.deadline": "deadline T (model time units) for P(tau <= T) and the deadline "
    "schemes; 0 = none (--deadline overrides)",
    "optimize.method": "bcgc-opt's optimiser: 'ours' (scale-free step, iterate averaging) or "
    "'paper' (the authors' step rule)",
    "optimize.iterations": "subgradient iterations of bcgc-opt",
    "optimize.batch": "cycle-time draws per subgradient step",
    "optimize.step_scale": "step size factor of the subgradient method",
    "optimize.tuning_samples": "draws of T on which plans are tuned and rounded",
    "run.schemes": "schemes 'bcgc run' measures, in this order",
    "run.iterations": "gradient iterations per scheme",
    "run.time_scale": "seconds per model time unit; 0 = choose it from run.iteration_seconds",
    "run.iteration_seconds": "target mean predicted iteration (seconds) when run.time_scale = 0",
    "run.output": "folder in which each run writes a new folder",
    "run.check": "compare every decoded gradient with the uncoded one",
    "run.startup_timeout": "seconds for the workers to start and confirm their set-up",
    "run.mode": "'injected' (seeded delays) or 'natural' (no delay: real compute under real load)",
    "run.cost_model": "injected deadlines from the papers' C per partial derivative ('paper') "
    "or from the calibrated costs of each block ('system', needs --calibration FILE)",
    "natural.burners": "cores that get a busy-looping process during natural runs",
    "natural.slowdown": "per-worker repetitions of the real work in natural runs (empty: all 1)",
    "problem.kind": "'least-squares' or 'logistic'",
    "problem.dataset": "'synthetic' (M x L from model.*), 'breast-cancer' (569 x 30) or "
    "'diabetes' (442 x 10), both bundled with scikit-learn",
    "problem.noise": "synthetic data: standard deviation of the targets' noise",
    "problem.learning_rate": "gradient step; 0 = 1 / the largest eigenvalue of the data",
    "problem.data_dir": "folder for the data files; empty: <output folder>/data (the run's own "
    "folder when one is given, else <run.output>/data)",
    "partial.storage": "delta, partitions per worker (cyclic); 0 = the storage of bcgc-opt for "
    "the same model",
    "partial.parts": "l: uploads of ceil(L / l) floats; each chunk needs l processed copies",
    "partial.ordering": "'optimal' (Latin) or 'random' (one order per worker, drawn from the seed)",
    "partial.approx_time": "partial-gc-approx stops at this fraction of E[time to the exact "
    "gradient]",
    "partial.approx_nmse": "... or once its estimated NMSE is at most this (0 = off)",
}


@dataclass(frozen=True)
class ConfigKey:
    """One key: its dotted name, meaning, built-in default and value in the given config."""

    key: str
    meaning: str
    default: Any
    value: Any


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a Config (tuples as lists, as TOML writes them)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= flatten(value, f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_keys(config: Config) -> list[ConfigKey]:
    """Every key of `config` in declaration order, with its meaning and default."""
    defaults, values = flatten(Config()), flatten(config)
    return [ConfigKey(k, MEANINGS.get(k, ""), defaults[k], values[k]) for k in values]
