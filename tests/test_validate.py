"""`bcgc validate`: per-scheme comparison of measurement and prediction, with figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bcgc_sim.config import load_config
from bcgc_sim.entry.cli import main
from bcgc_sim.model.stragglers import monte_carlo_cycle_times
from bcgc_sim.schemes import build_plan
from bcgc_sim.validation import (
    RunRecord,
    deadline_check,
    load_run,
    model_cdf,
    validate_run,
    wilson_interval,
)

SMALL = [
    "--set", "cluster.workers=4", "--set", "model.samples=120", "--set", "model.coordinates=40",
    "--set", "run.iterations=12", "--set", "run.iteration_seconds=0.03",
    "--set", "run.schemes=['bcgc-t', 'tandon', 'uncoded']",
]  # fmt: skip


@pytest.mark.slow
def test_validate_runs_compares_and_draws(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["validate", "--json", "--output", str(folder), *SMALL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["schemes"]) == {"bcgc-t", "tandon", "uncoded"}
    for values in out["schemes"].values():
        assert {"measured_mean_s", "predicted_mean_s", "ratio", "ks_distance"} <= set(values)
        assert 0.95 < values["ratio"] < 2.0  # about 1.02; a stalled VM adds to 12 short iterations
        assert 0 <= values["ks_distance"] <= 1
    for name in (
        "validate-per-iteration.png",
        "validate-cdf.png",
        "timeline-bcgc-t.png",
        "timeline-tandon.png",
    ):
        assert (folder / name).stat().st_size > 10_000
    # the model CDF used for the KS distance is the runtime distribution of the plan
    run = load_run(folder)
    plan = run.plans["bcgc-t"]
    samples = monte_carlo_cycle_times(run.model.distribution, 3, 40_000, run.model.n_workers)
    seconds = plan.raw_runtime(samples) * run.seconds_per_raw_unit()
    for t in np.quantile(seconds, [0.1, 0.5, 0.9]):
        assert model_cdf(run, plan)(t)[0] == pytest.approx(np.mean(seconds <= t), abs=0.01)
    # an existing folder can be validated again without running anything
    assert main(["validate", "--from", str(folder)]) == 0
    assert "KS" in capsys.readouterr().out


def test_validate_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["validate", "--from", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


# --- the deadline: measured fraction by T, its Wilson interval, the model's P(tau <= T) ----------


@pytest.mark.parametrize(
    ("hits", "n", "lo", "hi"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (1, 40, 0.0044, 0.1288),
    ],
)
def test_wilson_interval_known_values(hits, n, lo, hi):
    interval = wilson_interval(hits, n)
    assert interval == pytest.approx((lo, hi), abs=1e-4)
    assert interval[0] <= hits / n <= interval[1]
    # the ends solve the score equation (p_hat - p)^2 = z^2 p (1 - p) / n, z = 1.96
    z = 1.959963984540054
    for end in interval:
        assert (hits / n - end) ** 2 == pytest.approx(z * z * end * (1 - end) / n, abs=1e-12)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


DEADLINE_OVERRIDES = ["cluster.workers=4", "model.samples=120", "model.coordinates=40"]


def _median_deadline(overrides: list[str], scheme: str = "bcgc-opt") -> float:
    """T (model time units) near the median runtime of `scheme`: P(tau <= T) close to 1/2."""
    config = load_config(None, overrides)
    model = config.system_model()
    plan = build_plan(scheme, model, config.scheme_options())
    samples = monte_carlo_cycle_times(model.distribution, 7, 20_000, model.n_workers)
    return float(np.median(plan.raw_runtime(samples))) * model.scale


def test_deadline_check_of_an_ideal_testbed_matches_the_model():
    """No processes: iterations whose measured runtime is exactly the predicted one, for cycle
    times drawn from the model. The fractions then estimate P(tau <= T) itself."""
    deadline = _median_deadline(DEADLINE_OVERRIDES)
    config = load_config(None, [*DEADLINE_OVERRIDES, f"predict.deadline={deadline!r}"])
    model = config.system_model()
    plans = {n: build_plan(n, model, config.scheme_options()) for n in ("bcgc-cdf-opt", "bcgc-opt")}
    time_scale = 2e-8  # seconds per model time unit
    samples = monte_carlo_cycle_times(model.distribution, 11, 3_000, model.n_workers)
    iterations = []
    for name, plan in plans.items():
        seconds = plan.raw_runtime(samples) * model.scale * time_scale
        iterations += [
            {"scheme": name, "measured_s": str(v), "predicted_s": str(v)} for v in seconds
        ]
    run = RunRecord(Path("."), {}, config, model, plans, time_scale, iterations)
    for r in validate_run(run, deadline):
        check = r.deadline
        assert check.deadline_s == pytest.approx(deadline * time_scale)
        plan = plans[r.scheme]
        assert check.completion_probability == pytest.approx(
            model_cdf(run, plan)(check.deadline_s)[0]
        )
        assert check.measured_fraction == check.predicted_fraction
        assert check.measured_fraction == pytest.approx(check.completion_probability, abs=0.03)
        assert check.consistent
    # natural stragglers: nothing predicted, no predicted fraction
    nan = np.full(5, np.nan)
    check = deadline_check(run, plans["bcgc-opt"], np.ones(5), nan, 1.0 / time_scale)
    assert check.predicted_fraction is None and check.hits == 5


def test_validate_rejects_a_bad_deadline_and_deadline_schemes_without_one(tmp_path, capsys):
    assert main(["validate", "--deadline", "-1", *SMALL]) == 2
    assert "--deadline must be a positive number" in capsys.readouterr().err
    schemes = "run.schemes=['bcgc-cdf-opt', 'bcgc-opt']"
    argv = ["validate", "--set", f"run.output={tmp_path}", "--set", schemes, *SMALL[:6]]
    assert main(argv) == 2  # refused while planning, before any worker starts
    err = capsys.readouterr().err
    assert "bcgc-cdf-opt maximises P(tau <= T)" in err and "'bcgc validate'" in err


@pytest.mark.slow
def test_validate_deadline_measured_fraction_beside_the_model(tmp_path, capsys):
    """The testbed's honesty check at a deadline: over 40 iterations the model's exact
    P(tau <= T) lies inside the 95% Wilson interval of the measured fraction."""
    deadline = _median_deadline(DEADLINE_OVERRIDES)
    folder = tmp_path / "run"
    argv = [
        "validate", "--json", "--deadline", repr(deadline), "--output", str(folder),
        *(a for o in DEADLINE_OVERRIDES for a in ("--set", o)),
        "--set", "run.iterations=40", "--set", "run.iteration_seconds=0.03",
        "--set", "run.schemes=['bcgc-cdf-opt', 'bcgc-opt']",
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    run = load_run(folder)
    assert run.config.predict.deadline == pytest.approx(deadline)  # the plans used it
    assert set(out["schemes"]) == {"bcgc-cdf-opt", "bcgc-opt"}
    for name, values in out["schemes"].items():
        lo, hi = values["measured_ci"]
        assert values["deadline_s"] == pytest.approx(deadline * run.time_scale)
        for key in ("measured_fraction", "predicted_fraction", "completion_probability"):
            assert 0 <= values[key] <= 1
        assert lo <= values["measured_fraction"] <= hi
        assert values["completion_probability"] == pytest.approx(
            model_cdf(run, run.plans[name])(values["deadline_s"])[0]
        )
        assert 0.25 < values["completion_probability"] < 0.75  # a deadline near the median
        assert values["consistent"] is (lo <= values["completion_probability"] <= hi)
        assert values["consistent"], (name, values)
    assert (folder / "validate-cdf.png").stat().st_size > 10_000
    # again from the folder: the deadline comes from the run's config, or from --deadline
    assert main(["validate", "--json", "--from", str(folder)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["schemes"]["bcgc-opt"]["deadline_s"] == out["schemes"]["bcgc-opt"]["deadline_s"]
    assert main(["validate", "--from", str(folder), "--deadline", repr(2 * deadline)]) == 0
    table = capsys.readouterr().out
    assert "95% Wilson CI" in table and f"deadline T = {2 * deadline:g}" in table
