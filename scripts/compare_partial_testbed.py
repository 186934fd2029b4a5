"""BCGC vs the partial-straggler protocol vs the original GC, measured on the testbed (spec §5.3).

The fair setting of spec/partial-gc.md §5.3: N workers, m = N data partitions, cyclic storage of
delta partitions per worker for every storage-limited scheme, one work unit = one partition's
full gradient (raw load L), uploads of L floats (l = 1; l = 2 uploads L / 2), the same seeded
stragglers T_j = t0 + Exp(mu) (common random numbers: iteration i of every scheme uses the same
T). Runs on one local cluster:
  original-gc             Tandon et al.'s cyclic repetition code, s = delta - 1 (one message
                          after all delta partitions; BlockPlan x = L e_{delta-1})
  bcgc-capped             BCGC restricted to redundancy levels 0..delta-1 (storage delta),
                          fitted on tuning draws (bcgc_sim.comparison.fit_capped_bcgc)
  bcgc-opt                BCGC as published (levels up to N - 1: storage up to N), reference
  tandon                  the repository's Tandon partial-straggler scheme (alpha = 6), reference
  partial-gc[/random]     the partial-straggler protocol, R1, l = 1, Latin or random order
  partial-gc/l2[/random]  the same with l = 2
  partial-gc-approx/F     approximate: stop at F x E[time to the exact gradient], Latin order
and prints, per scheme, the measured mean time beside the prediction for the same T and the
model's expectation (Monte Carlo, 20000 draws), in seconds and in chunk units (one partition's
gradient at unit cycle time: the unit of scripts/compare_partial_gc.py), the COMBINE/UPLOAD round
trip, and for the approximate runs the error. Writes partial_testbed.png (and .pdf) and
summary.json to --out (the run folder is --out/run; `bcgc validate --from --out/run` works on it).

    python scripts/compare_partial_testbed.py --out results/partial_testbed
    python scripts/compare_partial_testbed.py --quick --out /tmp/pt
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from bcgc_sim.comparison import fair_comparison, fit_capped_bcgc
from bcgc_sim.config import load_config
from bcgc_sim.model.plans import BlockPlan
from bcgc_sim.model.stragglers import monte_carlo_cycle_times
from bcgc_sim.model.streams import STREAM_EVALUATION
from bcgc_sim.partial.assignment import Assignment, positions
from bcgc_sim.partial.original_gc import original_nmse_at, tandon_code
from bcgc_sim.partial.plan import PartialPlan
from bcgc_sim.partial.timing import expected_nmse, speed_finish_times
from bcgc_sim.predict import evaluation_samples
from bcgc_sim.schemes import build_plan, plan_from_dict
from bcgc_sim.style import PAGE_IN, new_figure, save_figure, scheme_colour, styled
from master.runner import run_testbed


def build_plans(config, storage: int, budgets: list[float]):
    """plans(model) for run_testbed: every scheme of the comparison at storage delta."""
    options = config.scheme_options()

    def partial(model, name, scheme, **knobs):
        q = dataclasses.replace(options.partial, storage=storage, **knobs)
        plan = build_plan(scheme, model, dataclasses.replace(options, partial=q))
        return dataclasses.replace(plan, scheme=name)

    def plans(model):
        n, length = model.n_workers, model.coordinates
        out = {
            "original-gc": BlockPlan(
                "original-gc", tuple(length if k == storage - 1 else 0 for k in range(n))
            ),
            "bcgc-capped": dataclasses.replace(
                fit_capped_bcgc(
                    n, storage, model.distribution, length, config.seed, options.optimizer
                ),
                scheme="bcgc-capped",
            ),
            "bcgc-opt": build_plan("bcgc-opt", model, options),
            "tandon": build_plan("tandon", model, options),
            "partial-gc": partial(model, "partial-gc", "partial-gc"),
            "partial-gc/random": partial(
                model, "partial-gc/random", "partial-gc", ordering="random"
            ),
        }
        if storage >= 2:
            out["partial-gc/l2"] = partial(model, "partial-gc/l2", "partial-gc", parts=2)
            out["partial-gc/l2/random"] = partial(
                model, "partial-gc/l2/random", "partial-gc", parts=2, ordering="random"
            )
        for f in budgets:
            name = f"partial-gc-approx/{f:g}"
            out[name] = partial(model, name, "partial-gc-approx", approx_time=f)
        return out

    return plans


def storage_of(plan) -> float:
    """Partitions' worth of data each worker stores."""
    if isinstance(plan, PartialPlan):
        return plan.storage
    if isinstance(plan, BlockPlan):
        return int(np.flatnonzero(np.array(plan.x) > 0).max()) + 1
    # Tandon's partial-straggler scheme: a fraction alpha (s+1) / ((s + alpha) N) of the data
    s, alpha = plan.stragglers, plan.alpha
    return round(alpha * (s + 1) / (s + alpha), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--storage", type=int, default=3, help="delta, partitions per worker")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=0.1, help="target mean iteration (s)")
    parser.add_argument("--coordinates", type=int, default=400)
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--rate", type=float, default=1.0, help="mu of T = t0 + Exp(mu)")
    parser.add_argument("--shift", type=float, default=1.0, help="t0 of T = t0 + Exp(mu)")
    parser.add_argument("--budgets", default="0.4,0.6,0.8,1.0,1.5", help="approx_time fractions")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="N = 5, 6 iterations")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.iterations, args.seconds = 5, 6, 0.03
        args.coordinates, args.samples, args.budgets = 60, 200, "0.5,1.0"
    budgets = [float(v) for v in args.budgets.split(",") if v]
    folder = args.out / "run"
    config = load_config(
        None,
        [
            f"seed={args.seed}",
            f"cluster.workers={args.workers}",
            f"model.coordinates={args.coordinates}",
            f"model.samples={args.samples}",
            f"straggler.rate={args.rate!r}",
            f"straggler.shift={args.shift!r}",
            f"run.iterations={args.iterations}",
            f"run.iteration_seconds={args.seconds!r}",
            "run.check=true",
            f"run.output='{args.out}'",
            f"partial.storage={args.storage}",
        ],
    )
    law = config.distribution()
    print(
        f"N = m = {args.workers}, cyclic storage delta = {args.storage}, L = {args.coordinates}, "
        f"M = {args.samples}; cycle times {law.describe()}; {args.iterations} iterations per "
        f"scheme, seed {args.seed}"
    )
    started = time.monotonic()
    summaries = run_testbed(
        config,
        folder,
        log=lambda text: print("  " + text, flush=True),
        plans=build_plans(config, args.storage, budgets),
    )
    wall = time.monotonic() - started
    meta = json.loads((folder / "run.json").read_text())
    time_scale = float(meta["time_scale_s_per_unit"])
    rows = report(args, config, folder, summaries, time_scale, law)
    print(f"\ntestbed wall time {wall:.0f} s; run folder {folder}")
    model_rows = fair_comparison(
        args.workers,
        args.storage,
        law,
        parts=(1, 2) if args.storage >= 2 else (1,),
        samples=4000,
        seed=args.seed,
        coordinates=args.coordinates,
    )
    print("\nmodel only (bcgc_sim.comparison.fair_comparison, 4000 draws, chunk units;")
    print("its random order is a fresh one per draw, the testbed's one fixed order per run):")
    for r in model_rows:
        print(
            f"  {r.scheme:<18} {r.detail:<44} E = {r.estimate.mean:7.3f} +- {r.estimate.stderr:.3f}"
        )
    figure = plot(args, config, folder, rows, time_scale, law)
    summary = {
        "setting": vars(args) | {"out": str(args.out), "law": law.describe()},
        "time_scale_s_per_unit": time_scale,
        "testbed": rows,
        "model_fair_comparison": {f"{r.scheme} ({r.detail})": r.estimate.mean for r in model_rows},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"wrote {figure} and {args.out / 'summary.json'}")


