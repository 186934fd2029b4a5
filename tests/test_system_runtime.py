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
    return SystemCosts(cores=1, forward_element_s=1e-6, derivative_element_s=1e-6, **changes)


UNCODED = BlockPlan("uncoded", (COORDS, 0))  # each worker: 4 rows, forward and derivative
# over 4 x 100 elements at 1 us: 0.4 ms + 0.4 ms = a 0.8 ms chain


def test_two_workers_sharing_one_core_run_one_after_the_other():
    """Slices longer than the work: worker 0 (theta first) runs to its end, then worker 1."""
    costs = _one_core()
    trace = simulate(
        plan_work(UNCODED, ROWS, COORDS, costs), costs, Machine(cores=1), np.ones((3, 2))
    )
    np.testing.assert_allclose(trace.sent[:, :, 0], [[0.8e-3, 1.6e-3]] * 3, rtol=1e-12)
    np.testing.assert_allclose(trace.runtime, 1.6e-3, rtol=1e-12)


def test_two_workers_sharing_one_core_take_turns_at_the_ticks():
    """A 0.1 ms slice and a 0.25 ms tick: worker 0 is preempted at the first tick after its
    slice is used (0.25 ms), and from then on they alternate tick by tick; worker 0 has its
    0.8 ms after 0.25 + 0.25 + 0.25 + 0.05 of its turns: at 1.55 ms, worker 1 at 1.6 ms."""
    costs = _one_core(slice_s=1e-4, tick_s=2.5e-4)
    trace = simulate(
        plan_work(UNCODED, ROWS, COORDS, costs), costs, Machine(cores=1), np.ones((2, 2))
    )
    np.testing.assert_allclose(trace.sent[0, :, 0], [1.55e-3, 1.6e-3], rtol=1e-9)


def test_message_costs_and_latency_add_up_on_dedicated_cores():
    """One core each: theta after 50 us latency, receive 30 us, compute 0.8 ms, send 20 us:
    both send at 0.9 ms; both messages reach the master at 0.95 ms, which takes them 30 us
    each, one after the other: at 0.98 and 1.01 ms."""
    costs = SystemCosts(
        forward_element_s=1e-6, derivative_element_s=1e-6, theta_receive_s=30e-6, send_s=20e-6,
        latency_s=50e-6, master_message_s=30e-6,
    )  # fmt: skip
    trace = simulate(plan_work(UNCODED, ROWS, COORDS, costs), costs, Machine(), np.ones((2, 2)))
    np.testing.assert_allclose(trace.sent[0, :, 0], [0.9e-3, 0.9e-3], rtol=1e-12)
    np.testing.assert_allclose(np.sort(trace.taken[0, :, 0]), [0.98e-3, 1.01e-3], rtol=1e-12)
    assert trace.runtime[0] == pytest.approx(1.01e-3, rel=1e-12)


def test_a_thread_woken_on_an_idle_core_starts_late():
    """Dedicated idle cores, wake_s = 40 us: each worker starts its 0.8 ms chain 40 us after
    theta; the master's pieces cost nothing, so it never waits to be woken."""
    costs = SystemCosts(forward_element_s=1e-6, derivative_element_s=1e-6, wake_s=40e-6)
    trace = simulate(plan_work(UNCODED, ROWS, COORDS, costs), costs, Machine(), np.ones((2, 2)))
    np.testing.assert_allclose(trace.sent[0, :, 0], [0.84e-3, 0.84e-3], rtol=1e-12)
    assert trace.idle_wakes[:2].tolist() == [2, 2]


def test_a_forward_pass_shifts_every_block_by_the_rows_it_has_needed():
    """Dedicated cores, no message cost: slot s (s = 0, 1, 2) needs r on s + 1 parts of 10
    rows, one more part than the slot before (workers/compute.py computes r part by part when
    a slot first needs it), so a forward pass of F per part moves slot s's send by (s + 1) F."""
    plan = BlockPlan("bcgc", (40, 30, 30))
    n = plan.n_workers
    base = SystemCosts(derivative_element_s=1e-6)
    with_forward = base.with_updates(forward_element_s=2e-6)
    rows = 3 * 10
    sent = {}
    for name, costs in (("without", base), ("with", with_forward)):
        work = plan_work(plan, rows, 100, costs)
        sent[name] = simulate(work, costs, Machine(), np.ones((1, n))).sent[0]
    per_part = 2e-6 * 10 * 100
    expected = np.tile(per_part * np.arange(1, 4), (n, 1))
    np.testing.assert_allclose(sent["with"] - sent["without"], expected, rtol=1e-9)


