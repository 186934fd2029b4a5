"""The public Python API: `import bcgc_sim as bcgc`, then load_config, plan, predict, run,
load_run (each also reachable as bcgc_sim.<name>).

    cfg = bcgc.load_config(None, {"cluster.workers": 4})   # defaults, a TOML file, overrides
    bcgc.plan(cfg, "bcgc-opt").x                           # the block partition
    bcgc.predict(cfg).table                                # one row per scheme (DataFrame)
    run = bcgc.run(cfg, output="results/demo")             # real processes; a Run
    run.iterations                                         # iterations.csv as a DataFrame

Results are frozen dataclasses; tables are pandas DataFrames. Times are in model time units
(predictions) or seconds (columns ending in _s). Errors a user can cause raise UserError with
the same one-line message the `bcgc` command prints. Heavy modules (pandas, scipy, master) are
imported by the functions that need them, so that `import bcgc_sim` and the `bcgc` command stay
cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ..config import Config
    from ..model.plans import Plan
    from ..prediction import Prediction
    from ..validation import RunRecord

Overrides = Sequence[str] | Mapping[str, Any] | None


def load_config(path: str | Path | None = None, overrides: Overrides = None) -> Config:
    """Built-in defaults, then the TOML file at `path` (if any), then `overrides`: strings
    "key=value" as `--set` takes them, or a mapping {"cluster.workers": 4, ...}."""
    from ..config import load_config as load

    if isinstance(overrides, Mapping):
        overrides = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return load(path, list(overrides or []))


def check_model_memory(config: Config, schemes: list[str], samples: int) -> None:
    """Refuse before allocating: planning and evaluating `schemes` on `samples` draws."""
    from ..prediction import monte_carlo_need
    from ..problems import check_memory

    n = config.cluster.workers
    need = monte_carlo_need(n, samples, schemes, config.partial.parts)
    check_memory([need], f"planning {', '.join(schemes)} for N = {n}")


@dataclass(frozen=True)
class SchemePlan:
    """One scheme's plan under a config. `x` is the block partition (x_0..x_{N-1}, coordinates
    per redundancy level) of the block schemes, None for partial-gc (see `assignment` and
    `ordering`). P(tau <= T) is given when the config has a deadline T (model time units)."""

    scheme: str
    plan: Plan
    description: str
    x: tuple[int, ...] | None
    deadline: float | None
    completion_probability: float | None

    @property
    def assignment(self) -> tuple[tuple[int, ...], ...] | None:
        """partial-gc: the chunks each worker stores (worker j -> its chunks, ascending)."""
        from ..partial.plan import PartialPlan

        if not isinstance(self.plan, PartialPlan):
            return None
        stored = self.plan.assignment
        return tuple(tuple(int(i) for i in stored.chunks(j)) for j in range(stored.n_workers))

    @property
    def ordering(self) -> tuple[tuple[int, ...], ...] | None:
        """partial-gc: the chunks of each worker in the order it processes them."""
        from ..partial.plan import PartialPlan

        return self.plan.ordering if isinstance(self.plan, PartialPlan) else None

    def to_json(self) -> dict:
        """Plain JSON: numbers as numbers; partial-gc with its storage, assignment, ordering."""
        out: dict[str, Any] = {"scheme": self.scheme, "description": self.description}
        if self.x is not None:
            out["x"] = list(self.x)
        else:
            plan = self.plan
            out |= {
                "storage": plan.storage,
                "parts": plan.parts,
                "ordering_name": plan.ordering_name,
            }
            out |= {"assignment": [list(a) for a in self.assignment]}
            out |= {"ordering": [list(o) for o in self.ordering]}
        if self.deadline is not None:
            out |= {
                "deadline": self.deadline,
                "completion_probability": self.completion_probability,
            }
        return out


def plan(config: Config, scheme: str = "bcgc-opt") -> SchemePlan:
    """Plan `scheme` under `config` (its model, straggler law, optimiser and deadline)."""
    from ..partial.plan import CDF_SAMPLES
    from ..schemes import build_plan, check_scheme_names

    check_scheme_names([scheme])
    model = config.system_model()
    check_model_memory(config, [scheme], max(config.optimize.tuning_samples, CDF_SAMPLES))
    built = build_plan(scheme, model, config.scheme_options())
    return describe_plan(config, scheme, built)


def describe_plan(config: Config, scheme: str, built: Plan) -> SchemePlan:
    """The SchemePlan of an already built plan (P(tau <= T) computed if there is a deadline)."""
    from ..partial.plan import PartialPlan
    from ..prediction import Prediction

    model = config.system_model()
    x = None
    if not isinstance(built, PartialPlan):
        x = tuple(Prediction(scheme, built, None, None, None).partition())
    deadline = config.predict.deadline or None
    probability = None
    if deadline is not None:
        probability = built.completion_probability(deadline / model.scale, model.distribution)
    return SchemePlan(scheme, built, built.describe(), x, deadline, probability)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Predicted runtimes of several schemes on the same draws of T (model time units).

    `table` has one row per scheme (index: scheme) with R, expected_runtime, stderr,
    expected_runtime_exact, completion_probability (with a deadline) and error (why a scheme
    has no plan under this model); `results` holds the full Prediction of each."""

    results: tuple[Prediction, ...]
    samples: int
    deadline: float | None
    table: pd.DataFrame

    def __getitem__(self, scheme: str) -> Prediction:
        for r in self.results:
            if r.scheme == scheme:
                return r
        raise KeyError(scheme)


