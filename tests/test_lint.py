"""The repository passes its own lint rules (pyproject.toml), pickle ban (S301) included."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ruff(*args):
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_ruff_check():
    proc = _ruff("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = _ruff("format", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pickle_is_banned(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\n\n\ndef f(b):\n    return pickle.loads(b)\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--config",
            str(REPO / "pyproject.toml"),
            str(bad),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode != 0 and "S301" in proc.stdout