def report(args, config, folder, summaries, time_scale, law) -> list[dict]:
    """The table: measured vs predicted (same T) vs model E, seconds and chunk units."""
    meta = json.loads((folder / "run.json").read_text())
    plans = {name: plan_from_dict(p) for name, p in meta["plans"].items()}
    model = config.system_model()
    unit = time_scale * model.scale  # seconds per raw unit
    chunk = unit * model.coordinates  # seconds per chunk unit
    samples = evaluation_samples(model, config.seed, 20_000)
    partial = {}
    with open(folder / "partial.csv") as handle:
        for r in csv.DictReader(handle):
            partial.setdefault(r["scheme"], []).append(r)
    out = []
    print(
        f"\n{'scheme':<24} {'stor.':>5} {'upload':>6} {'measured s':>10} {'predicted s':>11} "
        f"{'ratio':>6} {'model E s':>9} | {'meas. u':>7} {'pred. u':>7} {'model u':>7} "
        f"{'trip ms':>7} {'NMSE meas.':>10} {'est.':>6} {'pred.':>6} {'exact %':>7}"
    )
    for s in summaries:
        plan = plans[s.scheme]
        raw = plan.raw_runtime(samples)
        model_s = float(np.mean(raw)) * unit
        upload = plan.upload_length if isinstance(plan, PartialPlan) else model.coordinates
        row = {
            "scheme": s.scheme,
            "storage": storage_of(plan),
            "upload_floats": upload,
            "measured_mean_s": s.measured_mean_s,
            "predicted_mean_s": s.predicted_mean_s,
            "ratio": s.ratio,
            "model_mean_s": model_s,
            "measured_units": s.measured_mean_s / chunk,
            "predicted_units": s.predicted_mean_s / chunk,
            "model_units": model_s / chunk,
            "round_trip_ms": None,
            "nmse": None,
            "nmse_estimated": None,
            "nmse_predicted": None,
            "exact_fraction": None,
            "final_loss": s.final_loss,
            "gradient_max_rel_error": s.gradient_max_rel_error,
            "deadline_units": (
                plan.deadline / model.coordinates
                if isinstance(plan, PartialPlan) and plan.deadline is not None
                else None
            ),
        }
        text = ""
        if s.scheme in partial:
            p = partial[s.scheme]
            row["round_trip_ms"] = 1e3 * float(np.mean([float(r["round_trip_s"]) for r in p]))
            row["nmse"] = float(np.mean([float(r["nmse"]) for r in p]))
            row["nmse_estimated"] = float(np.mean([float(r["nmse_estimated"]) for r in p]))
            row["nmse_predicted"] = float(np.mean([float(r["nmse_predicted"]) for r in p]))
            row["exact_fraction"] = float(np.mean([r["stop_reason"] == "exact" for r in p]))
            text = (
                f"{row['round_trip_ms']:>7.2f} {row['nmse']:>10.2e} {row['nmse_estimated']:>6.3f} "
                f"{row['nmse_predicted']:>6.3f} {100 * row['exact_fraction']:>7.0f}"
            )
        print(
            f"{s.scheme:<24} {row['storage']:>5g} {upload:>6} {s.measured_mean_s:>10.4f} "
            f"{s.predicted_mean_s:>11.4f} {s.ratio:>6.3f} {model_s:>9.4f} | "
            f"{row['measured_units']:>7.3f} {row['predicted_units']:>7.3f} {row['model_units']:>7.3f} "
            f"{text}"
        )
        out.append(row)
    print(
        "stor. = partitions per worker; upload = floats per worker; u = chunk units (one "
        "partition's gradient\nat unit cycle time); predicted = the model for the same T "
        "(partial-gc: stop time, no round trip);\nmodel E = expectation over 20000 draws; "
        "NMSE meas. = ||g_hat - g||^2/||g||^2, est. = from the notices,\npred. = the model's "
        "count-based NMSE for the same T; exact % = iterations that reached the exact gradient"
    )
    return out


