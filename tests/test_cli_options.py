"""The `bcgc` command's face: --version, every command's help (description, defaults, example),
`bcgc config`, --check/--no-check, and --json outputs whose numbers are numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bcgc_sim import __version__
from bcgc_sim.config import Config, load_config
from bcgc_sim.config_keys import MEANINGS, flatten
from bcgc_sim.entry.cli import _config, build_parser, main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "cluster.workers=4", "--set", "model.coordinates=40", "--set", "model.samples=80"]


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"bcgc {__version__}"


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return {name: p for name, p in action.choices.items() if name != "worker"}


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_command_help_has_a_description_defaults_and_an_example(name):
    parser = _subcommands()[name]
    text = parser.format_help()
    assert parser.description and len(parser.description) > 40, name
    assert "example:\n  bcgc " + name in text, name
    for action in parser._actions:
        default = action.default
        if action.option_strings and default not in (None, False, [], "==SUPPRESS=="):
            assert f"{default}" in text, (name, action.dest, default)


def test_help_shows_the_default_of_an_option():
    text = _subcommands()["plan"].format_help()
    assert "(default: bcgc-opt)" in " ".join(text.split())


def test_config_lists_every_key_with_meaning_default_and_value(capsys):
    keys = set(flatten(Config()))
    assert keys == set(MEANINGS), keys ^ set(MEANINGS)  # one meaning per key, no stale ones
    assert main(["config", "--json", "--set", "cluster.workers=4", "--set", "run.check=false"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["keys"]}
    assert set(rows) == keys and all(r["meaning"] for r in rows.values())
    assert rows["cluster.workers"] | {"meaning": ""} == {
        "key": "cluster.workers", "meaning": "", "default": 8, "value": 4,
    }  # fmt: skip
    assert rows["run.check"]["value"] is False and rows["run.check"]["default"] is True
    assert rows["straggler.rate"]["default"] == 1e-3
    assert rows["run.schemes"]["default"] == list(Config().run.schemes)

    assert main(["config", "--config", str(REPO / "configs" / "paper.toml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(keys) + 2  # header, one line per key, the footnote
    workers = next(line for line in lines if line.startswith("cluster.workers "))
    assert workers.split()[:4] == ["cluster.workers", "20", "*", "8"]


@pytest.mark.parametrize(
    ("argv", "check"), [([], True), (["--check"], True), (["--no-check"], False)]
)
def test_check_and_no_check_set_run_check(argv, check):
    args = build_parser().parse_args(["run", "--set", "run.check=false", *argv])
    expected = False if not argv else check  # no flag: the config's value
    assert _config(args).run.check is expected


def test_plan_json_gives_the_exact_completion_probability(capsys):
    argv = ["plan", "--json", "--scheme", "uncoded", *TINY, "--deadline", "1.2e6"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deadline"] == 1.2e6 and out["x"] == [40, 0, 0, 0]
    # uncoded: tau = (M C / N) L T_(N) with T - 50 ~ Exp(1e-3), N = 4 iid:
    # P(tau <= T) = (1 - exp(-mu (T / (20 * 40) - 50)))^4
    import math

    expected = (1 - math.exp(-1e-3 * (1.2e6 / 800 - 50))) ** 4
    assert out["completion_probability"] == pytest.approx(expected, rel=1e-9)


def test_plan_json_of_partial_gc_has_assignment_and_ordering(capsys):
    argv = ["plan", "--json", "--scheme", "partial-gc", *TINY, "--set", "partial.storage=3"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert "x" not in out and out["storage"] == 3 and out["parts"] == 1
    assert out["assignment"] == [[0, 1, 2], [1, 2, 3], [0, 2, 3], [0, 1, 3]]
    assert [sorted(o) for o in out["ordering"]] == out["assignment"]
    assert main(["plan", "--scheme", "partial-gc", *TINY, "--set", "partial.storage=3"]) == 0
    text = capsys.readouterr().out
    assert "stores chunks" in text and "     3  0 1 3" in text


def _numbers_are_numbers(value, path="") -> None:
    """No number hidden in a string anywhere in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            _numbers_are_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _numbers_are_numbers(v, f"{path}[{i}]")
    elif isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return
        raise AssertionError(f"{path} is the string {value!r}")


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--json", *TINY],
        ["plan", "--json", "--scheme", "partial-gc", *TINY],
        ["predict", "--json", *TINY, "--set", "predict.samples=2000", "--deadline", "1e6"],
        ["config", "--json", *TINY],
    ],
)
def test_json_outputs_hold_numbers_as_numbers(argv, capsys):
    assert main(argv) == 0
    _numbers_are_numbers(json.loads(capsys.readouterr().out))


def test_every_ready_made_config_loads_and_plans(capsys):
    files = sorted((REPO / "configs").glob("*.toml"))
    assert {f.stem for f in files} >= {
        "demo", "paper", "natural", "partial-gc", "sweep-workers", "multi-host",
    }  # fmt: skip
    assert load_config(REPO / "configs" / "demo.toml") == Config()  # the demo is the default
    for path in files:
        config = load_config(path)
        scheme = config.run.schemes[0]
        assert main(["plan", "--json", "--config", str(path), "--scheme", scheme]) == 0, path
        out = json.loads(capsys.readouterr().out)
        assert out["scheme"] == scheme and ("x" in out or "assignment" in out), path


def test_keygen_json(tmp_path, capsys):
    assert main(["keygen", "--json", "--dir", str(tmp_path), "--name", "master"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "public_key": str(tmp_path / "master.key"),
        "secret_key": str(tmp_path / "master.key_secret"),
    }
    assert (tmp_path / "master.key_secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_run_and_validate_json_hold_numbers_as_numbers(tmp_path, capsys):
    folder = tmp_path / "run"
    small = [*TINY, "--set", "run.iterations=3", "--set", "run.schemes=['bcgc-opt', 'uncoded']"]
    assert main(["run", "--json", "--no-check", "-o", str(folder), *small]) == 0
    out = json.loads(capsys.readouterr().out)
    _numbers_are_numbers(out)
    assert out["schemes"]["bcgc-opt"]["iterations"] == 3
    assert out["schemes"]["uncoded"]["gradient_max_rel_error"] is None  # --no-check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the data set inside it
    assert main(["validate", "--json", "--from", str(folder), "--deadline", "1e6"]) == 0
    out = json.loads(capsys.readouterr().out)
    _numbers_are_numbers(out)
    assert isinstance(out["schemes"]["bcgc-opt"]["ratio"], float)
