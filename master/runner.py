"""`bcgc run`: every configured scheme on one local cluster, under the same seeded stragglers.

Iteration i of every scheme uses the same T_n draws (keyed by seed, i, n): common random
numbers across schemes. Results are written as they come (bcgc_sim.results).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bcgc_sim.config import Config
from bcgc_sim.errors import UserError
from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.system import SystemModel
from bcgc_sim.partial.plan import PartialPlan
from bcgc_sim.prediction import evaluation_samples, monte_carlo_need
from bcgc_sim.problems import (
    MemoryNeed,
    ProblemData,
    check_memory,
    data_folder,
    data_shape,
    generation_need,
    loss_at,
    prepare_data,
    step_size,
)
from bcgc_sim.results import RunRecorder, WriteError, environment, writing
from bcgc_sim.schemes import build_plan, plan_to_dict

from .bcgc_session import SchemeSession
from .cluster import WORKER_MEMORY_BYTES, LocalCluster, check_capacity
from .partial_session import PartialSession
from .settings import SessionSettings


@dataclass(frozen=True)
class SchemeSummary:
    scheme: str
    iterations: int
    measured_mean_s: float
    predicted_mean_s: float
    ratio: float  # of the means
    median_ratio: float  # of the per-iteration ratios
    final_loss: float
    gradient_max_rel_error: float | None
    stale_messages: int
    overruns: int
    nmse_mean: float | None = None  # partial-gc: mean measured ||g_hat - g||^2 / ||g||^2
    round_trip_mean_s: float | None = None  # partial-gc: mean COMBINE / UPLOAD round trip


@dataclass
class PhaseClock:
    """Wall seconds of each phase of a run, in the order they ran (run.json "phases_s").

    `mark(name)` charges the time since the previous mark (or the start) to `name`; a name
    marked again (one set-up per scheme) adds up. Monotonic clock."""

    seconds: dict[str, float] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    def text(self) -> str:
        """'data set 2.1 s, step size 0.3 s, ...'"""
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())


MODEL_SAMPLES = 20_000  # draws of T behind the time scale's choice (choose_time_scale)


def output_folder(config: Config) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.run.output) / f"run-{stamp}-{os.getpid()}"


def data_dir(config: Config) -> Path:
    """problem.data_dir, else <run.output>/data."""
    return Path(config.problem.data_dir or Path(config.run.output) / "data")


def prepare_problem(config: Config) -> ProblemData:
    p, m = config.problem, config.model
    return prepare_data(
        p.kind, p.dataset, m.samples, m.coordinates, p.noise, config.seed, data_dir(config)
    )


def check_run_memory(config: Config, local: bool = True) -> None:
    """Refuse, before anything is allocated, a run this machine has no memory for: generating
    its data set (unless it is on disk already), then the run itself (the master's message
    buffers, the local worker processes if `local`, the runtime model's Monte Carlo draws).
    Remote workers ('bcgc master') need no memory here."""
    p, m, n = config.problem, config.model, config.cluster.workers
    rows, coordinates = data_shape(p.dataset, m.samples, m.coordinates)
    where = data_folder(
        p.kind, p.dataset, m.samples, m.coordinates, p.noise, config.seed, data_dir(config)
    )
    if not (where / "X.npy").exists():
        check_memory([generation_need(p.dataset, rows, coordinates)], "generating the data set")
    needs = [
        MemoryNeed(
            f"the master's message buffers ({n + 8} x {coordinates} float64)",
            8 * (n + 8) * coordinates, "lower model.coordinates or cluster.workers",
        ),
        monte_carlo_need(
            n, max(MODEL_SAMPLES, config.optimize.tuning_samples), list(config.run.schemes),
            config.partial.parts,
        ),
    ]  # fmt: skip
    if local:
        needs.append(
            MemoryNeed(
                f"{n} local worker processes", n * (WORKER_MEMORY_BYTES + 32 * coordinates),
                "lower cluster.workers (or model.coordinates)",
            )
        )  # fmt: skip
    check_memory(needs, "this run")


def model_for_data(config: Config, data: ProblemData) -> SystemModel:
    """The model the testbed realises: L and M are those of the data set."""
    return config.system_model(data.coordinates, data.rows)


def choose_time_scale(config: Config, model: SystemModel, plans: dict) -> float:
    """run.time_scale, or (if 0) the scale at which the schemes' mean E[tau] is run.iteration_seconds.

    In natural mode nothing is injected and cycle times are read in seconds: the scale is 1.
    Under full stragglers E[tau] is infinite; the mean over the draws where the plan decodes
    (tau finite) is used instead.
    """
    if config.run.time_scale > 0:
        return config.run.time_scale
    if config.run.mode == "natural":
        return 1.0
    samples = evaluation_samples(model, config.seed, MODEL_SAMPLES)
    means = []
    for plan in plans.values():
        raw = plan.raw_runtime(samples)
        raw = raw[np.isfinite(raw)]
        if raw.size:
            means.append(float(raw.mean()) * model.scale)
    if not means:
        raise UserError(
            "no scheme ever decodes under this straggler law: set run.time_scale by hand"
        )
    return config.run.iteration_seconds / float(np.mean(means))


def local_cluster_factory(config: Config, folder: Path):
    """A LocalCluster of config.cluster.workers processes on this machine (plus burners)."""
    burners = config.natural.burners if config.run.mode == "natural" else ()
    p, m = config.problem, config.model
    _, coordinates = data_shape(p.dataset, m.samples, m.coordinates)
    return lambda: LocalCluster(
        config.cluster.workers, config.run.startup_timeout, folder / "logs", burners,
        message_limit(coordinates), config.cluster.heartbeat, config.cluster.liveness,
        config.cluster.transport,
    )  # fmt: skip


def message_limit(coordinates: int) -> int:
    """ZMQ_MAXMSGSIZE for the master: the largest legitimate message (a slot of L float64 values
    plus its header) with a margin; anything larger disconnects its sender."""
    return 8 * coordinates + (1 << 20)


def max_message_bytes(data: ProblemData) -> int:
    """message_limit for the L of `data`."""
    return message_limit(data.coordinates)


def emulated_plans(config: Config, plans: dict, data: ProblemData, costs) -> dict:
    """run.cost_model = "system": {name: (EmulatedPlan, Layout)} whose deadlines follow the
    calibrated costs (bcgc_sim/model/emulation.py); empty for the papers' cost model."""
    if config.run.cost_model != "system":
        return {}
    if costs is None:
        raise UserError(
            "run.cost_model = 'system' needs the machine's costs: pass --calibration FILE "
            "(written by 'bcgc calibrate')"
        )
    from bcgc_sim.model.emulation import emulate

    scale = model_for_data(config, data).scale
    out = {}
    for name, plan in plans.items():
        if isinstance(plan, PartialPlan):
            raise UserError(
                f"{name}: run.cost_model = 'system' covers block plans and Tandon's scheme, "
                "not the partial-straggler protocol"
            )
        out[name] = emulate(plan, data.rows, data.coordinates, costs, scale)
    return out


class _MasterLog(logging.FileHandler):
    """logs/master.log. A line that cannot be written (disk full) is dropped without a word:
    the run's own records report the failed write."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def _master_log(folder: Path) -> logging.Handler:
    path = folder / "logs" / "master.log"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _MasterLog(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("bcgc.master")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    return handler


def run_testbed(
    config: Config, folder: Path, log=print, cluster_factory=None, plans=None, costs=None
) -> list[SchemeSummary]:
    """Every scheme of config.run.schemes on one cluster; results written into `folder`.

    `cluster_factory()` gives a context manager with `.link`, `.dead_ranks()` and
    `.respawn(rank)`: a LocalCluster by default, a RemoteCluster for `bcgc master`.
    `plans(model)` -> {name: plan}, if given, replaces the plans of config.run.schemes (scripts
    that run plans outside the registry, e.g. scripts/compare_partial_testbed.py).
    `costs` (a calibration, bcgc_sim.model.costs) lets the system-model schemes be planned
    and run.cost_model = "system" be emulated.

    Before any work: a run this machine cannot hold is refused (check_run_memory, and for a
    local cluster check_capacity), and so is a folder another run is writing into (its lock).
    From then on run.json says how the run ended: completed, interrupted, or failed with the
    reason (a failed write included: bcgc_sim.results).
    """
    local = cluster_factory is None
    if local:
        check_capacity(config.cluster.workers)  # refuse an N this machine cannot run
    check_run_memory(config, local)
    recorder = RunRecorder(folder)
    meta = {
        "config": asdict(config),
        "seed": config.seed,
        **environment(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "status": "preparing",
        "summaries": {},
        "worker_cpu_affinity": {},
        "worker_events": [],
        "rejected_messages": {},
    }
    summaries: list[SchemeSummary] = []
    handler = None
    phases = PhaseClock()
    meta["phases_s"] = phases.seconds
    started = None  # a cluster started before its with block: closed here on an error
    try:
        handler = _master_log(folder)
        recorder.write_metadata(meta)
        cluster = (cluster_factory or local_cluster_factory(config, folder))()
        if hasattr(cluster, "start"):  # local workers load while the data set is prepared
            cluster.start()
            started = cluster
        phases.mark("worker launch")
        data = prepare_problem(config)
        phases.mark("data set")
        model = model_for_data(config, data)
        if plans is None:
            plans = {
                name: build_plan(name, model, config.scheme_options(costs))
                for name in config.run.schemes
            }
        else:
            plans = dict(plans(model))
        emulated = emulated_plans(config, plans, data, costs)
        time_scale = choose_time_scale(
            config, model, {name: emulated.get(name, (plan,))[0] for name, plan in plans.items()}
        )
        phases.mark("plans")
        rate = config.problem.learning_rate or step_size(data)
        phases.mark("step size")
        settings = SessionSettings(
            config.seed, time_scale, config.run.check, rate, config.cluster.pin,
            natural=config.run.mode == "natural", repeat=config.natural.slowdown,
            heartbeat_s=config.cluster.heartbeat, liveness=config.cluster.liveness,
            on_failure=config.cluster.on_failure, replace_timeout_s=config.cluster.replace_timeout,
            stall_timeout_s=config.cluster.stall_timeout,
        )  # fmt: skip
        meta.update(
            time_scale_s_per_unit=time_scale, learning_rate=rate, data=data.to_header(),
            plans={name: plan_to_dict(plan) for name, plan in plans.items()}, status="running",
        )  # fmt: skip
        if emulated:  # the system model's slot loads (raw units), for validation
            meta["slot_loads"] = {name: list(e.loads) for name, (e, _) in emulated.items()}
        recorder.write_metadata(meta)
        codes = CodeBook(model.n_workers, config.seed)
        # The master's own BLAS calls (loss, check gradient, decoding) use one thread while
        # workers run: idle BLAS threads spin after each call on the cores the workers need
        # (iterations took about 15% longer at N = 8, L = 1e5 on 2 cores).
        with threadpool_limits(limits=1, user_api="blas"), cluster:
            phases.mark("worker start-up")
            for name, plan in plans.items():
                log(f"{name}: {config.run.iterations} iterations on {model.n_workers} workers ...")
                if isinstance(plan, PartialPlan):
                    session = PartialSession(
                        cluster.link, name, plan, model, data, settings, recorder,
                        cluster.dead_ranks, cluster.respawn,
                    )  # fmt: skip
                else:
                    run_plan, layout = emulated.get(name, (plan, layout_for(plan, data.rows)))
                    session = SchemeSession(
                        cluster.link, name, run_plan, layout, model, data, codes,
                        settings, recorder, cluster.dead_ranks, cluster.respawn,
                    )  # fmt: skip
                try:  # deaths and rejections of the set-up are recorded too
                    session.setup(config.run.startup_timeout)
                    phases.mark("set-up")
                    meta["worker_cpu_affinity"] = {
                        str(k): v for k, v in sorted(session.affinity.items())
                    }
                    summary = _run_iterations(session, config.run.iterations, data, rate)
                    phases.mark("iterations")
                finally:
                    session.release()
                    meta["worker_events"] += [{"scheme": name, **e} for e in session.events]
                    meta["rejected_messages"] = dict(cluster.link.rejected)
                summaries.append(summary)
                meta["summaries"][name] = asdict(summary)
                recorder.write_metadata(meta)
        phases.mark("shutdown")
        log(f"phases: {phases.text()}")
        meta["status"] = "completed"
    except BaseException as exc:
        if started is not None:
            started.close()  # no-op once the with block closed it
        meta["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {exc}"
        _finish(recorder, meta, handler, report=False)
        raise
    _finish(recorder, meta, handler, report=True)
    return summaries


def _finish(recorder: RunRecorder, meta: dict, handler, report: bool) -> None:
    """Close the run's records (run.json from `meta`) and its log. A failed last write is
    raised if `report`, else dropped: the run already ends with its own error."""
    meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    try:
        recorder.close(meta)
    except WriteError:
        if report:
            raise
    finally:
        if handler is not None:
            logging.getLogger("bcgc.master").removeHandler(handler)
            handler.close()


def _run_iterations(
    session: SchemeSession | PartialSession, iterations: int, data: ProblemData, rate: float
) -> SchemeSummary:
    theta = np.zeros(data.coordinates)
    results = []
    for iteration in range(iterations):
        result, gradient = session.iterate(iteration, theta)
        results.append(result)
        theta = theta - rate * gradient / data.rows
    final = loss_at(data, theta)
    measured = np.array([r.measured_s for r in results])
    predicted = np.array([r.predicted_s for r in results])
    errors = [r.gradient_rel_error for r in results if r.gradient_rel_error is not None]
    nmse = [r.nmse for r in results if r.nmse is not None]
    trips = [r.round_trip_s for r in results if r.round_trip_s is not None]
    return SchemeSummary(
        scheme=session.scheme,
        iterations=iterations,
        measured_mean_s=float(measured.mean()),
        predicted_mean_s=float(predicted.mean()),
        ratio=float(measured.mean() / predicted.mean()),
        median_ratio=float(np.median(measured / predicted)),
        final_loss=final / data.rows,
        gradient_max_rel_error=max(errors) if errors else None,
        stale_messages=sum(r.stale for r in results),
        overruns=sum(r.overruns for r in results),
        nmse_mean=float(np.mean(nmse)) if nmse else None,
        round_trip_mean_s=float(np.mean(trips)) if trips else None,
    )


def print_summaries(summaries: list[SchemeSummary], folder: Path, out=sys.stdout) -> None:
    partial = any(s.round_trip_mean_s is not None for s in summaries)  # partial-gc columns
    width = max([14, *(len(s.scheme) for s in summaries)])
    header = (
        f"{'scheme':<{width}} {'iters':>5} {'measured s':>11} {'predicted s':>12} {'ratio':>7} "
        f"{'median r':>8} {'final loss':>11} {'grad err':>9}"
    ) + (f" {'round trip ms':>13} {'NMSE':>8}" if partial else "")
    print(header, file=out)
    print("-" * len(header), file=out)
    for s in summaries:
        err = f"{s.gradient_max_rel_error:.1e}" if s.gradient_max_rel_error is not None else "-"
        extra = ""
        if partial:
            trip = f"{1e3 * s.round_trip_mean_s:.2f}" if s.round_trip_mean_s is not None else "-"
            nmse = f"{s.nmse_mean:.1e}" if s.nmse_mean is not None else "-"
            extra = f" {trip:>13} {nmse:>8}"
        print(
            f"{s.scheme:<{width}} {s.iterations:>5} {s.measured_mean_s:>11.4f} {s.predicted_mean_s:>12.4f} "
            f"{s.ratio:>7.3f} {s.median_ratio:>8.3f} {s.final_loss:>11.5g} {err:>9}{extra}",
            file=out,
        )
    if partial:
        print(
            "partial-gc: predicted = the model's stop time for the same T; measured adds the "
            "COMBINE/UPLOAD round trip; NMSE = mean ||g_hat - g||^2 / ||g||^2 (partial.csv)",
            file=out,
        )
    print(f"results: {folder}", file=out)
