"""The calibrated constants of the system runtime model (spec/system-model.md), one record.

Named `costs` beside `system` (the papers' N, L, M, C record): these are what the papers leave
out, the prices of compute, messages and cores on one machine. Their file is
bcgc_sim/calibration.py.

Every time is in seconds of one core's wall time at full speed. `bcgc calibrate` measures them
(master/system_calibrate.py) and writes the file that every command loads with
`--calibration FILE`; `SystemCosts()` (all zero, one quantum) is the papers' model.

Compute (linear models, workers/compute.py): a forward pass z = X theta over `rows` rows costs
  forward_element_s * rows * L + forward_row_s * rows + forward_call_s   (per contiguous range),
a block's coded partial derivatives over `rows` rows and `width` coordinates cost
  derivative_element_s * rows * width + derivative_call_s               (per contiguous range).
Messages: the sender spends send_s + byte_s * bytes of CPU, the message reaches the receiver
latency_s + Exp(latency_spread_s) later (wall time, no CPU: wake-up of a peer), and the receiver spends receive_s +
byte_s * bytes (a worker, for theta) or master_receive_s + byte_s * bytes + decode_element_s *
width (the master, per block) plus decode_s for the block's decode when s > 0. Between iterations the master spends iteration_s plus the loss or
check gradient (compute costs over all M rows) before it broadcasts the next theta.
Cores: `cores` cores, each shared round-robin with a time slice `quantum_s` by the workers
pinned to it, the burners on it and (wherever it runs) the master.
Stragglers: worker n's compute is multiplied by a random T_n = shift_n + Exp(1) / rate_n per
iteration (relative units, 1 = as calibrated); empty lists mean T_n = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

FLOAT_BYTES = 8


@dataclass(frozen=True)
class SystemCosts:
    """Calibrated costs of one machine (seconds); all zero = the papers' model (no system cost)."""

    forward_element_s: float = 0.0
    forward_row_s: float = 0.0
    forward_call_s: float = 0.0
    derivative_element_s: float = 0.0
    derivative_call_s: float = 0.0
    send_s: float = 0.0
    receive_s: float = 0.0
    master_receive_s: float = 0.0
    byte_s: float = 0.0
    latency_s: float = 0.0
    latency_spread_s: float = 0.0  # mean of an exponential extra latency (random wake-ups)
    decode_element_s: float = 0.0
    decode_s: float = 0.0  # master: fixed cost of decoding one coded block (s > 0)
    iteration_s: float = 0.0
    cores: int = 0  # 0 = one core per worker (N machines)
    quantum_s: float = 0.004
    law_shift: tuple[float, ...] = ()  # per worker (or one for all), relative units
    law_rate: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("law_shift", "law_rate"):
                if any(not (math.isfinite(v) and v >= 0) for v in value):
                    raise UserError(f"calibration: {f.name} must hold finite numbers >= 0")
                continue
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"calibration: {f.name} must be a finite number >= 0, got {value}")
        if self.quantum_s <= 0:
            raise UserError(f"calibration: quantum_s must be > 0, got {self.quantum_s}")
        if len(self.law_shift) != len(self.law_rate):
            raise UserError("calibration: law_shift and law_rate need the same length")
        if any(r <= 0 for r in self.law_rate):
            raise UserError("calibration: law_rate must be > 0")

    # -- compute ------------------------------------------------------------------------------
    def forward_s(self, rows: float, coordinates: int, calls: int) -> float:
        """CPU seconds of z = X theta and l'(z) over `rows` rows in `calls` contiguous ranges."""
        if rows <= 0:
            return 0.0
        return (
            self.forward_element_s * rows * coordinates
            + self.forward_row_s * rows
            + self.forward_call_s * calls
        )

    def derivative_s(self, rows: float, width: int, calls: int) -> float:
        """CPU seconds of X[rows, block]^T (w r) over `rows` rows in `calls` ranges."""
        return self.derivative_element_s * rows * width + self.derivative_call_s * calls

    def gradient_s(self, rows: int, coordinates: int) -> float:
        """CPU seconds of a full gradient X^T l'(X theta) over `rows` rows (one range)."""
        return self.forward_s(rows, coordinates, 1) + self.derivative_s(rows, coordinates, 1)

    # -- stragglers ---------------------------------------------------------------------------
    def cycle_times(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        """Random compute multipliers T, shape (K, N) = size; ones without a law."""
        k, n = size
        if not self.law_rate:
            return np.ones(size)
        shift, rate = self._per_worker(self.law_shift, n), self._per_worker(self.law_rate, n)
        return shift + rng.standard_exponential(size) / rate

    def mean_cycle_times(self, n_workers: int) -> np.ndarray:
        """E[T_n], shape (N,)."""
        if not self.law_rate:
            return np.ones(n_workers)
        shift = self._per_worker(self.law_shift, n_workers)
        return shift + 1.0 / self._per_worker(self.law_rate, n_workers)

    @staticmethod
    def _per_worker(values: tuple[float, ...], n_workers: int) -> np.ndarray:
        """One value per worker: the list itself if it has N entries, else its mean for all."""
        v = np.asarray(values, dtype=float)
        return v if v.size == n_workers else np.full(n_workers, float(v.mean()))

    def with_updates(self, **changes) -> SystemCosts:
        return dataclasses.replace(self, **changes)
