"""Shared test helpers (imported by test modules; pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import time

import numpy as np
import psutil


def no_children_left(timeout_s: float = 3.0) -> bool:
    """True once this test process has no child processes left (waits up to timeout_s)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not psutil.Process().children(recursive=True):
            return True
        time.sleep(0.05)
    return False


def mapped_segments(prefix: str, pids=None) -> list[tuple[int, str, str]]:
    """(pid, "fd" or "map", segment name) for each open file descriptor and each mapping of a
    shared-memory segment (bcgc_sim.wire.shm, a memfd) whose name starts with `prefix`, in `pids`
    (default: every process this user may look at)."""
    found = []
    tag = f"/memfd:{prefix}"
    for pid in pids if pids is not None else psutil.pids():
        try:
            with open(f"/proc/{pid}/maps") as handle:
                found += [(pid, "map", _name(line)) for line in handle if tag in line]
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith(tag):
                    found.append((pid, "fd", _name(link)))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _name(text: str) -> str:
    return text.split("/memfd:", 1)[1].split()[0]


def shm_files(prefix: str) -> list[str]:
    """Files in /dev/shm whose name starts with `prefix` (there should never be any)."""
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]


def coordinate_raw_runtime(redundancy: np.ndarray, cycle_times: np.ndarray) -> np.ndarray:
    """R of per-coordinate redundancies s_1..s_L (spec eq. 2), shape (K,); any order of s.

    Coordinate l is recovered at T_(N-s_l) sum_{i<=l} (s_i + 1); R is the latest recovery.
    """
    s = np.asarray(redundancy, dtype=int)
    t = np.sort(np.atleast_2d(cycle_times), axis=1)
    loads = np.cumsum(s + 1)
    return np.max(t[:, t.shape[1] - 1 - s] * loads, axis=1)
