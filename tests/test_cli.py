"""The `bcgc` command: one-line errors with exit status 2, plan and predict output (DESIGN.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bcgc_sim.entry.cli import main
from bcgc_sim.paper.numbers import PAPER_FIG3

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "configs" / "paper.toml"
FIG3_XBAR = list(PAPER_FIG3["bcgc-t"])
# the paper's file (M = 50, C = 1, mu = 1e-3, t0 = 50, all schemes) at a small size
SMALL = [
    "--config",
    str(PAPER_CONFIG),
    "--set",
    "predict.samples=2000",
    "--set",
    "cluster.workers=5",
    "--set",
    "model.coordinates=200",
    "--set",
    "model.samples=50",
    "--set",
    "model.cycles=1.0",
]


def _one_error_line(capsys):
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bcgc: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv, mentions",
    [
        (["plan", "--set", "cluster.workers=1"], "cluster.workers"),
        (["plan", "--set", "cluster.workers=0"], "cluster.workers"),
        (["plan", "--set", "model.coordinates=0"], "model.coordinates"),
        (["plan", "--set", "model.coordinates=-5"], "model.coordinates"),
        (["plan", "--set", "straggler.rate=0"], "straggler.rate"),
        (["plan", "--set", "straggler.rate=-0.001"], "straggler.rate"),
        (["plan", "--set", "straggler.rate=nan"], "straggler.rate"),
        (["plan", "--set", "straggler.shift=-1"], "straggler.shift"),
        (["plan", "--scheme", "nope"], "nope"),
        (["predict", "--set", 'predict.schemes=["bcgc-t", "nope"]'], "nope"),
        (["plan", "--set", "cluster.workers=abc"], "cluster.workers"),
        (["plan", "--set", "cluster.workers=2.5"], "cluster.workers"),
        (["plan", "--set", "straggler=1"], "straggler"),
        (["plan", "--set", "novalue"], "novalue"),
        (["plan", "--bogus"], "--bogus"),
        ([], "command"),
        (["plan", "--set", "cluster.workers=-1"], "cluster.workers (N) must be >= 2"),
        (["plan", "--set", "model.coordinates=1e19"], "model.coordinates (L) must be in"),
        (["predict", "--set", "predict.schemes=[]"], "predict.schemes is empty"),
        (["run", "--set", "run.schemes=[]"], "run.schemes is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, mentions, capsys):
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert mentions in line


def test_misspelt_key_suggests_the_right_one(capsys):
    assert main(["plan", "--set", "straggler.rat=1"]) == 2
    line = _one_error_line(capsys)
    assert "straggler.rat" in line
    assert "'straggler.rate'" in line


def test_malformed_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\nworkers = = 3\n")
    assert main(["plan", "--config", str(bad)]) == 2
    line = _one_error_line(capsys)
    assert "bad.toml" in line and "TOML" in line


def test_config_file_that_is_not_text(tmp_path, capsys):
    bad = tmp_path / "binary.toml"
    bad.write_bytes(b"\xff\xfe\x00[cluster]")
    assert main(["plan", "--config", str(bad)]) == 2
    assert "binary.toml is not UTF-8 text" in _one_error_line(capsys)


def test_validate_from_a_run_that_never_started(tmp_path, capsys):
    (tmp_path / "run.json").write_text('{"status": "failed: cannot write", "config": {}}')
    (tmp_path / "iterations.csv").write_text("")
    assert main(["validate", "--from", str(tmp_path)]) == 2
    assert "does not describe a run that started" in _one_error_line(capsys)


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "missing.toml"
    assert main(["predict", "--config", str(missing)]) == 2
    assert str(missing) in _one_error_line(capsys)


def test_bad_value_inside_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[straggler]\nrate = -2.0\n")
    assert main(["plan", "--config", str(cfg)]) == 2
    assert "straggler.rate" in _one_error_line(capsys)


def test_predict_unknown_scheme_flag(capsys):
    assert main(["predict", "--scheme", "nope", *SMALL]) == 2
    _one_error_line(capsys)


def _bcgc_command():
    script = Path(sys.executable).with_name("bcgc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bcgc_sim"]


def test_console_script_has_no_traceback():
    proc = subprocess.run(
        [*_bcgc_command(), "plan", "--set", "straggler.rat=1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bcgc: error:"), proc.stderr
    assert "'straggler.rate'" in lines[0]
    assert proc.stdout == ""


def test_plan_json_fig3(capsys):
    assert main(["plan", "--json", "--scheme", "bcgc-t", "--config", str(PAPER_CONFIG)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"scheme": "bcgc-t", "x": FIG3_XBAR}


def test_plan_text(capsys):
    assert main(["plan", "--scheme", "single-bcgc", "--config", str(PAPER_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "N = 20" in out and "L = 20000" in out
    assert "x = [" + "0, " * 19 + "20000]" in out


def test_predict_json_every_scheme(capsys):
    assert main(["predict", "--json", *SMALL]) == 0
    out = json.loads(capsys.readouterr().out)
    schemes = out["schemes"]
    assert set(schemes) == {
        "bcgc-opt",
        "bcgc-t",
        "bcgc-f",
        "single-bcgc",
        "tandon",
        "ferdinand-L",
        "ferdinand-L/2",
        "uncoded",
    }
    scale = 50 * 1.0 / 5  # M C / N
    for name, r in schemes.items():
        assert {"R", "expected_runtime", "stderr", "x"} <= set(r), name
        x = r["x"]
        assert len(x) == 5 and all(isinstance(v, int) and v >= 0 for v in x), (name, x)
        assert sum(x) == 200, (name, x)
        assert r["R"] > 0 and r["stderr"] > 0
        assert r["expected_runtime"] == pytest.approx(scale * r["R"], rel=1e-12)
        # 2000 samples: the Monte-Carlo value is within a few standard errors of the exact one
        assert abs(r["expected_runtime"] - r["expected_runtime_exact"]) <= 4 * r["stderr"], name
    # uncoded: E[tau] = (M C / N) L E[T_(N)] = 10 * 200 * (50 + H_5 / 1e-3)
    harmonic = 1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5
    assert schemes["uncoded"]["expected_runtime_exact"] == pytest.approx(
        10 * 200 * (50 + harmonic * 1e3), rel=1e-9
    )
    assert schemes["tandon"]["x"].count(200) == 1


def test_predict_json_failure_mixture_reports_unplannable_schemes(capsys):
    argv = [
        "predict",
        "--json",
        *SMALL,
        "--set",
        "straggler.distribution=failure-mixture",
        "--set",
        "straggler.failure_probability=0.1",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)["schemes"]
    assert "error" in out["bcgc-t"] and "error" in out["bcgc-opt"]
    # E[tau] is infinite with failures: JSON null, never "Infinity"
    assert out["uncoded"]["R"] is None and out["uncoded"]["expected_runtime_exact"] is None