def predict(config: Config, schemes: Sequence[str] | None = None) -> Predictions:
    """E[tau] (Monte Carlo and exact) of `schemes` (default: predict.schemes, less the deadline
    schemes when the config has no deadline), on config.predict.samples common draws."""
    import pandas as pd

    from ..partial.plan import CDF_SAMPLES
    from ..prediction import predict as predict_schemes
    from ..schemes import check_scheme_names, needs_deadline

    options = config.scheme_options()
    if schemes is None:
        names = [s for s in config.predict.schemes if options.deadline or not needs_deadline(s)]
    else:
        names = list(schemes)
    check_scheme_names(names)
    p = config.predict
    check_model_memory(config, names, max(p.samples, config.optimize.tuning_samples, CDF_SAMPLES))
    results = predict_schemes(config.system_model(), names, options, p.samples, p.exact)
    rows = [_prediction_row(r) for r in results]
    table = pd.DataFrame(rows).set_index("scheme")
    return Predictions(tuple(results), p.samples, options.deadline, table)


def _prediction_row(r: Prediction) -> dict:
    if r.plan is None:
        return {"scheme": r.scheme, "error": r.error}
    return {
        "scheme": r.scheme,
        "R": r.raw.mean,
        "expected_runtime": r.expected_runtime.mean,
        "stderr": r.expected_runtime.stderr,
        "expected_runtime_exact": r.exact_expected_runtime,
        "completion_probability": r.completion_probability,
        "error": "",
    }


@dataclass(frozen=True, eq=False)
class Run:
    """A run folder read back. `summary`: one row per scheme (measured and predicted mean
    seconds, their ratio, final loss, ...); `iterations`, `messages`, `blocks`: the folder's
    CSV tables (see bcgc_sim/results.py for their columns); `partial`: partial.csv or None.
    `record` is what `bcgc validate` and the plots read (bcgc_sim.validation.RunRecord)."""

    folder: Path
    status: str
    config: Config
    time_scale: float  # seconds per model time unit
    summary: pd.DataFrame
    iterations: pd.DataFrame
    messages: pd.DataFrame
    blocks: pd.DataFrame
    partial: pd.DataFrame | None
    record: RunRecord


def load_run(folder: str | Path) -> Run:
    """A finished (or interrupted) run folder, as written by `bcgc run` or run()."""
    import pandas as pd

    from ..validation import load_run as load_record

    record = load_record(folder)
    folder = record.folder

    def table(name: str) -> pd.DataFrame:
        return pd.read_csv(folder / name) if (folder / name).exists() else pd.DataFrame()

    summaries = record.meta.get("summaries", {})
    summary = pd.DataFrame([{"scheme": k, **v} for k, v in summaries.items()])
    if not summary.empty:
        summary = summary.set_index("scheme")
    partial = table("partial.csv") if (folder / "partial.csv").exists() else None
    return Run(
        folder, str(record.meta.get("status", "?")), record.config, record.time_scale, summary,
        table("iterations.csv"), table("messages.csv"), table("blocks.csv"), partial, record,
    )  # fmt: skip


def run(
    config: Config, output: str | Path | None = None, log: Callable[[str], None] | None = None
) -> Run:
    """Run config.run.schemes on a local cluster of real worker processes and read the folder
    back. With `output` everything goes into that folder, the data set too (unless
    problem.data_dir is set); without, a new folder inside run.output. `log` receives one line
    per scheme (default: silent)."""
    from master.runner import output_folder, run_testbed

    if output is None:
        folder = output_folder(config)
    else:
        folder = Path(output)
        config = config_for_output(config, folder)
    run_testbed(config, folder, log=log or (lambda text: None))
    return load_run(folder)


def config_for_output(config: Config, folder: Path) -> Config:
    """`config` with its data set kept inside the run's own `folder` (unless problem.data_dir
    names a folder), so that a run given an output folder writes nothing elsewhere."""
    if config.problem.data_dir:
        return config
    return replace(config, problem=replace(config.problem, data_dir=str(folder / "data")))
