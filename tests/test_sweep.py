"""`bcgc sweep`: points are appended as they finish, an interrupted sweep resumes, impossible
grids are refused before any work, new values extend a sweep, another sweep is never mixed in."""

from __future__ import annotations

import json

import pytest

from bcgc_sim.config import load_config
from bcgc_sim.entry.cli import main
from bcgc_sim.errors import UserError
from master.sweep import SweepSpec, read_rows, reductions, run_sweep

pytestmark = pytest.mark.slow

OVERRIDES = (
    "model.samples=120", "model.coordinates=40", "run.iterations=2", "run.iteration_seconds=0.02",
    "run.schemes=['bcgc-opt', 'single-bcgc']", "run.check=true",
)  # fmt: skip


def spec(values):
    return SweepSpec(
        "cluster.workers", tuple(values), load_config(None, list(OVERRIDES)), OVERRIDES, None
    )


def test_an_interrupted_sweep_resumes_without_redoing_finished_points(tmp_path):
    def stop_at_second_point(index, value, state):
        if index == 1 and state == "running":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec([3, 4]), tmp_path, stop_at_second_point)
    first = read_rows(tmp_path / "sweep.csv")
    assert {r["point"] for r in first} == {0} and len(first) == 2

    seen = []
    rows = run_sweep(
        spec([3, 4]), tmp_path, lambda index, value, state: seen.append((index, state))
    )
    assert (0, "already done") in seen and (1, "running") in seen
    assert [r["point"] for r in rows] == [0, 0, 1, 1]
    assert rows[:2] == first  # finished work is kept as it was
    for r in rows:
        assert 0.8 < r["ratio"] < 2.0
    measured, predicted = reductions(rows, "measured_mean_s"), reductions(rows, "predicted_mean_s")
    assert set(measured) == set(predicted) == {3, 4}


def test_a_grid_the_machine_cannot_run_is_refused_up_front(tmp_path):
    with pytest.raises(UserError, match=r"sweep point cluster.workers = 1000000 cannot run here"):
        run_sweep(spec([3, 1_000_000]), tmp_path)
    assert not (tmp_path / "sweep.csv").exists() and not (tmp_path / "sweep.json").exists()


def test_a_sweep_is_extended_by_new_values_and_never_mixed_with_another(tmp_path, capsys):
    folder = tmp_path / "sweep"
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    assert main(["sweep", "--json", "--values", "3", "-o", str(folder), *sets]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [(r["point"], r["value"]) for r in first["rows"]] == [(0, 3), (0, 3)]
    for r in first["rows"]:  # numbers as numbers
        assert isinstance(r["iterations"], int) and isinstance(r["measured_mean_s"], float)
    assert first["reductions"][0]["value"] == 3
    assert isinstance(first["reductions"][0]["measured_pct"], float)

    # more values: the old point is kept as it was, the new ones run (3 is not run again)
    assert main(["sweep", "--json", "--values", "3", "4", "-o", str(folder), *sets]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["rows"][:2] == first["rows"]
    assert [(r["point"], r["value"]) for r in second["rows"][2:]] == [(1, 4), (1, 4)]
    assert json.loads((folder / "sweep.json").read_text())["values"] == [3, 4]
    assert [r["point"] for r in read_rows(folder / "sweep.csv")] == [0, 0, 1, 1]

    # another parameter or another base config: one line, nothing run
    for argv, says in (
        (["--param", "straggler.rate", "--values", "0.002"], "holds a sweep of cluster.workers"),
        (["--values", "5", "--set", "seed=2"], "another base config (seed = 1 there, 2 here)"),
    ):
        assert main(["sweep", "-o", str(folder), *sets, *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    assert json.loads((folder / "sweep.json").read_text())["values"] == [3, 4]