def test_an_idle_core_wakes_slower_the_longer_it_was_idle():
    """Dedicated cores, derivatives D = 0.4 ms, the master's 0.5 ms between iterations (its
    other costs 0): a worker's core idles from its send through the master's wake-up (w_m)
    and 0.5 ms, so its chain starts w_w = wake(0.5 ms + w_m) late; the master's core idles
    w_w + D until the last decode, so w_m = wake(w_w + D); runtime = w_w + D."""
    costs = SystemCosts(
        derivative_element_s=1e-6, iteration_s=5e-4, wake_s=10e-6, wake_deep_s=90e-6,
        wake_scale_s=5e-4,
    )  # fmt: skip
    trace = simulate(plan_work(UNCODED, ROWS, COORDS, costs), costs, Machine(), np.ones((8, 2)))
    worker = master = costs.wake_s
    for _ in range(50):  # the fixed point
        worker = costs.wake_after_s(master + 5e-4)
        master = costs.wake_after_s(worker + 4e-4)
    assert 10e-6 < worker < 90e-6
    assert trace.runtime[5:] == pytest.approx(np.full(3, worker + 4e-4), rel=1e-9)  # settled
    assert costs.wake_after_s(5e-4) == pytest.approx(10e-6 + 80e-6 * (1 - np.exp(-1)))


def test_slowdown_and_multipliers_scale_compute_only():
    """Dedicated cores; the master's I/O thread sends theta at 5 us each (worker 1's leaves at
    10 us); derivatives 0.4 ms: worker 0 three times (slowdown 3), worker 1 at T = 2; each
    send costs 5 us, which neither multiplies."""
    costs = SystemCosts(derivative_element_s=1e-6, send_s=5e-6, theta_send_s=5e-6)
    work = plan_work(BlockPlan("uncoded", (COORDS, 0)), ROWS, COORDS, costs)
    trace = simulate(work, costs, Machine(repeat=(3, 1)), np.array([[1.0, 2.0]]))
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


def test_stale_work_delays_the_next_broadcast_on_a_shared_core():
    """Single level s = 1, both workers on the master's core: each holds both parts (8 rows:
    forward 0.8 ms, derivative 0.8 ms). Worker 0's message at 1.6 ms decodes the iteration;
    worker 1's stale chain (ahead of the master, which has run more than its share) keeps
    the core until 3.2 ms; then the master's loss (8 x 100 at 1 us: 0.8 ms): the next
    broadcast is at 4.0 ms."""
    costs = _one_core()
    work = plan_work(BlockPlan("single", (0, COORDS)), ROWS, COORDS, costs)
    trace = simulate(work, costs, Machine(cores=1), np.ones((4, 2)))
    np.testing.assert_allclose(trace.runtime, 1.6e-3, rtol=1e-9)
    np.testing.assert_allclose(np.diff(trace.broadcast), 4.0e-3, rtol=1e-9)
    np.testing.assert_allclose(trace.sent[:, 1, 0], 3.2e-3, rtol=1e-9)


def test_adaptive_sample_count_stops_early_for_a_steady_plan():
    from bcgc_sim.model.machine import SYSTEM_MIN_SAMPLES, system_runtimes

    costs = _one_core()
    runtimes = system_runtimes(UNCODED, ROWS, COORDS, costs, Machine(cores=1), None, 1)
    assert runtimes.size == SYSTEM_MIN_SAMPLES
    np.testing.assert_allclose(runtimes, 1.6e-3, rtol=1e-9)


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


