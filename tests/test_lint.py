"""`ruff check` (configured in pyproject.toml) must pass."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_TESTS = [
    "tests/test_stragglers.py",
    "tests/test_runtime.py",
    "tests/test_codes.py",
    "tests/test_schemes.py",
    "tests/test_properties.py",
    "tests/test_cli.py",
    "tests/test_lint.py",
]


def _ruff(*paths):
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *paths],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )


def test_ruff_model_tests():
    proc = _ruff(*MODEL_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.xfail(
    strict=True,
    reason="the repository breaks its own ruff rules (pyproject.toml, line-length 100): "
    "E501 in most modules of bcgc_sim/ (cli, codes, config, errors, ferdinand, optimize, "
    "plans, predict, runtime, schemes, stragglers) and in scripts/, plus F401 (unused import "
    "of block_raw_runtime) in bcgc_sim/optimize.py",
)
def test_ruff_repository():
    proc = _ruff(".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
