"""Calibration of the system model on a synthetic trace: the probe plans' CPU per iteration
and runtimes made by the model itself from known costs must give those costs back.

The synthetic machine has no idle-core wake-up cost (wake_s = 0): how many of those a run has
depends on the costs themselves, which the calibration handles by refitting; that loop is
not exact, the regression it repeats is."""

import dataclasses

import numpy as np
import pytest

from bcgc_sim.config import load_config
from bcgc_sim.model.costs import FLOAT_BYTES, SystemCosts
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.machine import simulate
from bcgc_sim.model.work import plan_work
from master.system_calibrate import PlanCosts, fit_costs, probe_plans

N, ROWS, COORDS = 4, 2000, 1000  # compute large enough to tell from the message costs
KNOWN = SystemCosts(
    forward_element_s=2e-10,
    derivative_element_s=3e-10,
    derivative_call_s=1e-6,
    theta_receive_s=150e-6,
    send_s=60e-6,
    byte_s=1e-10,
    broadcast_s=12e-6,
    theta_send_s=20e-6,
    relay_s=5e-6,
    master_message_s=22e-6,
    master_wake_s=30e-6,
    decode_element_s=5e-10,
    decode_s=5e-6,
    master_after_message_s=6e-6,
    iteration_s=200e-6,
    cores=2,
)
# what the calibration times directly (kernels at a factor 1.5 colder than in the testbed,
# bytes, decoder, wake-up, cores) and must not change
FACTOR = 1.5
BASE = SystemCosts(
    forward_element_s=KNOWN.forward_element_s / FACTOR,
    derivative_element_s=KNOWN.derivative_element_s / FACTOR,
    derivative_call_s=KNOWN.derivative_call_s / FACTOR,
    byte_s=KNOWN.byte_s,
    decode_element_s=KNOWN.decode_element_s,
    decode_s=KNOWN.decode_s,
    cores=2,
)


# the same machine with arrays through shared memory: no framed bytes, one copy at the sender
SHARED = dataclasses.replace(KNOWN, byte_s=0.0, copy_byte_s=2.5e-11)


def synthetic(config, known: SystemCosts = KNOWN) -> dict[str, PlanCosts]:
    """What the instrumented cluster would read if the machine were the model with `known`."""
    machine = config.machine(known)
    out = {}
    for name, plan in probe_plans(N, COORDS).items():
        work = plan_work(plan, ROWS, COORDS, known)
        iterations = 40
        trace = simulate(work, known, machine, np.ones((iterations, N)))
        idle = trace.wake_cpu / iterations
        slots = layout_for(plan, ROWS).slots
        sent = len(slots)  # every worker sends every slot: the trace's messages per iteration
        received = N * sent
        width = np.mean([s.stop - s.start for s in slots])
        message_bytes = known.byte_s * FLOAT_BYTES * width
        copied = known.copy_byte_s * FLOAT_BYTES * width
        worker = (
            known.theta_receive_s
            + known.byte_s * FLOAT_BYTES * COORDS
            + work.forward_s
            + work.derivative_s.sum(axis=1)
            + sent * (known.send_s + message_bytes + copied)
        ) + idle[:N]
        decode = sum(
            known.decode_s + known.decode_element_s * (N - s.stragglers) * (s.stop - s.start)
            if s.stragglers
            else known.decode_element_s * N * (s.stop - s.start)
            for s in slots
        )
        taking = (
            received * (known.master_message_s + message_bytes)
            + decode
            + trace.wakes[-2] / iterations * known.master_wake_s
            + idle[-2]
        )
        after = (
            known.iteration_s
            + known.gradient_s(ROWS, COORDS)
            + received * known.master_after_message_s
        )
        io = N * known.theta_send_s + received * known.relay_s + idle[-1]
        out[name] = PlanCosts(
            plan,
            worker,
            io,
            N * known.broadcast_s + known.copy_byte_s * FLOAT_BYTES * COORDS,
            taking,
            after,
            float(received),
            float(trace.wakes[-2] / iterations),
            0.0,
            float(np.mean(trace.runtime[5:])),
        )
    return out


@pytest.mark.parametrize("known", [KNOWN, SHARED], ids=["frames", "shared-memory"])
def test_calibration_recovers_the_costs_of_a_synthetic_trace(known):
    config = load_config(
        None,
        [
            f"cluster.workers={N}",
            f"model.samples={ROWS}",
            f"model.coordinates={COORDS}",
            "run.mode='natural'",
        ],
    )
    measured = synthetic(config, known)
    base = dataclasses.replace(BASE, byte_s=known.byte_s, copy_byte_s=known.copy_byte_s)
    fitted = fit_costs(base, measured, config)
    for field in dataclasses.fields(SystemCosts):
        if field.name in ("law_shift", "law_rate", "master_lag_s"):
            continue
        expected, got = getattr(known, field.name), getattr(fitted, field.name)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-12), field.name
    # the lag is read off the runtimes: the fitted one reproduces them
    for p in measured.values():
        work = plan_work(p.plan, ROWS, COORDS, fitted)
        trace = simulate(work, fitted, config.machine(fitted), np.ones((40, N)))
        assert np.mean(trace.runtime[5:]) == pytest.approx(p.runtime, rel=0.02)


@pytest.mark.slow
def test_probe_plans_on_the_instrumented_cluster_give_every_threads_cpu(tmp_path):
    """Two alternating rounds of the probe plans on real workers (N = 2): each round's runtimes,
    every thread's CPU per iteration and the master loop's timing are read (rounds under the
    neighbours' load may be set aside; the first and last iteration of each are; the instrumented
    cluster wraps the link's broadcast and receive, whatever the transport)."""
    from master.rounds import run_rounds
    from master.system_calibrate import plan_costs

    config = load_config(
        None,
        [
            "cluster.workers=2",
            "model.samples=200",
            "model.coordinates=100",
            "run.mode='natural'",
            f"run.output='{tmp_path}'",
        ],
    )
    measured = run_rounds(config, tmp_path / "probe", probe_plans(2, 100), 2, 4)
    for m in measured.values():
        assert m.runtimes.size == 2 * m.kept.sum() and np.all(m.runtimes > 0)
        assert m.median_round > 0 and m.round_spread >= 0
        costs = plan_costs(m)
        assert np.all(costs.worker > 0) and costs.master_io > 0 and costs.broadcast > 0
        assert 0 < costs.messages <= 2 * len(layout_for(m.plan, 200).slots)  # late ones aside
