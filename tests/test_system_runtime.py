"""The system runtime model against hand-computed cases and the papers' model (spec/system-model.md)."""

import numpy as np
import pytest

from bcgc_sim.calibration import costs_to_toml, load_costs
from bcgc_sim.model.costs import SystemCosts
from bcgc_sim.model.machine import Machine, simulate
from bcgc_sim.model.plans import BlockPlan, TandonPlan
from bcgc_sim.model.runtime import block_raw_runtime, tandon_raw_runtime
from bcgc_sim.model.work import plan_work

ROWS, COORDS = 8, 100  # two workers: 4 rows each


def _one_core(**changes) -> SystemCosts:
    return SystemCosts(cores=1, **changes)


def test_two_workers_sharing_one_core_run_one_after_the_other():
    """Slices longer than the work: worker 0 (theta first) runs to its end, then worker 1.
    Forward 4 rows x 100 x 1e-6 = 0.4 ms, derivatives 0.4 ms: each chain 0.8 ms."""
    costs = _one_core(forward_element_s=1e-6, derivative_element_s=1e-6, quantum_s=1.0)
    work = plan_work(BlockPlan("uncoded", (COORDS, 0)), ROWS, COORDS, costs)
    trace = simulate(work, costs, Machine(cores=1), np.ones((3, 2)))
    np.testing.assert_allclose(trace.sent[:, :, 0], [[0.8e-3, 1.6e-3]] * 3, rtol=1e-12)
    np.testing.assert_allclose(trace.runtime, 1.6e-3, rtol=1e-12)


def test_two_workers_sharing_one_core_round_robin():
    """A 0.1 ms slice: the two 0.8 ms chains alternate; worker 0 ends one slice before worker 1."""
    costs = _one_core(forward_element_s=1e-6, derivative_element_s=1e-6, quantum_s=1e-4)
    work = plan_work(BlockPlan("uncoded", (COORDS, 0)), ROWS, COORDS, costs)
    trace = simulate(work, costs, Machine(cores=1), np.ones((2, 2)))
    np.testing.assert_allclose(trace.sent[0, :, 0], [1.5e-3, 1.6e-3], rtol=1e-9)


def test_message_costs_and_latency_add_up_on_dedicated_cores():
    """One core per worker: theta send 10 us + latency 50 us + receive 20 us + compute 0.8 ms
    + send 10 us + latency 50 us + master 30 us."""
    costs = SystemCosts(
        forward_element_s=1e-6, derivative_element_s=1e-6, send_s=10e-6, receive_s=20e-6,
        master_receive_s=30e-6, latency_s=50e-6,
    )  # fmt: skip
    work = plan_work(BlockPlan("uncoded", (COORDS, 0)), ROWS, COORDS, costs)
    trace = simulate(work, costs, Machine(), np.ones((2, 2)))
    # the master sends theta to worker 0 (10 us), then to worker 1 (20 us)
    np.testing.assert_allclose(trace.sent[0, :, 0], [0.89e-3, 0.9e-3], rtol=1e-12)
    # worker 0's message is taken at 0.89 + 0.05 + 0.03 ms; worker 1's arrives at 0.95 ms and
    # waits for the master until 0.97 ms: taken at 1.00 ms
    np.testing.assert_allclose(trace.taken[0, :, 0], [0.97e-3, 1.0e-3], rtol=1e-12)
    assert trace.runtime[0] == pytest.approx(1.0e-3, rel=1e-12)


def test_a_forward_pass_shifts_every_block_by_its_cost():
    """Dedicated cores, no message cost: a forward pass of F seconds moves every send by F."""
    plan = BlockPlan("bcgc", (40, 30, 30))
    n = plan.n_workers
    base = SystemCosts(derivative_element_s=1e-6)
    with_forward = base.with_updates(forward_element_s=2e-6)
    rows = 3 * 10
    sent = {}
    for name, costs in (("without", base), ("with", with_forward)):
        work = plan_work(plan, rows, 100, costs)
        sent[name] = simulate(work, costs, Machine(), np.ones((1, n))).sent[0]
    forward = 2e-6 * 30 * 100  # s_max = 2: every worker holds all 30 rows
    np.testing.assert_allclose(sent["with"] - sent["without"], forward, rtol=1e-9)


def test_slowdown_and_multipliers_scale_compute_only():
    costs = SystemCosts(derivative_element_s=1e-6, send_s=5e-6)
    work = plan_work(BlockPlan("uncoded", (COORDS, 0)), ROWS, COORDS, costs)
    t = np.array([[1.0, 2.0]])
    trace = simulate(work, costs, Machine(repeat=(3, 1)), t)
    # derivatives 0.4 ms: worker 0 three times, worker 1 at T = 2; sends 5 us after the
    # theta sends (5 us, 10 us)
    np.testing.assert_allclose(trace.sent[0, :, 0], [5e-6 + 1.2e-3 + 5e-6, 10e-6 + 0.8e-3 + 5e-6])


@pytest.mark.parametrize("x", [(189, 36, 24, 19, 18, 19, 23, 72), (400, 0, 0, 0, 0, 0, 0, 0)])
def test_zero_costs_with_paper_deadlines_reduce_to_the_papers_model(x):
    rng = np.random.default_rng(3)
    plan = BlockPlan("p", x)
    n, rows = plan.n_workers, 800
    work = plan_work(plan, rows, sum(x), SystemCosts())
    t = 50 + rng.standard_exponential((200, n)) / 1e-3
    scale = rows * 1.0 / n
    loads = np.array([s.load for s in work.slots])
    deadlines = t[:, :, None] * loads * scale
    trace = simulate(work, SystemCosts(), Machine(), np.ones_like(t), deadlines)
    expected = block_raw_runtime(np.array(x), t) * scale
    np.testing.assert_allclose(trace.runtime, expected, rtol=1e-12)