def plot(args, config, folder, rows, time_scale, law) -> Path:
    """partial_testbed.png (and .pdf): (a) exact-gradient means, (b) measured distributions,
    (c) NMSE."""
    return save_figure(
        figure(args, config, folder, rows, time_scale, law), args.out / "partial_testbed.png"
    )


@styled
def figure(args, config, folder, rows, time_scale, law):
    model = config.system_model()
    chunk = time_scale * model.scale * model.coordinates
    fig = new_figure(2 * PAGE_IN, 4.2, layout="constrained")
    axes = fig.subplots(1, 3)
    exact = [r for r in rows if "approx" not in r["scheme"]]
    approx = [r for r in rows if "approx" in r["scheme"]]
    plot_exact_means(axes[0], args, exact)
    plot_measured_distributions(axes[1], folder, chunk)
    plot_approximate_error(axes[2], args, config, law, exact, approx)
    return fig


def plot_exact_means(ax, args, exact: list[dict]) -> None:
    """(a) measured, predicted (same T) and model mean time to the exact gradient per scheme,
    in the scheme's colour: measured filled, predicted hollow, model pale."""
    from matplotlib.patches import Patch

    x = np.arange(len(exact))
    colours = [scheme_colour(r["scheme"]) for r in exact]
    handles = []
    for offset, key, label, fill in (
        (-0.27, "measured_units", "measured (testbed)", {}),
        (0.0, "predicted_units", "predicted, same T", {"facecolor": "white"}),
        (0.27, "model_units", "model E[time]", {"alpha": 0.35}),
    ):
        bar = {"facecolor": colours, "edgecolor": colours, **fill}
        ax.bar(x + offset, [r[key] for r in exact], 0.27, **bar)
        handles.append(Patch(**{"facecolor": "0.3", "edgecolor": "0.3", **fill}, label=label))
    ax.set_xticks(
        x,
        [f"{r['scheme']}\n(stor. {r['storage']})" for r in exact],
        rotation=60,
        ha="right",
    )
    ax.set(
        ylabel="mean time to the exact gradient (chunk units)",
        title=f"(a) N = {args.workers}, delta = {args.storage}: exact gradient",
    )
    ax.legend(handles=handles)


