"""PNG figures of a run: measured vs predicted per iteration, runtime CDFs, one iteration's timeline.

matplotlib with the Agg backend (no display needed). Times are seconds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .validation import CONFIDENCE, DeadlineCheck, RunRecord, SchemeValidation, model_cdf  # noqa: E402


def plot_per_iteration(results: list[SchemeValidation], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    top = max(max(r.measured.max(), r.predicted.max()) for r in results) * 1.05
    grid = np.linspace(0, top, 2)
    ax.plot(grid, grid, color="black", lw=1, label="measured = predicted")
    ax.fill_between(grid, grid, grid * 1.05, color="0.85", label="+5%")
    for r in results:
        ax.scatter(
            r.predicted, r.measured, s=14, alpha=0.8, label=f"{r.scheme} (ratio {r.ratio:.3f})"
        )
    ax.set(
        xlim=(0, top), ylim=(0, top), xlabel="predicted runtime (s)", ylabel="measured runtime (s)"
    )
    ax.set_title("Each iteration: measured vs predicted for the same cycle times")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_cdfs(run: RunRecord, results: list[SchemeValidation], path: Path) -> Path:
    cols = min(3, len(results))
    rows = int(np.ceil(len(results) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), results, strict=False):
        top = max(r.measured.max(), r.predicted.max()) * 1.2
        if r.deadline is not None:
            top = max(top, r.deadline.deadline_s * 1.1)
        grid = np.linspace(0, top, 200)
        ax.plot(
            grid,
            model_cdf(run, run.plans[r.scheme])(grid),
            color="black",
            lw=1.2,
            label="model (exact)",
        )
        for values, label in ((r.measured, "measured"), (r.predicted, "predicted, same T")):
            x = np.sort(values)
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=label)
        if r.deadline is not None:
            _draw_deadline(ax, r.deadline)
        ax.set(
            title=f"{r.scheme}: KS {r.ks_distance:.2f}",
            xlabel="runtime (s)",
            ylabel="P(runtime <= t)",
        )
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[len(results) :]:
        ax.axis("off")
    return _save(fig, path)


def _draw_deadline(ax, check: DeadlineCheck) -> None:
    """The deadline as a vertical line, and the measured fraction by it with its interval."""
    lo, hi = check.measured_ci
    ax.axvline(
        check.deadline_s,
        color="0.4",
        lw=1,
        ls=":",
        label=f"deadline ({check.deadline:g} model units)",
    )
    ax.errorbar(
        [check.deadline_s],
        [check.measured_fraction],
        yerr=[[check.measured_fraction - lo], [hi - check.measured_fraction]],
        fmt="o",
        ms=4,
        color="C3",
        capsize=3,
        label=f"measured fraction by it, {CONFIDENCE:.0%} CI",
    )


def plot_timeline(run: RunRecord, scheme: str, iteration: int, path: Path) -> Path:
    """Each worker's messages of one iteration: deadline, arrival, and each block's decode time."""
    messages = [
        m
        for m in run.rows(scheme, "messages.csv")
        if int(m["iteration"]) == iteration and m["status"] != "stale"
    ]
    blocks = [b for b in run.rows(scheme, "blocks.csv") if int(b["iteration"]) == iteration]
    fig, ax = plt.subplots(figsize=(9, 0.35 * run.model.n_workers + 2))
    slots = max([len(blocks), *(int(m["slot"]) + 1 for m in messages)])  # partial-gc: positions
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, slots)))
    for m in messages:
        worker, slot = int(m["worker"]), int(m["slot"])
        due = float(m["worker_start_s"]) + float(m["deadline_s"])
        arrival = float(m["arrival_s"])
        ax.plot([due, arrival], [worker, worker], color=colors[slot], lw=1)
        ax.scatter(
            arrival,
            worker,
            s=22,
            color=colors[slot],
            zorder=3,
            facecolors=colors[slot] if m["status"] == "used" else "none",
        )
    for b in blocks:
        slot = int(b["slot"])
        ax.axvline(float(b["decoded_s"]), color=colors[slot], lw=1, alpha=0.8)
        ax.axvline(float(b["predicted_s"]), color=colors[slot], lw=1, ls="--", alpha=0.8)
    ax.set(xlabel="time since the master broadcast theta (s)", ylabel="worker")
    ax.set_yticks(range(run.model.n_workers))
    ax.set_title(
        f"{scheme}, iteration {iteration}: dots = arrivals (filled: used, hollow: late), "
        "lines = decode (solid measured, dashed predicted)",
        fontsize=9,
    )
    return _save(fig, path)


def plot_sweep(rows: list[dict], reductions: tuple[dict, dict], path: Path) -> Path:
    """Fig. 4(a)/(b) shape: E[runtime] per scheme vs the swept value (measured dots, model lines)
    and the reduction of bcgc-opt over the best baseline, measured vs predicted."""
    parameter = rows[0]["parameter"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, scheme in enumerate(dict.fromkeys(r["scheme"] for r in rows)):
        mine = [r for r in rows if r["scheme"] == scheme]
        x = [float(r["value"]) for r in mine]
        color = f"C{index}"
        left.plot(
            x, [float(r["model_mean_s"]) for r in mine], color=color, lw=1, label=f"{scheme} model"
        )
        left.scatter(x, [float(r["measured_mean_s"]) for r in mine], color=color, s=20)
    left.set(
        xlabel=parameter,
        ylabel="mean runtime per iteration (s)",
        title="measured (dots) vs model E[runtime] (lines)",
    )
    left.legend(fontsize=7)
    measured, predicted = reductions
    for values, label, style in (
        (predicted, "predicted (same cycle times)", "-"),
        (measured, "measured", "o"),
    ):
        keys = list(values)
        right.plot([float(k) for k in keys], [values[k] for k in keys], style, label=label)
    right.set(xlabel=parameter, ylabel="reduction (%)", title="bcgc-opt vs the best baseline")
    right.legend(fontsize=8)
    if parameter == "straggler.rate":
        left.set_xscale("log")
        right.set_xscale("log")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_calibration(schemes: dict[str, dict], path: Path) -> Path:
    """Per scheme: the papers' prediction, the system model's and the measured mean runtime."""
    names = list(schemes)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 4))
    bars = (
        ("predicted_mean_s", "papers' model (fitted law)"),
        ("system_predicted_mean_s", "system model (calibrated)"),
        ("measured_mean_s", "measured"),
    )
    for i, (key, label) in enumerate(bars):
        ax.bar(x + (i - 1) * 0.27, [1e3 * schemes[n][key] for n in names], 0.27, label=label)
    ax.set_xticks(x, names, rotation=20)
    ax.set(ylabel="mean runtime per iteration (ms)", title="Natural mode: predicted and measured")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_system_model(settings: dict[str, dict[str, dict]], path: Path) -> Path:
    """One panel per setting: per scheme the papers' prediction, the system model's and the
    measured mean runtime (calibrate's scheme dicts, seconds)."""
    fig, axes = plt.subplots(
        1, len(settings), figsize=(3.3 * len(settings) + 1, 3.8), squeeze=False
    )
    bars = (
        ("predicted_mean_s", "papers' model (fitted law)", "#bbbbbb"),
        ("system_predicted_mean_s", "system model (calibrated)", "#4477aa"),
        ("measured_mean_s", "measured", "#ee6677"),
    )
    for ax, (title, schemes) in zip(axes[0], settings.items(), strict=True):
        names = list(schemes)
        x = np.arange(len(names))
        for i, (key, label, colour) in enumerate(bars):
            values = [1e3 * schemes[n][key] for n in names]
            ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=colour)
        ax.set_xticks(x, names, rotation=60, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0][0].set_ylabel("mean runtime per iteration (ms)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Natural mode on 2 cores: predicted and measured runtime", fontsize=10)
    return _save(fig, path)
