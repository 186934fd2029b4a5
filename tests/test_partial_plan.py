"""partial-gc on the testbed, without processes: the plan (timing, stop rules, storage,
orderings, run.json), the config keys, the worker's chunk loop with a scripted master, and the
master's session against simulated in-process workers (exact, deadline and NMSE stops, failures)."""

from __future__ import annotations

import csv
import dataclasses
import heapq
import itertools
import math
import time

import numpy as np
import pytest
from partial_reference import qmax, qmax_lower_bound

from bcgc_sim.config import load_config
from bcgc_sim.errors import UserError
from bcgc_sim.model.layout import partition_bounds
from bcgc_sim.model.stragglers import ShiftedExponential, monte_carlo_cycle_times, worker_rng
from bcgc_sim.model.streams import STREAM_EVALUATION, STREAM_TUNING
from bcgc_sim.model.system import SystemModel
from bcgc_sim.partial.assignment import Assignment
from bcgc_sim.partial.plan import CDF_SAMPLES, PartialOptions, PartialPlan
from bcgc_sim.partial.timing import exact_times, nmse_at, speed_finish_times
from bcgc_sim.problems import ProblemData, full_gradient, prepare_data
from bcgc_sim.results import RunRecorder
from bcgc_sim.schemes import SchemeOptions, build_plan, plan_from_dict, plan_to_dict
from bcgc_sim.wire.protocol import PROTOCOL_VERSION, Message, MessageType
from master.partial_session import PartialSession
from master.session import RunError, SessionSettings
from master.transport import PeerTable, Received
from workers import partial as worker_partial

LAW = ShiftedExponential(1.0, 1.0)
MODEL = SystemModel(6, 40, 60, 1.0, LAW)
FAST = SchemeOptions(tuning_samples=4000)


def options(**partial) -> SchemeOptions:
    return dataclasses.replace(FAST, partial=PartialOptions(**partial))


def draws(n: int = 3000, workers: int = 6) -> np.ndarray:
    return monte_carlo_cycle_times(LAW, 5, n, workers, STREAM_EVALUATION)


# ------------------------------------------------------------------------------------------------
# the plan
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage, parts", [(2, 1), (3, 1), (3, 2), (6, 1), (4, 3)])
def test_exact_runtime_is_the_timing_model_with_chunk_cost_l(storage, parts):
    plan = build_plan("partial-gc", MODEL, options(storage=storage, parts=parts))
    t = draws()
    a = Assignment.cyclic(6, storage)
    expected = exact_times(a, plan.positions, speed_finish_times(t, a.loads, 40.0), parts)
    np.testing.assert_allclose(plan.raw_runtime(t), expected, rtol=1e-15)
    assert np.all(plan.nmse_at_stop(t) == 0)
    assert plan.upload_length == math.ceil(40 / parts) and not plan.approximate


def test_the_optimal_order_is_latin_and_the_random_one_is_seeded():
    optimal = build_plan("partial-gc", MODEL, options(storage=3))
    a = Assignment.cyclic(6, 3)
    assert qmax(a, optimal.ordering) == qmax_lower_bound(a)
    random = build_plan("partial-gc", MODEL, options(storage=3, ordering="random"))
    assert random.ordering != optimal.ordering
    assert random == build_plan("partial-gc", MODEL, options(storage=3, ordering="random"))
    other = dataclasses.replace(options(storage=3, ordering="random"), seed=2)
    assert build_plan("partial-gc", MODEL, other).ordering != random.ordering
    t = draws()
    assert plan_mean(random, t) > plan_mean(optimal, t)  # Latin is optimal (spec §2.2)


def plan_mean(plan, t):
    return float(plan.raw_runtime(t).mean())


def test_default_storage_is_what_bcgc_opt_stores():
    plan = build_plan("partial-gc", MODEL, FAST)
    x = build_plan("bcgc-opt", MODEL, FAST).x
    assert plan.storage == int(np.flatnonzero(np.array(x) > 0).max()) + 1
    assert plan.parts == 1 and plan.ordering_name == "optimal"


