"""`bcgc validate`: per-scheme comparison of measurement and prediction, with figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bcgc_sim.cli import main
from bcgc_sim.stragglers import monte_carlo_cycle_times
from bcgc_sim.validation import load_run, model_cdf

pytestmark = pytest.mark.slow

SMALL = [
    "--set", "cluster.workers=4", "--set", "model.samples=120", "--set", "model.coordinates=40",
    "--set", "run.iterations=12", "--set", "run.iteration_seconds=0.03",
    "--set", "run.schemes=['bcgc-t', 'tandon', 'uncoded']",
]  # fmt: skip


def test_validate_runs_compares_and_draws(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["validate", "--json", "--output", str(folder), *SMALL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["schemes"]) == {"bcgc-t", "tandon", "uncoded"}
    for values in out["schemes"].values():
        assert {"measured_mean_s", "predicted_mean_s", "ratio", "ks_distance"} <= set(values)
        assert 0.95 < values["ratio"] < 1.5
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