def plot_measured_distributions(ax, folder: Path, chunk: float) -> None:
    """(b) the measured runtimes of the exact schemes as step CDFs, in chunk units."""
    with open(folder / "iterations.csv") as handle:
        table = list(csv.DictReader(handle))
    for name in ("original-gc", "bcgc-capped", "bcgc-opt", "partial-gc", "partial-gc/random"):
        values = np.sort([float(r["measured_s"]) / chunk for r in table if r["scheme"] == name])
        if values.size:
            line = ":" if name.endswith("/random") else "-"  # the same scheme, random order
            ax.ecdf(values, color=scheme_colour(name), ls=line, label=name)
    ax.set(
        xlabel="time to the exact gradient (chunk units)",
        ylabel="fraction of iterations done by t",
        title="(b) measured runtime distribution",
    )
    ax.legend()


def plot_approximate_error(ax, args, config, law, exact: list[dict], approx: list[dict]) -> None:
    """(c) NMSE against the deadline: the models' curves and the approximate runs' errors."""
    a = Assignment.cyclic(args.workers, args.storage)
    latin = positions(a, a.natural)
    top = max([r["deadline_units"] for r in approx] + [r["model_units"] for r in exact]) * 1.2
    grid = np.linspace(0.05 * top, top, 60)
    ax.semilogy(
        grid,
        np.maximum(expected_nmse(a, latin, law, 1, grid), 1e-6),
        color=scheme_colour("partial-gc"),
        label="partial GC l=1 (model, E[estimated NMSE])",
    )
    t = monte_carlo_cycle_times(law, config.seed, 400, args.workers, STREAM_EVALUATION)
    code = tandon_code(args.workers, args.storage - 1, config.seed)
    original = original_nmse_at(code, speed_finish_times(t, a.loads), a.loads, grid).mean(axis=0)
    ax.semilogy(
        grid,
        np.maximum(original, 1e-6),
        color=scheme_colour("original-gc"),
        ls="--",
        label=f"original GC s = {args.storage - 1} (model)",
    )
    ax.scatter(
        [r["deadline_units"] for r in approx],
        [max(r["nmse"], 1e-6) for r in approx],
        color=scheme_colour("partial-gc-approx"),
        zorder=3,
        label="testbed: measured ||g_hat-g||^2/||g||^2",
    )
    ax.scatter(
        [r["deadline_units"] for r in approx],
        [max(r["nmse_estimated"], 1e-6) for r in approx],
        marker="x",
        color="k",
        zorder=3,
        label="testbed: estimated NMSE (notices)",
    )
    for r in approx:
        ax.annotate(
            r["scheme"].split("/")[-1],
            (r["deadline_units"], max(r["nmse"], 1e-6)),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set(
        xlabel="deadline T (chunk units; 1e-6 = exact)",
        ylabel="NMSE (||g_hat - g||^2 / ||g||^2)",
        title="(c) approximate gradient: error against time",
        ylim=(1e-6, 2),
    )
    ax.legend()


if __name__ == "__main__":
    main()
