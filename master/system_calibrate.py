"""Measure the system model's costs on this machine (the `bcgc calibrate` steps behind
bcgc_sim/model/costs.py).

1. Kernels: the worker's own numpy calls (forward pass z = X theta with the loss derivative,
   and a block's X[rows, block]^T r) timed on one BLAS thread at the configured M x L, for
   several row counts and widths; a least-squares line per kernel gives the cost per row x
   coordinate and per call. Data larger than the last-level cache is timed cold (a buffer is
   streamed between calls), as it is when N workers take turns on a core.
2. Decoding: the master's decoder (a_F by least squares, then the weighted sum) timed on the
   CodeBook of this N.
3. Messages and cores: the per-message CPU of a worker and of the master, and the latency, are
   fitted so that the model reproduces two natural runs of the testbed (uncoded, and a probe plan
   with one block per level), taken per block from messages.csv (Nelder-Mead on log errors).
4. Per-worker laws: each worker's compute multiplier per iteration in the uncoded run,
   (measured send - modelled send) / modelled compute + 1, fitted per worker by a shifted
   exponential (unbiased MLE).
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
from scipy import optimize

from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.costs import SystemCosts
from bcgc_sim.model.machine import Machine, simulate
from bcgc_sim.model.plans import Plan
from bcgc_sim.model.work import plan_work
from bcgc_sim.problems import loss_derivative

CACHE_BYTES = 16 << 20  # data above this is timed cold (measured: the per-element cost triples)


def _median_time(call, reps: int, flush: np.ndarray | None) -> float:
    times = []
    for _ in range(reps):
        if flush is not None:
            flush += 1.0  # stream a buffer larger than the cache
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_kernels(rows: int, coordinates: int, n_workers: int, seed: int = 0) -> dict[str, float]:
    """Per-element and per-call seconds of the forward pass and of a block's derivatives."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, coordinates))
    y = rng.standard_normal(rows)
    theta = rng.standard_normal(coordinates)
    flush = np.zeros(2 * CACHE_BYTES // 8) if x.nbytes > CACHE_BYTES else None
    counts = sorted({max(1, rows // n_workers), max(1, rows // 2), rows})
    widths = sorted({max(1, coordinates // n_workers), max(1, coordinates // 2), coordinates})
    forward, derivative = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for r in counts:
            t = _median_time(
                lambda r=r: loss_derivative("least-squares", x[:r] @ theta, y[:r]), 15, flush
            )
            forward.append((r * coordinates, r, t))
            residual = x[:r] @ theta - y[:r]
            for w in widths:
                t = _median_time(lambda r=r, w=w, res=residual: x[:r, :w].T @ res, 15, flush)
                derivative.append((r * w, t))
    f = np.array(forward)
    (a_f, c_f), *_ = np.linalg.lstsq(
        np.column_stack([f[:, 0], np.ones(len(f))]), f[:, 2], rcond=None
    )
    d = np.array(derivative)
    (a_d, c_d), *_ = np.linalg.lstsq(
        np.column_stack([d[:, 0], np.ones(len(d))]), d[:, 1], rcond=None
    )
    return {
        "forward_element_s": max(float(a_f), 0.0),
        "forward_call_s": max(float(c_f), 0.0),
        "derivative_element_s": max(float(a_d), 0.0),
        "derivative_call_s": max(float(c_d), 0.0),
    }


def measure_decode(n_workers: int, coordinates: int, seed: int = 1) -> dict[str, float]:
    """Seconds of one coded block's decode (a_F, uncached) and per coordinate x message."""
    rng = np.random.default_rng(seed)
    codes = CodeBook(n_workers, seed)
    codes.decoder(1, list(range(n_workers - 1)))  # first call: library set-up, not counted
    fixed = []
    for _ in range(5):
        for s in range(1, n_workers):
            fastest = sorted(rng.choice(n_workers, n_workers - s, replace=False).tolist())
            fresh = CodeBook(n_workers, seed) if (s, tuple(fastest)) in codes._decoders else codes
            fresh.matrix(s)
            start = time.perf_counter()
            fresh.decoder(s, fastest)
            fixed.append(time.perf_counter() - start)
    rows = rng.standard_normal((n_workers, coordinates))
    weights = rng.standard_normal(n_workers)
    start = time.perf_counter()
    for _ in range(20):
        weights @ rows
    per_element = (time.perf_counter() - start) / 20 / (n_workers * coordinates)
    return {"decode_s": float(np.median(fixed)), "decode_element_s": float(per_element)}


def measured_blocks(folder: Path, scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(runtime per iteration, mean send time per (worker, slot), mean taken time per (worker,
    slot)) of one scheme of a natural run: seconds from the broadcast."""
    with open(folder / "iterations.csv") as handle:
        runtime = np.array(
            [float(r["measured_s"]) for r in csv.DictReader(handle) if r["scheme"] == scheme]
        )
    sent: dict[tuple[int, int], list[float]] = {}
    taken: dict[tuple[int, int], list[float]] = {}
    with open(folder / "messages.csv") as handle:
        for r in csv.DictReader(handle):
            if r["scheme"] != scheme or r["status"] not in ("used", "late"):
                continue
            key = (int(r["worker"]), int(r["slot"]))
            sent.setdefault(key, []).append(float(r["send_s"]))
            taken.setdefault(key, []).append(float(r["arrival_s"]))
    workers = 1 + max(k[0] for k in sent)
    slots = 1 + max(k[1] for k in sent)
    mean_sent = np.full((workers, slots), np.nan)
    mean_taken = np.full((workers, slots), np.nan)
    for (w, k), values in sent.items():
        mean_sent[w, k] = np.mean(values)
        mean_taken[w, k] = np.mean(taken[(w, k)])
    return runtime, mean_sent, mean_taken


def _model_trace(
    plan: Plan, rows: int, coordinates: int, costs: SystemCosts, machine: Machine, n_iter: int
):
    work = plan_work(plan, rows, coordinates, costs)
    rng = np.random.default_rng(7)
    multipliers = costs.cycle_times(rng, (n_iter, plan.n_workers))
    return simulate(work, costs, machine, multipliers, None, rng)


def fit_messages(
    runs: list[tuple[Plan, Path, str]],
    rows: int,
    coordinates: int,
    base: SystemCosts,
    machine: Machine,
    iterations: int = 60,
) -> SystemCosts:
    """Worker per-message CPU, master per-message CPU and latency that make the model fit the
    natural runs (plan, folder, scheme): log errors of the mean runtime and of every block's
    mean taken time."""
    targets = [measured_blocks(folder, scheme) for _, folder, scheme in runs]

    def costs_of(p: np.ndarray) -> SystemCosts:
        worker, master, latency = np.exp(p)
        return base.with_updates(
            send_s=worker,
            receive_s=worker,
            master_receive_s=master,
            latency_s=latency / 2,
            latency_spread_s=latency / 2,
        )

    def loss(p: np.ndarray) -> float:
        costs = costs_of(p)
        total = 0.0
        for (plan, _, _), (runtime, _, taken) in zip(runs, targets, strict=True):
            trace = _model_trace(plan, rows, coordinates, costs, machine, iterations)
            model_runtime = np.mean(trace.runtime[2:])
            model_taken = np.nanmean(trace.taken[2:], axis=0)
            total += 4 * np.log(model_runtime / runtime.mean()) ** 2
            ok = np.isfinite(taken) & np.isfinite(model_taken) & (taken > 0) & (model_taken > 0)
            total += float(np.mean(np.log(model_taken[ok] / taken[ok]) ** 2)) if ok.any() else 0.0
        return total

    start = np.log([40e-6, 30e-6, 100e-6])
    result = optimize.minimize(
        loss, start, method="Nelder-Mead", options={"maxfev": 90, "xatol": 0.02, "fatol": 1e-4}
    )
    return costs_of(result.x)


def fit_worker_laws(
    plan: Plan, folder: Path, rows: int, coordinates: int, costs: SystemCosts, machine: Machine
) -> SystemCosts:
    """Per-worker shifted-exponential compute multipliers from an uncoded natural run: each
    iteration's measured send over the modelled mean send (T = 1), per worker."""
    _, mean_sent, _ = measured_blocks(folder, plan.scheme)
    trace = _model_trace(plan, rows, coordinates, costs, machine, 40)
    model_sent = np.nanmean(trace.sent[2:, :, 0], axis=0)
    with open(folder / "messages.csv") as handle:
        rows_ = [
            r
            for r in csv.DictReader(handle)
            if r["scheme"] == plan.scheme and r["status"] in ("used", "late")
        ]
    shifts, rates = [], []
    for w in range(plan.n_workers):
        sends = np.array([float(r["send_s"]) for r in rows_ if int(r["worker"]) == w])
        factor = sends / model_sent[w]
        n = factor.size
        if n < 3 or np.ptp(factor) == 0:
            shifts.append(1.0)
            rates.append(1e6)
            continue
        theta = n * (factor.mean() - factor.min()) / (n - 1)
        shifts.append(float(max(factor.min() - theta / n, 0.0)))
        rates.append(float(1.0 / max(theta, 1e-9)))
    return costs.with_updates(law_shift=tuple(shifts), law_rate=tuple(rates))


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
