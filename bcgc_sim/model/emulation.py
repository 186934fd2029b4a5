"""Emulation under the system model (run.cost_model = "system"): injected deadlines that follow
the calibrated costs of each block instead of the papers' C cycles per partial derivative.

Named `emulation` beside `deadline` (the papers' completion probability): N workers on fewer
cores emulate N machines. Worker n's slot k is held until
    t_start + time_scale * T_n * D_k,
D_k the system model's time for a worker on a core of its own to take theta and compute and
send slots 0..k (model/work.py, model/costs.py: theta_receive_s, the forward pass over the rows
it holds, each slot's derivatives and send), averaged over the workers (their row counts differ
by one at most). In raw units (M C / N) a slot's load is D_k / (M C / N), so the testbed's
deadline rule and the papers' order-statistic prediction apply unchanged:
    runtime = max_k T_(N - s_k) D_k,
exactly beside every iteration, as in the papers' mode. The master's own costs are not in the
deadlines: what they add is what the run measures beyond the prediction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .costs import SystemCosts
from .layout import Layout, layout_for
from .plans import Plan
from .stragglers import CycleTimeDistribution
from .work import plan_work


def system_loads(plan: Plan, rows: int, coordinates: int, costs: SystemCosts) -> tuple[float, ...]:
    """D_k per slot (seconds on a core of its own at T = 1), cumulative, shape (slots,)."""
    work = plan_work(plan, rows, coordinates, costs)
    receive = costs.theta_receive_s + costs.byte_s * work.theta_bytes
    per_slot = (work.slot_forward_s + work.derivative_s).mean(axis=0) + np.array(
        [costs.message_s(s.width) for s in work.slots]
    )
    done = receive + np.cumsum(per_slot)
    return tuple(float(v) for v in done)


@dataclass(frozen=True)
class EmulatedPlan:
    """A block or Tandon plan whose slot k is due at D_k (raw units: D_k / (M C / N))."""

    plan: Plan
    loads: tuple[float, ...]  # raw units per slot
    stragglers: tuple[int, ...]  # s per slot

    @property
    def scheme(self) -> str:
        return self.plan.scheme

    @property
    def n_workers(self) -> int:
        return self.plan.n_workers

    def describe(self) -> str:
        return self.plan.describe()

    def raw_runtime(self, cycle_times: np.ndarray) -> np.ndarray:
        """max_k T_(N - s_k) load_k per realisation, shape (K,); cycle_times (K, N)."""
        ordered = np.sort(np.asarray(cycle_times, dtype=float), axis=1)
        n = ordered.shape[1]
        columns = [
            ordered[:, n - s - 1] * load
            for s, load in zip(self.stragglers, self.loads, strict=True)
        ]
        return np.max(np.column_stack(columns), axis=1)

    def completion_probability(
        self, raw_deadline: float, dist: CycleTimeDistribution, samples: int = 20_000
    ) -> float:
        """P(R <= raw_deadline) by Monte Carlo on a fixed stream (block deadlines are not
        nested in general, so the papers' exact formula does not apply)."""
        from .stragglers import monte_carlo_cycle_times
        from .streams import STREAM_EVALUATION

        draws = monte_carlo_cycle_times(dist, 0, samples, self.n_workers, STREAM_EVALUATION)
        return float(np.mean(self.raw_runtime(draws) <= raw_deadline))


def emulate(
    plan: Plan, rows: int, coordinates: int, costs: SystemCosts, seconds_per_raw_unit: float
) -> tuple[EmulatedPlan, Layout]:
    """The plan and testbed layout whose deadlines follow the system model's costs."""
    layout = layout_for(plan, rows)
    done = system_loads(plan, rows, coordinates, costs)
    loads = tuple(d / seconds_per_raw_unit for d in done)
    slots = tuple(
        dataclasses.replace(slot, load=load) for slot, load in zip(layout.slots, loads, strict=True)
    )
    emulated = EmulatedPlan(plan, loads, tuple(s.stragglers for s in layout.slots))
    return emulated, Layout(slots, layout.partitions)
