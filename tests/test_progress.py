"""`bcgc predict` / `bcgc plan`: progress (the library reports, the entry layer draws on
stderr) and the refusal, before starting, of what cannot finish."""

import io
import json
import time

import numpy as np
import pytest
from test_cli import SMALL

from bcgc_sim import prediction as predict_module
from bcgc_sim.config import load_config
from bcgc_sim.entry import progress as progress_module
from bcgc_sim.entry.cli import main
from bcgc_sim.entry.progress import ProgressLine
from bcgc_sim.errors import UserError
from bcgc_sim.prediction import TimeNeed, check_time, evaluation_samples, predict, time_needs
from bcgc_sim.schemes import PlanContext, build_plan


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_piped_progress_is_a_plain_line_every_interval():
    out = io.StringIO()
    with ProgressLine(out, "bcgc predict", delay=0.0, interval=0.05) as line:
        line("bcgc-opt (1/2): optimiser", 150, 300)
        time.sleep(0.3)
        line("tandon (2/2): R on 2000 draws", 1000, 2000)
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4
    assert all(text.startswith("bcgc predict: ") for text in lines)
    assert "bcgc predict: bcgc-opt (1/2): optimiser 50% (0 s)" in lines
    assert lines[-1].startswith("bcgc predict: tandon (2/2): R on 2000 draws 50% (")
    assert "\r" not in out.getvalue()
    written = out.getvalue()
    time.sleep(0.15)
    assert out.getvalue() == written  # nothing after the end


def test_terminal_progress_is_one_line_redrawn_then_erased():
    out = Terminal()
    with ProgressLine(out, "bcgc plan", delay=0.0) as line:
        line("rounding (R2)", 3, 7)
        time.sleep(0.5)
    text = out.getvalue()
    assert "\n" not in text
    assert text.count("\rbcgc plan: rounding (R2) 3/7 (0 s)\x1b[K") >= 2
    assert text.endswith("\r\x1b[K")


def test_quick_work_shows_nothing():
    out = Terminal()
    with ProgressLine(out, delay=10.0) as line:
        line("anything", 1, 2)
    assert out.getvalue() == ""


def test_predict_reports_every_scheme_and_chunks_give_the_same_values(monkeypatch):
    config = load_config(None, ["cluster.workers=6", "predict.samples=2500"])
    model, options = config.system_model(), config.scheme_options()
    names = ["bcgc-opt", "tandon", "partial-gc"]
    whole = predict(model, names, options, 2500, True)
    heard = []
    monkeypatch.setattr(predict_module, "EVALUATION_ROWS", 1000)
    parts = predict(model, names, options, 2500, True, lambda *a: heard.append(a))
    assert [p.raw for p in parts] == [p.raw for p in whole]
    samples = evaluation_samples(model, options.seed, 2500)
    for p in parts:
        assert p.raw.mean == np.mean(p.plan.raw_runtime(samples))
    tasks = {task for task, _, _ in heard}
    assert "bcgc-opt (1/3): optimiser" in tasks
    assert "bcgc-opt (1/3): rounding (R2)" in tasks
    assert "tandon (2/3): exact E[tau]" in tasks
    counts = [(d, t) for task, d, t in heard if task == "partial-gc (3/3): R on 2500 draws"]
    assert counts == [(0, 2500), (1000, 2500), (2000, 2500)]
    assert ("bcgc-opt (1/3): optimiser", 299, 300) in heard
    assert not any("storage of bcgc-opt" in task for task in tasks)  # bcgc-opt's plan is taken
    alone = []
    predict(model, ["partial-gc"], options, 2500, False, lambda *a: alone.append(a))
    assert alone[0] == ("partial-gc (1/1): storage of bcgc-opt: optimiser", 0, 300)


def test_predict_json_stays_clean_with_progress_on(monkeypatch, capsys):
    """Progress goes to stderr only: stdout is the JSON document."""
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)
    monkeypatch.setattr(progress_module, "INTERVAL_S", 0.001)
    assert main(["predict", "--json", *SMALL]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)["schemes"]) >= {"bcgc-opt", "uncoded"}
    lines = captured.err.splitlines()
    assert lines and all(text.startswith("bcgc predict: ") for text in lines)
    assert any("bcgc-opt (1/8): " in text for text in lines)


def test_cdf_opt_reports_its_steps_in_order():
    config = load_config(None, ["cluster.workers=8", "predict.deadline=4e7"])
    heard = []
    plan = build_plan(
        "bcgc-cdf-opt",
        config.system_model(),
        config.scheme_options(),
        PlanContext(progress=lambda *a: heard.append(a)),
    )
    assert plan.x == build_plan("bcgc-cdf-opt", config.system_model(), config.scheme_options()).x
    assert {task for task, _, _ in heard} == {"maximising P(tau <= T)"}
    done = [d for _, d, _ in heard]
    assert done == sorted(done) and 0 < done[-1] <= heard[-1][2]


def test_check_time_names_the_largest_part():
    needs = [TimeNeed("a", 100.0, "fix a"), TimeNeed("b", 900.0, "fix b")]
    check_time(needs, "predicting", 0)  # no limit
    check_time(needs, "predicting", 1000.0)
    with pytest.raises(UserError) as refused:
        check_time(needs, "predicting", 600.0)
    assert str(refused.value) == (
        "predicting would take about 17 minutes (estimated), more than predict.time_limit = "
        "600 s; the largest part is b (about 15 minutes): fix b, or raise predict.time_limit "
        "(0 = no limit)"
    )


def test_predict_refuses_what_cannot_finish_before_starting(capsys):
    """N = 2000: the exact E[tau] alone is hours (N^3 per deadline); one line, exit 2."""
    argv = ["predict", "--set", "cluster.workers=2000", "--set", "model.samples=2000"]
    assert main([*argv, "--set", "predict.samples=1000"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("bcgc: error: predicting 10 schemes for N = 2000 would take about ")
    assert "the exact E[tau] of 8 schemes" in err and "set predict.exact = false" in err


def test_time_needs_grow_with_what_is_asked():
    config = load_config(None, ["cluster.workers=100", "predict.deadline=6e7"])
    model, options = config.system_model(), config.scheme_options()

    def total(names, samples=100_000, exact=True):
        return sum(n.seconds for n in time_needs(model, names, options, samples, exact))

    assert total(["bcgc-t"]) > total(["bcgc-t"], exact=False) > total(["bcgc-t"], 1000, False)
    assert total(["bcgc-t", "bcgc-opt"]) > total(["bcgc-t"])
    assert total(["partial-gc"], exact=False) > total(["bcgc-opt"], exact=False)
    assert total(["bcgc-cdf-opt"]) > total(["bcgc-cdf-lg"])
