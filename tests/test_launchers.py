"""Launchers: the rank a worker takes from mpirun's, PMIx's, MPICH's or srun's variables, a real
cluster started by mpirun, the Slurm batch script (checked without Slurm), and `bcgc master
--timeout` reporting who connected and who was refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers.worker import RankError, rank_from_environment

BCGC = [sys.executable, "-m", "bcgc_sim"]


# -- the rank from the launcher's environment ------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "rank"),
    [
        ({}, -1),
        ({"OMPI_COMM_WORLD_RANK": "3"}, 3),
        ({"PMIX_RANK": "4"}, 4),
        ({"PMI_RANK": "5"}, 5),
        ({"SLURM_PROCID": "6"}, 6),
        # mpirun inside a Slurm allocation: SLURM_PROCID is its daemon's node index
        ({"SLURM_PROCID": "1", "OMPI_COMM_WORLD_RANK": "7", "PMIX_RANK": "7"}, 7),
        ({"SLURM_PROCID": "0", "PMI_RANK": "2"}, 2),
        ({"OMPI_COMM_WORLD_RANK": " 8\n", "SLURM_PROCID": "0"}, 8),
        ({"OMPI_COMM_WORLD_RANK": "", "SLURM_PROCID": "9"}, 9),  # empty is unset
    ],
)
def test_the_rank_comes_from_the_most_specific_launcher_variable(environ, rank):
    assert rank_from_environment(environ) == rank


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "٣"])
def test_a_rank_variable_that_is_not_a_rank_is_an_error(value):
    with pytest.raises(RankError, match="PMI_RANK="):
        rank_from_environment({"PMI_RANK": value, "SLURM_PROCID": "0"})


def test_the_worker_refuses_a_bad_rank_variable_in_one_line():
    proc = subprocess.run(
        [*BCGC, "worker", "--connect", "tcp://127.0.0.1:5999"],
        capture_output=True, text=True, timeout=60, env={"SLURM_PROCID": "x", "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SLURM_PROCID='x' is not a rank" in lines[0], proc.stderr
