"""Shared test helpers (imported by test modules; pytest puts this folder on sys.path)."""

from __future__ import annotations

import time

import psutil


def no_children_left(timeout_s: float = 3.0) -> bool:
    """True once this test process has no child processes left (waits up to timeout_s)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not psutil.Process().children(recursive=True):
            return True
        time.sleep(0.05)
    return False