def test_approximate_stop_rules():
    exact = build_plan("partial-gc", MODEL, options(storage=3))
    approx = build_plan("partial-gc-approx", MODEL, options(storage=3, approx_time=0.6))
    tuning = monte_carlo_cycle_times(LAW, FAST.seed, FAST.tuning_samples, 6, STREAM_TUNING)
    assert approx.deadline == pytest.approx(0.6 * exact.raw_runtime(tuning).mean(), rel=1e-12)
    t = draws()
    full = exact.raw_runtime(t)
    stop = approx.raw_runtime(t)
    np.testing.assert_allclose(stop, np.minimum(full, approx.deadline))
    # the estimated NMSE at the stop is the model's count-based NMSE at that time (spec §1.4)
    a = Assignment.cyclic(6, 3)
    finish = speed_finish_times(t[:50], a.loads, 40.0)
    for k in range(50):
        expected = nmse_at(a, exact.positions, finish[k : k + 1], 1, [stop[k]])[0, 0]
        assert approx.nmse_at_stop(t[k : k + 1])[0] == pytest.approx(expected)
    # an NMSE target stops at the first time the estimate reaches it
    target = dataclasses.replace(exact, nmse_target=0.5)
    stops = target.raw_runtime(t[:50])
    for k in range(50):
        nmse = nmse_at(a, exact.positions, finish[k : k + 1], 1, [stops[k], stops[k] * 0.999999])
        assert nmse[0, 0] <= 0.5 < nmse[0, 1]
    assert "approximate" in approx.describe() and "exact" in exact.describe()


def test_completion_probability_is_the_monte_carlo_cdf():
    plan = build_plan("partial-gc", MODEL, options(storage=3))
    t = monte_carlo_cycle_times(LAW, plan.seed, CDF_SAMPLES, 6, STREAM_EVALUATION)
    raw = plan.raw_runtime(t)
    for q in (0.1, 0.5, 0.9):
        r = float(np.quantile(raw, q))
        assert plan.completion_probability(r, LAW) == pytest.approx(np.mean(raw <= r))
    assert plan.completion_probability(0.0, LAW) == 0.0
    assert plan.completion_probability(1e9, LAW) == 1.0
    assert plan.exact_expected_raw_runtime(LAW) is None


def test_run_json_round_trip():
    for name in ("partial-gc", "partial-gc-approx"):
        plan = build_plan(name, MODEL, options(storage=4, parts=2, ordering="random"))
        back = plan_from_dict(plan_to_dict(plan))
        assert isinstance(back, PartialPlan) and back == plan
        np.testing.assert_array_equal(back.raw_runtime(draws(100)), plan.raw_runtime(draws(100)))


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(storage=7), r"partial.storage \(delta\) must be in 1..6"),
        (dict(storage=2, parts=3), r"partial.parts \(l\) must be in 1..2"),
        (dict(storage=2, ordering="best"), "partial.ordering must be"),
    ],
)
def test_build_errors(opts, match):
    with pytest.raises(UserError, match=match):
        build_plan("partial-gc", MODEL, options(**opts))


@pytest.mark.parametrize(
    "override, match",
    [
        ("partial.storage=9", "partial.storage must be in 0..8"),
        ("partial.parts=0", "partial.parts"),
        ("partial.ordering='best'", "partial.ordering"),
        ("partial.approx_time=0", "partial.approx_time"),
        ("partial.approx_nmse=1.0", "partial.approx_nmse"),
        ("partial.stroage=2", "did you mean 'partial.storage'"),
    ],
)
def test_config_keys_are_validated(override, match):
    with pytest.raises(UserError, match=match):
        load_config(None, [override])


def test_config_reaches_the_plan():
    config = load_config(
        None, ["partial.storage=3", "partial.parts=2", "partial.ordering='random'"]
    )
    assert config.scheme_options().partial == PartialOptions(3, 2, "random", 0.8, 0.0)


# ------------------------------------------------------------------------------------------------
# the worker: chunk gradients, NOTICE / COMBINE / UPLOAD with a scripted master
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ProblemData:
    return prepare_data(
        "least-squares", "synthetic", 60, 40, 0.1, 1, tmp_path_factory.mktemp("data")
    )


def computer(data, order=(1, 2, 3), parts=1):
    return worker_partial.ChunkComputer(data, partition_bounds(60, 6), order, parts, 40.0)


