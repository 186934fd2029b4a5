"""The calibrated constants of the system runtime model (spec/system-model.md), one record.

Named `costs` beside `system` (the papers' N, L, M, C record): these are what the papers leave
out, the prices of compute, messages, the master and the cores of one machine. Their file is
bcgc_sim/calibration.py; `bcgc calibrate` measures them (master/system_calibrate.py).
`SystemCosts()` (every cost zero) is the papers' model.

Every time is CPU seconds of one core (or wall seconds where said). With L coordinates and
8-byte floats:
- compute (linear models, workers/compute.py): a forward pass z = X theta, l'(z) over `rows`
  rows costs forward_element_s * rows * L + forward_row_s * rows + forward_call_s per
  contiguous row range; a slot's coded partial derivatives over `rows` rows and `width`
  coordinates cost derivative_element_s * rows * width + derivative_call_s per range;
- bytes: byte_s per byte at each end of a message whose array travels in frames (ZeroMQ),
  copy_byte_s per byte a sender copies into its shared-memory segment (cluster.transport
  shm: the receiver reads a view of it; byte_s is then 0, no bulk bytes are framed);
- the worker, per iteration: theta_receive_s + byte_s * 8 L to take theta (its process and its
  I/O thread); per message sent: send_s + (byte_s + copy_byte_s) * 8 width on its core (its
  process and its I/O thread);
- the master, per broadcast: broadcast_s per worker (its main thread hands theta over) and
  copy_byte_s * 8 L once (theta copied into its segment for every worker), and
  theta_send_s + byte_s * 8 L per worker on its I/O thread, one after the other (worker n's
  theta leaves when the n-th is done); per message received, relay_s + byte_s * 8 width on
  the same I/O thread, in one queue with the theta sends, before the master sees it; each time
  the master's receive sleeps and wakes, master_wake_s; per message taken during
  an iteration: master_message_s + byte_s * 8 width, plus decode_element_s * width for a
  message of an s = 0 slot (added on arrival), or decode_s + decode_element_s * (N - s) * width
  when it completes a slot with s > 0; after the last decode (outside the measured runtime):
  iteration_s + master_after_message_s per message taken in the iteration, plus the loss (or,
  with run.check, the full gradient) over all M rows at the compute costs above;
- latency_s: wall time from a send to the peer's wake-up (no CPU); a thread woken on an idle
  core starts late, and the core counts that time as the thread's (a virtual machine's halted
  CPU has to be resumed: measured as the one-way latency to a process on another, idle core
  minus that to one on the same core). The longer the core was idle, the longer it takes (the
  hypervisor polls a halted CPU for a while, then gives its host CPU away): after d seconds
  idle, wake_s + (wake_deep_s - wake_s) (1 - exp(-d / wake_scale_s)) (wake_s alone when
  wake_scale_s is 0);
- cores: `cores` cores (0 = one per worker and one for the master: N machines); the
  master's two threads wake master_lag_s of virtual time behind the core's average (they use
  far more than a fair share: EEVDF keeps them behind the workers they wake); A core's
  runnable threads are picked as the kernel's EEVDF scheduler does (model/machine.py): equal
  weights, each placed at the core's average virtual time when it wakes, with a virtual
  deadline `slice_s` later; at every wake-up and every send the eligible thread with the
  earliest deadline runs; a thread past its deadline is preempted at the next tick
  (`tick_s`);
- stragglers: worker n's compute is multiplied by a random T_n = shift_n + Exp(1) / rate_n per
  iteration (relative units, 1 = as calibrated); empty lists mean T_n = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

FLOAT_BYTES = 8
LAW_FIELDS = ("law_shift", "law_rate")


@dataclass(frozen=True)
class SystemCosts:
    """Calibrated costs of one machine (seconds); all zero = the papers' model (no system cost)."""

    forward_element_s: float = 0.0
    forward_row_s: float = 0.0
    forward_call_s: float = 0.0
    derivative_element_s: float = 0.0
    derivative_call_s: float = 0.0
    theta_receive_s: float = 0.0
    send_s: float = 0.0
    byte_s: float = 0.0  # per byte at each end of a framed array (ZeroMQ)
    copy_byte_s: float = 0.0  # per byte the sender copies into shared memory (cluster.transport)
    latency_s: float = 0.0
    wake_s: float = 0.0  # an idle core's wake-up (a VM's halted vCPU) after a brief idle
    wake_deep_s: float = 0.0  # ... after a long idle
    wake_scale_s: float = 0.0  # idle time over which it goes from one to the other (0: wake_s)
    broadcast_s: float = 0.0
    theta_send_s: float = 0.0
    relay_s: float = 0.0  # the master's I/O thread per message it takes in
    master_lag_s: float = 0.0  # the master's threads wake this far behind (virtual time)
    master_message_s: float = 0.0
    master_wake_s: float = 0.0  # the master's CPU each time its receive sleeps and wakes
    decode_element_s: float = 0.0
    decode_s: float = 0.0
    master_after_message_s: float = 0.0
    iteration_s: float = 0.0
    cores: int = 0  # 0 = one core per worker and one for the master (N machines)
    slice_s: float = 0.0028  # the scheduler's base slice (EEVDF's virtual deadline)
    tick_s: float = 0.004  # the scheduler tick (HZ = 250)
    law_shift: tuple[float, ...] = ()  # per worker (or one for all), relative units
    law_rate: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in LAW_FIELDS:
                if any(not (math.isfinite(v) and v >= 0) for v in value):
                    raise UserError(f"calibration: {f.name} must hold finite numbers >= 0")
                continue
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"calibration: {f.name} must be a finite number >= 0, got {value}")
        for name in ("slice_s", "tick_s"):
            if getattr(self, name) <= 0:
                raise UserError(f"calibration: {name} must be > 0, got {getattr(self, name)}")
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

    def wake_after_s(self, idle_s: float) -> float:
        """Seconds an idle core takes to run a thread woken after `idle_s` seconds idle."""
        if self.wake_scale_s <= 0:
            return self.wake_s
        rise = -math.expm1(-max(idle_s, 0.0) / self.wake_scale_s)
        return self.wake_s + (self.wake_deep_s - self.wake_s) * rise

    def message_s(self, width: int) -> float:
        """CPU seconds on the sender's core of one message of `width` floats."""
        return self.send_s + (self.byte_s + self.copy_byte_s) * FLOAT_BYTES * width

    # -- stragglers ---------------------------------------------------------------------------
    def cycle_times(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        """Random compute multipliers T, shape (K, N) = size; ones without a law."""
        _, n = size
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
