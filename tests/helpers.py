"""Shared test helpers (imported by test modules; pytest puts this folder on sys.path)."""

from __future__ import annotations

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


def coordinate_raw_runtime(redundancy: np.ndarray, cycle_times: np.ndarray) -> np.ndarray:
    """R of per-coordinate redundancies s_1..s_L (spec eq. 2), shape (K,); any order of s.

    Coordinate l is recovered at T_(N-s_l) sum_{i<=l} (s_i + 1); R is the latest recovery.
    """
    s = np.asarray(redundancy, dtype=int)
    t = np.sort(np.atleast_2d(cycle_times), axis=1)
    loads = np.cumsum(s + 1)
    return np.max(t[:, t.shape[1] - 1 - s] * loads, axis=1)
