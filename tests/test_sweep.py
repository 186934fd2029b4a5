"""`bcgc sweep`: points are appended as they finish, an interrupted sweep resumes, impossible
grids are refused before any work."""

from __future__ import annotations

import pytest

from bcgc_sim.config import load_config
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
    assert {r["point"] for r in first} == {"0"} and len(first) == 2

    seen = []
    rows = run_sweep(
        spec([3, 4]), tmp_path, lambda index, value, state: seen.append((index, state))
    )
    assert (0, "already done") in seen and (1, "running") in seen
    assert [r["point"] for r in rows] == ["0", "0", "1", "1"]
    assert rows[:2] == first  # finished work is kept as it was
    for r in rows:
        assert 0.8 < float(r["ratio"]) < 2.0
    measured, predicted = reductions(rows, "measured_mean_s"), reductions(rows, "predicted_mean_s")
    assert set(measured) == set(predicted) == {"3", "4"}


def test_a_grid_the_machine_cannot_run_is_refused_up_front(tmp_path):
    with pytest.raises(UserError, match=r"sweep point cluster.workers = 1000000 cannot run here"):
        run_sweep(spec([3, 1_000_000]), tmp_path)
    assert not (tmp_path / "sweep.csv").exists() and not (tmp_path / "sweep.json").exists()


def test_a_folder_holding_another_sweep_is_not_mixed_up(tmp_path):
    run_sweep(spec([3]), tmp_path)
    with pytest.raises(UserError, match="holds a different sweep"):
        run_sweep(spec([3, 5]), tmp_path)