def test_chunk_gradients_sum_to_the_full_gradient(data):
    theta = np.random.default_rng(0).standard_normal(40)
    c = computer(data, order=range(6))
    total = sum(c.gradient(theta, i) for i in range(6))
    np.testing.assert_allclose(total, full_gradient(data, theta)[0], rtol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        computer(data, order=(0, 6))


class ScriptedWorker:
    """What workers.partial needs of a Worker; wait_until plays a script of master messages."""

    def __init__(self, data, script, order=(1, 2, 3), parts=1):
        self.partial = computer(data, order, parts)
        self.run_id, self.rank, self.natural, self.repeat, self.ns_per_load = "r", 4, False, 1, 1.0
        self.script = list(script)
        self.sent: list[tuple[MessageType, dict, np.ndarray | None]] = []

    def begin(self, message):
        return 7, 0, 0, 1.0, np.ones(40)

    def wait_until(self, deadline):
        return self.script.pop(0)

    def send(self, kind, header, array=None):
        self.sent.append((kind, header, array))


def combine(chunks, beta, iteration=7):
    return Message(
        MessageType.COMBINE, {"run": "r", "iteration": iteration, "chunks": chunks}, np.array(beta)
    )


def test_worker_notices_then_uploads_on_combine(data):
    stale = combine([1], [[1.0]], iteration=6)
    worker = ScriptedWorker(data, [None, None, stale, combine([1, 2], [[0.5], [2.0]])])
    assert worker_partial.iterate(worker, None) is None
    kinds = [kind for kind, _, _ in worker.sent]
    assert kinds == [MessageType.NOTICE, MessageType.NOTICE, MessageType.UPLOAD]
    notices = [h for kind, h, _ in worker.sent if kind is MessageType.NOTICE]
    assert [(h["chunk"], h["position"]) for h in notices] == [(1, 1), (2, 2)]
    assert notices[1]["deadline_ns"] == 2 * 40  # t_start + ns_per_load T k L
    c, theta = worker.partial, np.ones(40)
    expected = 0.5 * c.gradient(theta, 1) + 2.0 * c.gradient(theta, 2)
    np.testing.assert_allclose(worker.sent[-1][2], expected, rtol=1e-14)
    assert worker.sent[-1][1]["chunks"] == 2


def test_worker_abandon_interrupt_and_bad_combine(data):
    abandon = Message(MessageType.ABANDON, {"run": "r", "iteration": 7})
    worker = ScriptedWorker(data, [None, abandon])
    assert worker_partial.iterate(worker, None) is None
    assert [k for k, _, _ in worker.sent] == [MessageType.NOTICE]
    interrupt = Message(MessageType.ITERATE, {"run": "r", "iteration": 8}, np.zeros(40))
    assert worker_partial.iterate(ScriptedWorker(data, [interrupt]), None) is interrupt
    worker = ScriptedWorker(data, [None, combine([1, 3], [[1.0], [1.0]])])  # 3 not computed yet
    assert worker_partial.iterate(worker, None) is None
    kind, header, _ = worker.sent[-1]
    assert kind is MessageType.FAILED and "cannot combine" in header["reason"]
    worker = ScriptedWorker(data, [None, combine([1], [[1.0, 2.0]])])  # beta of l = 2
    worker_partial.iterate(worker, None)
    assert worker.sent[-1][0] is MessageType.FAILED and "shape" in worker.sent[-1][1]["reason"]


def test_worker_l2_upload_is_the_coded_block(data):
    worker = ScriptedWorker(data, [None, combine([1], [[1.0, -2.0]])], parts=2)
    worker_partial.iterate(worker, None)
    g = worker.partial.gradient(np.ones(40), 1)
    np.testing.assert_allclose(worker.sent[-1][2], g[:20] - 2.0 * g[20:], rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# the master's session against simulated workers (no sockets: a stand-in for WorkerLink)
# ------------------------------------------------------------------------------------------------
class SimLink:
    """Workers simulated in-process: NOTICEs arrive at exactly the model's times (the injected
    deadlines), COMBINE is answered at once by workers.partial.combine."""

    def __init__(self, n: int, law) -> None:
        self.n, self.law = n, law
        self.peers = PeerTable()  # the real rules of ranks, fed by hand
        self.peers.size = n
        for rank in range(n):
            header = {"rank": rank, "protocol": PROTOCOL_VERSION, "token": f"sim-worker-{rank}"}
            self.peers.register(bytes([rank]), header, "", time.monotonic_ns())
        self.dead = self.peers.dead
        self.rejected = self.peers.rejections.counts
        self.queue: list = []
        self.count = itertools.count()
        self.setups: dict[int, dict] = {}
        self.gradients: dict[int, dict] = {}
        self.sent: list[tuple[int, MessageType]] = []
        self.mute: set[int] = set()  # these ranks never answer COMBINE
        self.forget: set[int] = set()  # these ranks lose their gradients (COMBINE -> FAILED)

    def push(self, at: int, rank: int, kind: MessageType, header: dict, array=None) -> None:
        message = Message(kind, header, array)
        heapq.heappush(self.queue, (at, next(self.count), Received(rank, message, at)))

    def send(self, rank, kind, header, array=None):
        self.sent.append((rank, kind))
        if kind is MessageType.SETUP:
            self.setups[rank] = header
            self.push(time.monotonic_ns(), rank, MessageType.SETUP_OK, {"run": header["run"]})
        elif kind is MessageType.COMBINE and rank not in self.mute:
            worker = _SimWorker(self, rank)
            context = {"start_ns": 0, "received_ns": 0, "cycle_time": 1.0}
            grads = {} if rank in self.forget else self.gradients[rank]
            message = Message(kind, header, array)
            worker_partial.combine(worker, message, header["iteration"], context, grads)
        elif kind is MessageType.ABANDON:
            self.queue = [q for q in self.queue if q[2].rank != rank]
            heapq.heapify(self.queue)

    def broadcast(self, kind, header, theta, ranks):
        assert kind is MessageType.ITERATE
        for rank in ranks:
            setup = self.setups[rank]
            c = worker_partial.ChunkComputer.from_header(ProblemData(**setup["data"]), setup)
            t = float(self.law.sample(worker_rng(setup["seed"], header["iteration"], rank), 1)[0])
            self.gradients[rank] = {i: c.gradient(theta, i) for i in c.order}
            for k, chunk in enumerate(c.order, start=1):
                due = header["sent_ns"] + round(setup["ns_per_load"] * t * c.chunk_load * k)
                h = {
                    "run": setup["run"], "iteration": header["iteration"], "worker": rank,
                    "chunk": chunk, "position": k, "cycle_time": t, "start_ns": header["sent_ns"],
                    "received_ns": header["sent_ns"], "deadline_ns": due,
                    "overrun_ns": 0, "send_ns": due,
                }  # fmt: skip
                self.push(due, rank, MessageType.NOTICE, h)

    def receive(self, timeout_ms):
        end = time.monotonic_ns() + timeout_ms * 1_000_000
        while True:
            now = time.monotonic_ns()
            if self.queue and self.queue[0][0] <= now:
                received = heapq.heappop(self.queue)[2]
                if received.rank in self.dead:
                    continue  # as WorkerLink: a dead rank is never heard again
                return received
            if now >= end:
                return None
            nxt = self.queue[0][0] if self.queue else end
            time.sleep(max(0, min(nxt, end) - now) / 1e9)

    def check_liveness(self, exited, heartbeat_s, liveness):
        return self.peers.judge(time.monotonic_ns(), exited, 1 << 62, 1)  # deaths by exit only

    def reject(self, reason, source, detail=""):
        self.peers.rejections.add(reason, f"worker {source}", detail)


class _SimWorker:
    def __init__(self, link: SimLink, rank: int) -> None:
        self.link, self.rank = link, rank
        self.run_id = link.setups[rank]["run"]
        setup = link.setups[rank]
        self.partial = worker_partial.ChunkComputer.from_header(ProblemData(**setup["data"]), setup)

    def send(self, kind, header, array=None):
        self.link.push(time.monotonic_ns(), self.rank, kind, header, array)


def sim_session(data, tmp_path, plan, dead=lambda: set(), time_scale=4e-5):
    model = SystemModel(6, 40, 60, 1.0, LAW)
    link = SimLink(6, LAW)
    settings = SessionSettings(seed=1, time_scale=time_scale, check=True, learning_rate=0.0)
    recorder = RunRecorder(tmp_path / plan.scheme)
    session = PartialSession(link, plan.scheme, plan, model, data, settings, recorder, dead)
    session.setup(5.0)
    return session, link, recorder


def partial_rows(recorder):
    recorder.flush()
    with open(recorder.folder / "partial.csv") as handle:
        return list(csv.DictReader(handle))


def test_session_exact_stop_decodes_the_gradient(data, tmp_path):
    plan = build_plan("partial-gc", MODEL, options(storage=3))
    session, link, recorder = sim_session(data, tmp_path, plan)
    theta = np.random.default_rng(1).standard_normal(40)
    for iteration in range(3):
        result, gradient = session.iterate(iteration, theta)
        np.testing.assert_allclose(gradient, full_gradient(data, theta)[0], rtol=1e-12)
        assert result.gradient_rel_error <= 1e-12 and result.nmse < 1e-24
        assert result.measured_s >= result.predicted_s > 0
        assert result.round_trip_s == pytest.approx(result.measured_s - (
            float(partial_rows(recorder)[-1]["stop_s"])), abs=1e-6)  # fmt: skip
    rows = partial_rows(recorder)
    assert [r["stop_reason"] for r in rows] == ["exact"] * 3
    for r in rows:  # the master stops at the model's time, give or take the loop's latency
        assert 0 <= float(r["stop_s"]) - float(r["predicted_s"]) < 0.02  # (sleeps oversleep)
        assert r["nmse_estimated"] == r["nmse_predicted"] == "0.0"
    combined = {rank for rank, kind in link.sent if kind is MessageType.COMBINE}
    abandoned = {rank for rank, kind in link.sent if kind is MessageType.ABANDON}
    assert combined and combined | abandoned == set(range(6))


def test_session_deadline_and_nmse_stops(data, tmp_path):
    approx = build_plan("partial-gc-approx", MODEL, options(storage=3, approx_time=0.6))
    session, _, recorder = sim_session(data, tmp_path, approx)
    theta = np.zeros(40)
    for iteration in range(6):
        session.iterate(iteration, theta)
    rows = partial_rows(recorder)
    deadline_s = approx.deadline * MODEL.scale * 4e-5
    for r in rows:
        if r["stop_reason"] == "deadline":  # never before it; well within one 50 ms poll after
            # (a sleep on a loaded 2-core VM overslept by 10 ms once in CI)
            assert 0 <= float(r["stop_s"]) - deadline_s < 0.02
        else:
            assert r["stop_reason"] == "exact" and float(r["stop_s"]) < deadline_s
    assert {r["stop_reason"] for r in rows} >= {"deadline"}
    same = [float(r["nmse_estimated"]) == float(r["nmse_predicted"]) for r in rows]
    assert sum(same) >= 5  # notices arrive at the model's times: the same copies are counted
    assert all(float(r["nmse"]) <= 1 for r in rows)
    target = dataclasses.replace(approx, scheme="nmse-target", deadline=None, nmse_target=0.5)
    session, _, recorder = sim_session(data, tmp_path, target)
    session.iterate(0, theta)
    (row,) = partial_rows(recorder)
    assert row["stop_reason"] == "nmse" and float(row["nmse_estimated"]) <= 0.5


def test_session_drops_a_worker_that_dies_before_the_stop(data, tmp_path):
    plan = build_plan("partial-gc", MODEL, options(storage=3))
    died: set[int] = set()
    session, link, _ = sim_session(data, tmp_path, plan, dead=lambda: died)
    original = link.receive

    def receive(timeout_ms):  # worker 2 dies with its first NOTICE
        received = original(timeout_ms)
        if (
            received is not None
            and received.rank == 2
            and received.message.kind is MessageType.NOTICE
        ):
            died.add(2)
        return received

    link.receive = receive
    result, _ = session.iterate(0, np.zeros(40))
    assert result.gradient_rel_error <= 1e-12
    assert 2 not in {rank for rank, kind in link.sent if kind is MessageType.COMBINE}
    assert [e["event"] for e in session.events] == ["died"]
    alone = build_plan("partial-gc", MODEL, options(storage=1))
    session, _, _ = sim_session(data, tmp_path / "alone", alone, dead=lambda: {4})
    with pytest.raises(RunError, match=r"chunk 4 can get only 0 of the l = 1"):
        session.iterate(0, np.zeros(40))


def test_session_ends_with_a_run_error_when_an_upload_cannot_come(data, tmp_path):
    plan = build_plan("partial-gc", MODEL, options(storage=3))
    died: set[int] = set()
    session, link, _ = sim_session(data, tmp_path, plan, dead=lambda: died)
    link.mute = set(range(6))  # nobody uploads; then the chosen ones die
    original = link.send

    def send(rank, kind, header, array=None):
        original(rank, kind, header, array)
        if kind is MessageType.COMBINE:
            died.add(rank)

    link.send = send
    with pytest.raises(RunError, match=r"died after the stop and before uploading; variant R1"):
        session.iterate(0, np.zeros(40))
    session, link, _ = sim_session(data, tmp_path / "again", plan)
    link.forget = {0, 1, 2, 3, 4, 5}
    with pytest.raises(RunError, match=r"failed: cannot combine"):
        session.iterate(0, np.zeros(40))
