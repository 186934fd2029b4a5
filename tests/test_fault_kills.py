"""A few random worker kills on real runs (scripts/fault_kills.py, which does 30 and more): no
hang, no stall, no inexact gradient; every death is either handled (an exact run, a replacement)
or ends the run with one line naming the worker and the block."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import no_children_left

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_kills.py"


@pytest.mark.slow
def test_random_kills_are_noticed_fast_and_end_in_an_exact_run_or_one_clear_error():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "4", "--seed", "3", "--trial-timeout", "30"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr  # no wrong, stall, hang or other
    counts = dict(re.findall(r"(\w+) (\d+)", re.search(r"^outcomes: (.*)$", proc.stdout, re.M)[1]))
    assert sum(int(c) for c in counts.values()) == 4
    assert int(counts["completed"]) + int(counts["error"]) >= 2, proc.stdout  # most kills land
    noticed = re.search(r"^noticed: \d+ kills, .* max (\d+) ms$", proc.stdout, re.M)
    # an exited process is seen at the next 20 ms check (a receive waits at most 50 ms)
    assert noticed is None or int(noticed[1]) < 200, proc.stdout
    assert no_children_left()
