"""The public Python API (bcgc_sim.entry.api, reached as bcgc_sim.<name>): typed results with
the numbers of the spec, README's example run as written, a cheap `import bcgc_sim`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import bcgc_sim as bcgc
from bcgc_sim.errors import UserError
from bcgc_sim.paper.numbers import PAPER_FIG3

REPO = Path(__file__).resolve().parents[1]
TINY = {"cluster.workers": 4, "model.coordinates": 40, "model.samples": 80, "predict.samples": 2000}


def test_import_bcgc_sim_pulls_in_neither_master_nor_scipy_nor_pandas():
    code = (
        "import sys, bcgc_sim, workers.worker\n"
        "heavy = ('master', 'scipy', 'pandas', 'bcgc_sim.entry')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_load_config_takes_a_file_a_mapping_and_set_strings():
    cfg = bcgc.load_config(REPO / "configs" / "paper.toml", {"cluster.workers": 10})
    assert cfg.cluster.workers == 10 and cfg.model.coordinates == 20000
    cfg = bcgc.load_config(None, ["run.schemes=['uncoded']", "straggler.rate=2e-3"])
    assert cfg.run.schemes == ("uncoded",) and cfg.straggler.rate == 2e-3
    cfg = bcgc.load_config(None, {"run.schemes": ["bcgc-opt", "tandon"], "run.check": False})
    assert cfg.run.schemes == ("bcgc-opt", "tandon") and cfg.run.check is False
    with pytest.raises(UserError, match="did you mean 'cluster.workers'"):
        bcgc.load_config(None, {"cluster.worker": 4})


def test_plan_gives_the_papers_fig3_partition():
    planned = bcgc.plan(bcgc.load_config(REPO / "configs" / "paper.toml"), "bcgc-t")
    assert planned.x == tuple(PAPER_FIG3["bcgc-t"])
    assert planned.deadline is None and planned.completion_probability is None
    assert planned.assignment is None and planned.to_json()["x"] == list(PAPER_FIG3["bcgc-t"])


def test_plan_of_partial_gc_shows_cyclic_assignment_and_latin_ordering():
    cfg = bcgc.load_config(None, {**TINY, "partial.storage": 2})
    planned = bcgc.plan(cfg, "partial-gc")
    assert planned.x is None
    # cyclic storage: worker j holds chunks j and j+1 (mod 4)
    assert planned.assignment == ((0, 1), (1, 2), (2, 3), (0, 3))
    for stored, order in zip(planned.assignment, planned.ordering, strict=True):
        assert sorted(order) == list(stored)
    # Latin: each chunk is processed first by exactly one of its holders
    assert sorted(order[0] for order in planned.ordering) == [0, 1, 2, 3]
    out = planned.to_json()
    assert out["storage"] == 2 and out["assignment"] == [[0, 1], [1, 2], [2, 3], [0, 3]]


def test_predict_table_holds_the_numbers_of_each_prediction():
    cfg = bcgc.load_config(None, {**TINY, "predict.deadline": 1.0e6})
    result = bcgc.predict(cfg, ["uncoded", "bcgc-opt"])
    table = result.table
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["uncoded", "bcgc-opt"]
    # uncoded: E[tau] = (M C / N) L E[T_(N)] = 20 * 40 * (50 + H_4 / 1e-3) exactly
    harmonic = 1 + 1 / 2 + 1 / 3 + 1 / 4
    exact = table.loc["uncoded", "expected_runtime_exact"]
    assert exact == pytest.approx(20 * 40 * (50 + harmonic * 1e3), rel=1e-9)
    for name in table.index:
        p = result[name]
        assert table.loc[name, "expected_runtime"] == p.expected_runtime.mean
        assert table.loc[name, "completion_probability"] == p.completion_probability
        assert 0 <= p.completion_probability <= 1
    assert table.loc["bcgc-opt", "expected_runtime"] < table.loc["uncoded", "expected_runtime"]


def test_predict_is_the_api_function_and_the_library_module_is_prediction():
    from bcgc_sim.prediction import evaluation_samples  # the library module

    assert callable(bcgc.predict) and callable(evaluation_samples)
    cfg = bcgc.load_config(None, TINY)
    assert list(bcgc.predict(cfg, ["uncoded"]).table.index) == ["uncoded"]


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_readme_example_runs_and_writes_only_into_its_output(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo.toml", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)  # noqa: S102
    run = namespace["run"]
    assert run.status == "completed" and run.config.cluster.workers == 4
    assert list(run.summary.index) == list(run.config.run.schemes)
    assert (run.iterations.groupby("scheme").size() == 5).all()
    ratios = run.summary["ratio"]
    assert ((ratios > 0.8) & (ratios < 2.0)).all(), ratios
    assert run.summary["gradient_max_rel_error"].max() < 1e-8
    assert set(run.messages["status"]) <= {"used", "late", "duplicate", "stale"}
    # nothing outside the output folder: the data set went inside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "results"]
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["api-demo"]
    assert (tmp_path / "results" / "api-demo" / "data").is_dir()
    assert "measured_mean_s" in capsys.readouterr().out
