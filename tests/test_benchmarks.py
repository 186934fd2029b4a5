"""Smoke tests of the benchmark scripts with tiny arguments: they run, measure and print their
ratios. Exit status 0 or 1 is the script's verdict on its target (timings on a shared test
machine say nothing); anything else is a crash."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run(script: str, *args: str, timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.stdout


def test_decode_benchmark_compares_decoder_and_numpy():
    out = run("bench_decode.py", "--workers", "6", "--coordinates", "3000", "--repeats", "3")
    assert re.search(r"decoder [\d.]+ ms, numpy weighted sum [\d.]+ ms, ratio [\d.]+", out), out


def test_closed_forms_benchmark_runs():
    out = run("bench_closed_forms.py", "--workers", "10")
    assert "ms" in out, out


@pytest.mark.slow
def test_overhead_benchmark_prints_testbed_wire_and_raw_side_by_side():
    out = run(
        "bench_overhead.py", "--workers", "2", "--coordinates", "300", "--iterations", "12",
        "--rounds", "1",
    )  # fmt: skip
    row = re.search(r"^\s+0\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert row, out
    bed, wire, raw, bed_ratio, wire_ratio = (float(v) for v in row.groups())
    assert min(bed, wire, raw) > 0
    assert bed_ratio == pytest.approx(bed / raw, rel=0.02)  # printed ratios are of the same run
    assert wire_ratio == pytest.approx(wire / raw, rel=0.02)
    assert "median testbed/raw" in out


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mpirun") is None,
    reason="no mpirun: install Open MPI (Debian: openmpi-bin libopenmpi-dev; .ci/run does)",
)
def test_mpi_benchmark_prints_the_reference_and_the_testbed_side_by_side():
    out = run(
        "bench_mpi.py", "--workers", "2", "--sizes", "20x30", "--iterations", "6",
        "--rounds", "1",
    )  # fmt: skip
    rows = re.findall(
        r"^\| 20 x 30 \| (uncoded|coded s = 1) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| <= 3 \| (\S+) \| [\d.]+ \|$",
        out,
        re.M,
    )
    assert [r[0] for r in rows] == ["uncoded", "coded s = 1"], out
    for _, reference, testbed, ratio, error in rows:
        assert float(reference) > 0 and float(testbed) > 0
        assert float(ratio) == pytest.approx(float(testbed) / float(reference), rel=0.05, abs=0.01)
        assert float(error) < 1e-9  # the reference decodes the exact gradient