def test_bcgc_sys_opt_is_never_predicted_slower_than_a_plan_it_could_take():
    """Costs like the 2-core development machine's, random cycle times: on the same simulated
    draws the chosen x is at least as fast as uncoded, every L e_s and an extra plan given."""
    from bcgc_sim.model.machine import system_runtimes
    from bcgc_sim.model.sys_opt import FINAL_SAMPLES, bcgc_sys_opt, single_level

    costs = SystemCosts(
        forward_element_s=1.5e-10, derivative_element_s=1.4e-10, derivative_call_s=2.6e-6,
        theta_receive_s=1.8e-4, send_s=4.7e-5, byte_s=8.5e-11, wake_s=2.4e-5,
        theta_send_s=1.7e-5, master_message_s=1.7e-5, master_wake_s=5.9e-5,
        decode_element_s=4.1e-10, decode_s=4.1e-6, iteration_s=2e-4, master_lag_s=2e-4,
        cores=2, law_shift=(1.0,), law_rate=(3.0,),
    )  # fmt: skip
    machine, extra = Machine(cores=2), (90, 60, 50, 200)
    chosen = bcgc_sys_opt(4, 800, 400, costs, machine, seed=3, extra=(extra,))

    def mean(x):
        plan = BlockPlan("p", x)
        return system_runtimes(plan, 800, 400, costs, machine, FINAL_SAMPLES, 3).mean()

    others = [single_level(4, 400, s) for s in range(4)] + [extra]
    assert all(mean(chosen) <= mean(x) for x in others)


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


def test_emulated_deadlines_with_paper_like_costs_are_the_papers_model():
    """Derivatives at c seconds per row x coordinate and nothing else: D_k = c (M / N) S_k,
    so the emulated plan's runtime is the papers' R times c (C = 1 cycle)."""
    from bcgc_sim.model.emulation import emulate

    x = (189, 36, 24, 19, 18, 19, 23, 72)
    plan = BlockPlan("p", x)
    rows, c = 800, 1e-6
    costs = SystemCosts(derivative_element_s=c)
    scale = rows / plan.n_workers  # M C / N with C = 1
    emulated, layout = emulate(plan, rows, sum(x), costs, scale)
    t = 50 + np.random.default_rng(5).standard_exponential((100, plan.n_workers)) / 1e-3
    np.testing.assert_allclose(emulated.raw_runtime(t), c * block_raw_runtime(np.array(x), t))
    np.testing.assert_allclose(
        [s.load for s in layout.slots],
        [c * s.load for s in plan_work(plan, rows, sum(x), costs).slots],
    )


def test_emulated_deadlines_add_each_slots_message_and_the_forward_pass():
    """Uncoded on 2 workers (4 rows each, 100 coordinates): receive 30 us, forward 0.4 ms,
    derivative 0.4 ms, send 20 us: the one slot is due at 0.85 ms (at T = 1)."""
    from bcgc_sim.model.emulation import system_loads

    costs = SystemCosts(
        forward_element_s=1e-6, derivative_element_s=1e-6, theta_receive_s=30e-6, send_s=20e-6
    )
    assert system_loads(UNCODED, ROWS, COORDS, costs) == pytest.approx((0.85e-3,), rel=1e-12)


@pytest.mark.slow
def test_a_run_under_the_system_cost_model_has_its_exact_prediction(tmp_path):
    """run.cost_model = 'system' on the testbed: deadlines from a calibration file; every
    iteration's prediction is max_k T_(N-s_k) D_k and the measurement follows it."""
    import csv
    import json

    from bcgc_sim.calibration import save_costs
    from bcgc_sim.entry.cli import main

    calibration = save_costs(
        SystemCosts(forward_element_s=2e-8, derivative_element_s=2e-8, send_s=1e-3),
        tmp_path / "calibration.toml",
    )
    args = [
        "run", "--calibration", str(calibration), "--json", "-o", str(tmp_path / "run"),
        "--set", "cluster.workers=4", "--set", "run.iterations=4", "--set", "run.cost_model='system'",
        "--set", "run.iteration_seconds=0.03", "--set", "run.schemes=['bcgc-t', 'uncoded']",
        "--set", f"run.output='{tmp_path}'",
    ]  # fmt: skip
    assert main(args) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(meta["slot_loads"]) == {"bcgc-t", "uncoded"}
    with open(tmp_path / "run" / "iterations.csv") as handle:
        rows = list(csv.DictReader(handle))
    ratios = [float(r["measured_s"]) / float(r["predicted_s"]) for r in rows]
    assert all(0.95 < r < 1.5 for r in ratios), ratios