def test_zero_costs_reduce_to_tandons_runtime():
    rng = np.random.default_rng(4)
    plan = TandonPlan("tandon", 6, 300, 2, 6.0)
    work = plan_work(plan, 600, 300, SystemCosts())
    t = 50 + rng.standard_exponential((200, 6)) / 1e-3
    loads = np.array([s.load for s in work.slots])
    trace = simulate(work, SystemCosts(), Machine(), np.ones_like(t), t[:, :, None] * loads)
    np.testing.assert_allclose(trace.runtime, tandon_raw_runtime(2, 6.0, 300, t), rtol=1e-12)


def test_stale_work_carries_over_on_a_shared_core():
    """Single level s = 1 on one core: the master needs one of two workers, but the other keeps
    the core busy with its stale slot, so the next iteration starts behind it."""
    costs = _one_core(derivative_element_s=1e-6, quantum_s=1e-5)
    work = plan_work(BlockPlan("single", (0, COORDS)), ROWS, COORDS, costs)
    trace = simulate(work, costs, Machine(cores=1), np.ones((4, 2)))
    # each chain is 0.8 ms of derivatives (8 rows x 100); sharing the core, the first of the
    # two finishes after 1.6 ms less one slice; later iterations inherit the stale remainder
    assert trace.runtime[0] == pytest.approx(1.6e-3 - 1e-5, rel=1e-9)
    assert np.all(trace.runtime[1:] > trace.runtime[0])


def test_failed_worker_gives_an_infinite_runtime_only_where_needed():
    costs = SystemCosts(derivative_element_s=1e-6)
    t = np.array([[1.0, np.inf], [1.0, 1.0]])
    uncoded = plan_work(BlockPlan("u", (COORDS, 0)), ROWS, COORDS, costs)
    coded = plan_work(BlockPlan("c", (0, COORDS)), ROWS, COORDS, costs)
    assert np.isinf(simulate(uncoded, costs, Machine(), t).runtime[0])
    assert np.isfinite(simulate(uncoded, costs, Machine(), t).runtime[1])
    assert np.all(np.isfinite(simulate(coded, costs, Machine(), t).runtime))


def test_calibration_file_round_trip(tmp_path):
    costs = SystemCosts(
        forward_element_s=1.5e-10, cores=2, law_shift=(0.9, 1.1), law_rate=(5.0, 4.0)
    )
    path = tmp_path / "calibration.toml"
    path.write_text(costs_to_toml(costs, {"setting": 'N = 8, "quiet"'}))
    assert load_costs(path) == costs


def _sys_opt(costs: SystemCosts, machine: Machine, n: int = 4, rows: int = 400, coords: int = 200):
    from bcgc_sim.model.stragglers import ShiftedExponential
    from bcgc_sim.model.system import SystemModel
    from bcgc_sim.schemes import SchemeOptions, build_plan

    model = SystemModel(n, coords, rows, 1.0, ShiftedExponential(1.0, 1.0))
    return build_plan("bcgc-sys-opt", model, SchemeOptions(system=(costs, machine)))


def test_bcgc_sys_opt_needs_a_calibration():
    from bcgc_sim.errors import UserError
    from bcgc_sim.model.stragglers import ShiftedExponential
    from bcgc_sim.model.system import SystemModel
    from bcgc_sim.schemes import build_plan

    with pytest.raises(UserError, match="--calibration"):
        build_plan("bcgc-sys-opt", SystemModel(4, 20, 40, 1.0, ShiftedExponential(1.0, 1.0)))


def test_bcgc_sys_opt_is_at_least_as_fast_as_every_single_level():
    """4 workers on 2 shared cores: the chosen x beats (or ties) uncoded and every L e_s."""
    costs = SystemCosts(forward_element_s=1e-8, derivative_element_s=1e-8, send_s=1e-5, cores=2)
    machine = Machine(cores=2)
    chosen = _sys_opt(costs, machine)

    def mean(x):
        w = plan_work(BlockPlan("p", x), 400, 200, costs)
        return simulate(w, costs, machine, np.ones((8, 4))).runtime[2:].mean()

    singles = [tuple(200 if i == s else 0 for i in range(4)) for s in range(4)]
    assert mean(chosen.x) <= min(mean(x) for x in singles) * (1 + 1e-9)


def test_bcgc_sys_opt_codes_around_a_slow_dedicated_worker():
    """One core each, worker 3 five times slower: a plan that does not wait for it wins."""
    costs = SystemCosts(forward_element_s=1e-8, derivative_element_s=1e-8, send_s=1e-5)
    plan = _sys_opt(costs, Machine(repeat=(1, 1, 1, 5)))
    assert plan.x[0] < 200 and sum(plan.x) == 200
    work = {name: plan_work(p, 400, 200, costs) for name, p in
            (("sys", plan), ("uncoded", BlockPlan("u", (200, 0, 0, 0))))}  # fmt: skip
    means = {
        name: simulate(w, costs, Machine(repeat=(1, 1, 1, 5)), np.ones((6, 4))).runtime[2:].mean()
        for name, w in work.items()
    }
    assert means["sys"] < 0.7 * means["uncoded"]
