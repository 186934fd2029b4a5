"""What a session is told (SessionSettings), what it returns per iteration (IterationResult),
and what follows from the settings: the stall limit and the SETUP fields every protocol shares."""

from __future__ import annotations

from dataclasses import dataclass

from bcgc_sim.model.stragglers import distribution_to_spec
from bcgc_sim.model.system import SystemModel
from bcgc_sim.problems import ProblemData
from bcgc_sim.wire.protocol import DEFAULT_HEARTBEAT_S, DEFAULT_LIVENESS


@dataclass
class IterationResult:
    measured_s: float
    predicted_s: float
    loss: float
    gradient_rel_error: float | None
    stale: int  # messages of an older iteration or scheme, dropped
    overruns: int  # used messages whose compute ended after their deadline
    nmse: float | None = None  # partial-gc: ||g_hat - g||^2 / ||g||^2 (with check)
    round_trip_s: float | None = None  # partial-gc: stop -> last UPLOAD (COMBINE / UPLOAD)


@dataclass(frozen=True)
class SessionSettings:
    seed: int
    time_scale: float  # seconds per model time unit
    check: bool  # compare every decoded gradient with the uncoded one
    learning_rate: float  # theta <- theta - learning_rate * gradient / M
    pin: bool = True  # workers pin themselves to cores
    natural: bool = False  # no injected delays: real compute (and real load) sets the pace
    repeat: tuple[int, ...] = ()  # natural mode: per-worker repetitions of the work (slowdown)
    heartbeat_s: float = DEFAULT_HEARTBEAT_S  # a heartbeat after this long without a message
    liveness: int = DEFAULT_LIVENESS  # heartbeat intervals of silence before a peer is dead
    on_failure: str = "error"  # or "replace": wait for a replacement worker
    replace_timeout_s: float = 60.0
    stall_timeout_s: float = 0.0  # no usable message for this long: give up (0 = stall_limit_s)

    @property
    def window_s(self) -> float:
        """The liveness window: seconds of silence after which a worker is dead."""
        return self.liveness * self.heartbeat_s


def stall_limit_s(settings: SessionSettings, expected_s: float) -> float:
    """Seconds an iteration may go without a usable message: cluster.stall_timeout, or (0) the
    liveness window plus twice the expected iteration plus 1 s. `expected_s` is the predicted
    iteration; in natural mode (nothing predicted) the caller gives the longest so far, at
    least ten liveness windows. A dead worker is found by the liveness rules well before this:
    the limit only ends iterations in which live workers stay silent."""
    if settings.stall_timeout_s > 0:
        return settings.stall_timeout_s
    return settings.window_s + 2 * expected_s + 1.0


def no_dead_ranks() -> set[int]:
    return set()


def common_setup_fields(
    settings: SessionSettings,
    model: SystemModel,
    data: ProblemData,
    run_id: str,
    rank: int,
    ns_per_load: float,
) -> dict:
    """The SETUP header fields every protocol shares (the rest is the protocol's plan)."""
    return {
        "run": run_id,
        "rank": rank,
        "n_workers": model.n_workers,
        "seed": settings.seed,
        "ns_per_load": float(ns_per_load),
        "data": data.to_header(),
        "straggler": distribution_to_spec(model.distribution),
        "pin": settings.pin,
        "natural": settings.natural,
        "repeat": settings.repeat[rank] if settings.repeat else 1,
        "heartbeat_s": settings.heartbeat_s,
        "liveness": settings.liveness,
    }
