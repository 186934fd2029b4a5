"""Typed configuration: built-in defaults, a TOML file, then `--set key=value` overrides.

Every key is validated: a misspelt key, a wrong type or an out-of-range value raises a
UserError naming the key (and the closest known key for a misspelling). The defaults are the
demo of `bcgc run` (N = 8 workers, a synthetic least-squares problem of 800 x 400, five schemes,
under 30 s on 2 cores) with the paper's cycle-time law (mu = 1e-3, t0 = 50);
`configs/paper.toml` is the paper's default point (spec/bcgc.md §8.1).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .model.optimize import SubgradientSettings
from .model.stragglers import (
    DISTRIBUTIONS,
    CycleTimeDistribution,
    Empirical,
    FailureMixture,
    Pareto,
    ShiftedExponential,
)
from .model.system import SystemModel
from .partial.plan import PartialOptions
from .problems import DATASETS, PROBLEMS
from .schemes import SCHEMES, SYSTEM_SCHEMES, SchemeOptions, check_scheme_names
from .wire.protocol import DEFAULT_HEARTBEAT_S, DEFAULT_LIVENESS
from .wire.shm import TRANSPORTS


@dataclass(frozen=True)
class ClusterConfig:
    workers: int = 8  # N
    pin: bool = True  # pin each worker to one core (round-robin); off: let the OS schedule
    heartbeat: float = DEFAULT_HEARTBEAT_S  # seconds without a message before a peer sends one
    liveness: int = DEFAULT_LIVENESS  # heartbeat intervals of silence before a peer is dead
    on_failure: str = (
        "error"  # a block can no longer be decoded: "error" ends the run, "replace" waits
    )
    replace_timeout: float = 60.0  # seconds to wait for a replacement worker
    stall_timeout: float = 0.0  # seconds without a usable message before an iteration gives up;
    # 0 = derived: liveness x heartbeat + 2 x the predicted iteration + 1 s (master/settings.py)
    transport: str = "auto"  # bulk arrays: "auto" (shared memory on one host), "zmq", "shm"


@dataclass(frozen=True)
class StragglerConfig:
    distribution: str = "shifted-exponential"
    rate: float = 1e-3  # mu, per model time unit
    shift: float = 50.0  # t0, model time units per cycle
    failure_probability: float = 0.0  # p of the failure mixture
    pareto_shape: float = 2.5
    pareto_scale: float = 1.0
    csv: str = ""  # measured cycle times for the empirical distribution


@dataclass(frozen=True)
class ModelConfig:
    coordinates: int = 400  # L (synthetic data: its number of features)
    samples: int = 800  # M (synthetic data: its number of rows)
    cycles: float = 1.0  # C


@dataclass(frozen=True)
class PredictConfig:
    samples: int = 100_000  # Monte-Carlo draws of T
    schemes: tuple[str, ...] = tuple(s for s in SCHEMES if s not in SYSTEM_SCHEMES)
    exact: bool = True  # also E[tau] by integrating the exact completion probability
    deadline: float = 0.0  # T (model time units) for P(tau <= T) and the deadline schemes; 0 = none
    time_limit: float = 600.0  # seconds: refuse a prediction estimated to take longer; 0 = none


@dataclass(frozen=True)
class OptimizeConfig:
    method: str = "ours"  # "ours" or "paper" (the authors' step rule, spec §4)
    iterations: int = 300
    batch: int = 4_000
    step_scale: float = 10.0
    tuning_samples: int = 20_000


@dataclass(frozen=True)
class RunConfig:
    schemes: tuple[str, ...] = ("bcgc-opt", "bcgc-t", "single-bcgc", "tandon", "uncoded")
    iterations: int = 10
    time_scale: float = 0.0  # seconds per model time unit; 0 = choose from iteration_seconds
    iteration_seconds: float = 0.1  # target mean runtime per iteration when time_scale = 0
    output: str = "results"  # each run writes a new folder inside
    check: bool = True  # compare every decoded gradient with the uncoded one
    startup_timeout: float = 60.0  # seconds for workers to start and confirm set-up
    mode: str = "injected"  # or "natural": no injected delay, real compute under real load
    cost_model: str = "paper"  # injected deadlines: the papers' C per partial derivative, or
    # "system": the calibrated costs of each block (model/emulation.py; needs --calibration)


@dataclass(frozen=True)
class NaturalConfig:
    """Real stragglers for run.mode = "natural" (and `bcgc calibrate`)."""

    burners: tuple[int, ...] = ()  # cores that get a busy-looping process during the run
    slowdown: tuple[int, ...] = ()  # per-worker repetitions of the work (empty: all 1)


@dataclass(frozen=True)
class ProblemConfig:
    kind: str = "least-squares"  # or "logistic"
    dataset: str = "synthetic"  # or "breast-cancer", "diabetes" (bundled with scikit-learn)
    noise: float = 0.1  # synthetic data: noise of the targets
    learning_rate: float = 0.0  # 0 = a safe step from the data (1 / largest eigenvalue)
    data_dir: str = ""  # where data files are kept; default: <run.output>/data


@dataclass(frozen=True)
class Config:
    seed: int = 1
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    straggler: StragglerConfig = field(default_factory=StragglerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    run: RunConfig = field(default_factory=RunConfig)
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    natural: NaturalConfig = field(default_factory=NaturalConfig)
    partial: PartialOptions = field(default_factory=PartialOptions)

    def distribution(self) -> CycleTimeDistribution:
        s = self.straggler
        if s.distribution == "shifted-exponential":
            return ShiftedExponential(s.rate, s.shift)
        if s.distribution == "failure-mixture":
            return FailureMixture(ShiftedExponential(s.rate, s.shift), s.failure_probability)
        if s.distribution == "pareto":
            return Pareto(s.pareto_shape, s.pareto_scale)
        if not s.csv:
            raise UserError("straggler.distribution = 'empirical' needs straggler.csv = PATH")
        return Empirical.from_csv(s.csv)

    def system_model(
        self, coordinates: int | None = None, samples: int | None = None
    ) -> SystemModel:
        """The model this config describes; L and M of a data set when given (the testbed's)."""
        m = self.model
        return SystemModel(
            self.cluster.workers,
            m.coordinates if coordinates is None else coordinates,
            m.samples if samples is None else samples,
            m.cycles,
            self.distribution(),
        )

    def scheme_options(self, costs=None) -> SchemeOptions:
        """The schemes' knobs; `costs` (a SystemCosts from --calibration) enables bcgc-sys-opt."""
        o = self.optimize
        settings = (
            SubgradientSettings.paper()
            if o.method == "paper"
            else SubgradientSettings(o.iterations, o.batch, o.step_scale)
        )
        return SchemeOptions(
            seed=self.seed,
            optimizer=settings,
            tuning_samples=o.tuning_samples,
            deadline=self.predict.deadline or None,
            partial=self.partial,
            system=None if costs is None else (costs, self.machine(costs)),
        )

    def machine(self, costs):
        """Where the system model runs a plan: the calibrated cores with this config's burners,
        slowdown and gradient check (model/machine.py)."""
        from .model.machine import Machine

        return Machine(
            cores=costs.cores,
            burners=self.natural.burners,
            repeat=self.natural.slowdown,
            check=self.run.check,
        )


def _check(config: Config) -> Config:
    """Range checks of every section; the model checks N, L, M, C and the law."""
    if config.seed < 0:
        raise UserError(f"seed must be >= 0, got {config.seed}")
    if config.cluster.workers < 2:  # before the checks that count on it
        raise UserError(f"cluster.workers (N) must be >= 2, got {config.cluster.workers}")
    _check_straggler(config.straggler)
    _check_optimize(config.optimize)
    _check_predict(config.predict)
    _check_run(config.run)
    _check_cluster(config.cluster)
    _check_natural(config.natural, config.cluster.workers)
    _check_problem(config.problem, config.model, config.cluster.workers)
    config.partial.check(config.cluster.workers)
    config.system_model()  # validates N, L, M, C and the distribution's parameters
    return config


def _check_straggler(s: StragglerConfig) -> None:
    if s.distribution not in DISTRIBUTIONS:
        raise UserError(
            f"straggler.distribution must be one of {', '.join(DISTRIBUTIONS)}, "
            f"got '{s.distribution}'"
        )


def _check_optimize(o: OptimizeConfig) -> None:
    if o.method not in ("ours", "paper"):
        raise UserError(f"optimize.method must be 'ours' or 'paper', got '{o.method}'")
    for key in ("iterations", "batch", "tuning_samples"):
        if getattr(o, key) < 1:
            raise UserError(f"optimize.{key} must be >= 1")


def _check_predict(p: PredictConfig) -> None:
    if p.samples < 2:
        raise UserError("predict.samples must be >= 2")
    if not (p.deadline >= 0 and math.isfinite(p.deadline)):
        raise UserError(
            f"predict.deadline must be >= 0 model time units (0 = none), got {p.deadline}"
        )
    if not (p.time_limit >= 0 and math.isfinite(p.time_limit)):
        raise UserError(f"predict.time_limit must be >= 0 seconds (0 = none), got {p.time_limit}")
    if not p.schemes:
        raise UserError("predict.schemes is empty: name at least one scheme")
    check_scheme_names(list(p.schemes))


def _check_run(r: RunConfig) -> None:
    if not r.schemes:
        raise UserError("run.schemes is empty: name at least one scheme")
    check_scheme_names(list(r.schemes))
    if r.iterations < 1:
        raise UserError(f"run.iterations must be >= 1, got {r.iterations}")
    if r.time_scale < 0 or (r.time_scale == 0 and not r.iteration_seconds > 0):
        raise UserError("run.time_scale must be > 0, or 0 with run.iteration_seconds > 0")
    if not r.startup_timeout > 0:
        raise UserError("run.startup_timeout must be > 0")
    if r.mode not in ("injected", "natural"):
        raise UserError(f"run.mode must be 'injected' or 'natural', got '{r.mode}'")
    if r.cost_model not in ("paper", "system"):
        raise UserError(f"run.cost_model must be 'paper' or 'system', got '{r.cost_model}'")
    if r.cost_model == "system" and r.mode != "injected":
        raise UserError(
            "run.cost_model = 'system' sets injected deadlines: use it with run.mode = 'injected'"
        )


def _check_cluster(c: ClusterConfig) -> None:
    if not (c.heartbeat > 0 and c.liveness >= 2 and c.replace_timeout > 0):
        raise UserError(
            "cluster.heartbeat and cluster.replace_timeout must be > 0, cluster.liveness >= 2"
        )
    if not (c.stall_timeout >= 0 and math.isfinite(c.stall_timeout)):
        raise UserError(
            f"cluster.stall_timeout must be >= 0 seconds (0 = derived), got {c.stall_timeout}"
        )
    if c.on_failure not in ("error", "replace"):
        raise UserError(f"cluster.on_failure must be 'error' or 'replace', got '{c.on_failure}'")
    if c.transport not in TRANSPORTS:
        raise UserError(
            f"cluster.transport must be one of {', '.join(TRANSPORTS)}, got '{c.transport}'"
        )


def _check_natural(n: NaturalConfig, workers: int) -> None:
    if n.slowdown and (len(n.slowdown) != workers or min(n.slowdown) < 1):
        raise UserError(
            f"natural.slowdown needs one whole factor >= 1 per worker ({workers}), "
            f"got {list(n.slowdown)}"
        )
    cores = os.cpu_count() or 1
    if any(not 0 <= c < cores for c in n.burners):
        raise UserError(f"natural.burners must list cores in 0..{cores - 1}, got {list(n.burners)}")


def _check_problem(p: ProblemConfig, model: ModelConfig, workers: int) -> None:
    if p.kind not in PROBLEMS:
        raise UserError(f"problem.kind must be one of {', '.join(PROBLEMS)}, got '{p.kind}'")
    if p.dataset not in DATASETS:
        raise UserError(f"problem.dataset must be one of {', '.join(DATASETS)}, got '{p.dataset}'")
    if p.learning_rate < 0 or p.noise < 0:
        raise UserError("problem.learning_rate and problem.noise must be >= 0")
    if p.dataset == "synthetic" and model.samples < workers:
        raise UserError(
            f"model.samples (M = {model.samples}) must be >= cluster.workers "
            f"(N = {workers}): every worker needs a data subset"
        )


def _convert(value: Any, kind: Any, key: str) -> Any:
    """Check `value` (from TOML) against the annotated type `kind`; ints are accepted as floats."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UserError(f"{key} must be a list, got {value!r}")
        return tuple(_convert(v, typing.get_args(kind)[0], key) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise UserError(f"{key} must be of type {kind.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        full = prefix + key
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{prefix + close[0]}'?)" if close else ""
            raise UserError(f"unknown config key '{full}'{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise UserError(
                    f"'{full}' is a section; set its keys, e.g. {full}.{dataclasses.fields(kind)[0].name}"
                )
            values[key] = _build(kind, value, full + ".")
        else:
            values[key] = _convert(value, kind, full)
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> Config:
    """A validated Config from a plain dict (such as the "config" of a run.json)."""
    return _check(_build(Config, data, ""))


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], value); value is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set takes key=value, got '{text}'")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the TOML file at `path` (if any), then each `key=value` override."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except OSError as exc:
            raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"config file {path} is not UTF-8 text (TOML): {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    for text in overrides or []:
        keys, value = parse_override(text)
        node = data
        for part in keys[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"cannot set '{text}': '{part}' is not a section")
        node[keys[-1]] = value
    return _check(_build(Config, data, ""))
