"""Figures of a run and of a sweep: measured / predicted per iteration, runtime CDFs against the
model, one iteration's timeline, and a sweep's means with 95% intervals.

Each figure is built by a `*_figure` function (a matplotlib Figure, for tests and notebooks)
and written by the matching `plot_*` function as PNG and PDF (the timelines: PNG only), in
bcgc_sim.style's look: one colour per scheme in every figure, fonts for a paper's column.
Times are stored in seconds and shown in ms or s, named on the axis.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .intervals import CONFIDENCE
from .schemes import PARTIAL_SCHEMES
from .style import (
    MODEL_COLOUR,
    PAGE_IN,
    REFERENCE_COLOUR,
    new_figure,
    save_figure,
    scheme_style,
    styled,
    time_unit,
)
from .sweep_summary import SweepSummary
from .validation import DeadlineCheck, RunRecord, SchemeValidation, model_cdf

LATE_WIDTH = 3.0  # of the bar from a message's send deadline to its arrival (points)
MARK_COLOUR = "0.3"  # legend entries that explain a mark's shape, not its colour
PARAMETER_LABELS = {  # axis labels (with units) of the keys a sweep usually varies
    "cluster.workers": "N (workers)",
    "model.coordinates": "L (coordinates)",
    "model.samples": "M (samples)",
    "model.cycles": "C (cycles per coded partial derivative)",
    "straggler.rate": "straggler rate mu (per model time unit)",
    "straggler.shift": "straggler shift t0 (model time units)",
    "straggler.failure_probability": "failure probability p",
}


def run_caption(run: RunRecord, results: list[SchemeValidation]) -> str:
    """N, iterations per scheme and seed of a run (and natural mode), for a figure's title."""
    counts = sorted({r.measured.size for r in results})
    iterations = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    mode = ", natural stragglers" if run.config.run.mode == "natural" else ""
    return (
        f"N = {run.model.n_workers} workers, {iterations} iterations per scheme, "
        f"seed {run.config.seed}{mode}"
    )


def _grid(fig, panels: int, columns: int, **kwargs):
    """`panels` axes in rows of `columns`; the unused ones hidden. Returns the 2-D array."""
    rows = math.ceil(panels / columns)
    axes = fig.subplots(rows, columns, squeeze=False, **kwargs)
    for ax in axes.ravel()[panels:]:
        ax.set_visible(False)
    return axes


def _label_outer(fig, axes, panels: int, xlabel: str, ylabel: str) -> None:
    """Shared axes: the x label and tick labels (whole numbers) under the lowest visible panel
    of each column, one y label for the whole figure."""
    from matplotlib import ticker

    columns = axes.shape[1]
    for index in range(panels):
        ax = axes.ravel()[index]
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        lowest = index + columns >= panels
        ax.xaxis.set_tick_params(labelbottom=lowest)
        if lowest:
            ax.set_xlabel(xlabel)
    fig.supylabel(ylabel, fontsize=8)


def _mark(label: str, **kwargs):
    """A legend entry for a kind of mark (grey, no data)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color=kwargs.pop("color", MARK_COLOUR), label=label, **kwargs)


# --- measured / predicted per iteration --------------------------------------------------------


@styled
def per_iteration_figure(run: RunRecord, results: list[SchemeValidation]):
    """One panel per scheme (shared axes): measured / predicted runtime of every iteration, the
    predictions taken for the same cycle times; 1 = the prediction was exact. With nothing
    predicted per iteration (natural mode), the measured runtime of every iteration instead."""
    predicted = any(np.isfinite(r.predicted).any() for r in results)
    columns = 1 if len(results) <= 3 else 2
    rows = math.ceil(len(results) / columns)
    fig = new_figure(PAGE_IN, 0.9 + 1.15 * rows, layout="constrained")
    axes = _grid(fig, len(results), columns, sharex=True, sharey=True)
    unit, factor = time_unit(max(r.measured.max() for r in results))
    for ax, r in zip(axes.ravel(), results, strict=False):
        style = scheme_style(r.scheme)
        if predicted:
            values, centre = r.measured / r.predicted, r.ratio
            ax.axhline(1.0, color=REFERENCE_COLOUR, lw=0.8)
            title = f"{r.scheme}: mean ratio {r.ratio:.3f}, median {r.median_ratio:.3f}"
        else:
            values, centre = r.measured * factor, float(r.measured.mean()) * factor
            title = f"{r.scheme}: mean {centre:.3g} {unit}"
        ax.plot(values, color=style.colour, marker=style.marker, lw=0.7, ms=3)
        ax.axhline(centre, color=style.colour, ls="--", lw=0.9)
        ax.set_title(title, loc="left")
    each = _mark("each iteration (marker: the scheme's)", marker="o", ms=3, lw=0.7)
    if predicted:
        ylabel, what = "measured / predicted", "measured / predicted for the same cycle times"
        handles = [
            each,
            _mark("mean measured / mean predicted", ls="--", lw=0.9),
            _mark("measured = predicted", color=REFERENCE_COLOUR, lw=0.8),
        ]
    else:
        ylabel, what = f"measured runtime ({unit})", "measured (nothing predicted per iteration)"
        handles = [each, _mark("mean", ls="--", lw=0.9)]
    _label_outer(fig, axes, len(results), "iteration (index)", ylabel)
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    fig.suptitle(f"Runtime per iteration, {what}\n{run_caption(run, results)}")
    return fig


def plot_per_iteration(run: RunRecord, results: list[SchemeValidation], path: Path) -> Path:
    return save_figure(per_iteration_figure(run, results), path)


# --- runtime distributions ---------------------------------------------------------------------


@styled
def cdf_figure(run: RunRecord, results: list[SchemeValidation]):
    """One panel per scheme: the measured runtimes' empirical CDF (steps, the scheme's colour)
    over the model's exact CDF (wide grey line) and the CDF of the predictions for the same
    cycle times (thin dashed steps); with a deadline, the measured fraction by it with its
    interval."""
    columns = min(3, len(results))
    rows = math.ceil(len(results) / columns)
    fig = new_figure(PAGE_IN, 1.0 + 1.9 * rows, layout="constrained")
    axes = _grid(fig, len(results), columns)
    largest = max(max(r.measured.max(), np.nanmax(r.predicted, initial=0.0)) for r in results)
    unit, factor = time_unit(largest)
    for ax, r in zip(axes.ravel(), results, strict=False):
        top = max(r.measured.max(), np.nanmax(r.predicted, initial=0.0)) * 1.15
        if r.deadline is not None:
            top = max(top, r.deadline.deadline_s * 1.1)
        grid = np.linspace(0, top, 200)
        ax.plot(grid * factor, model_cdf(run, run.plans[r.scheme])(grid), color=MODEL_COLOUR, lw=3)
        ax.ecdf(r.measured * factor, color=scheme_style(r.scheme).colour, lw=1.6)
        known = r.predicted[np.isfinite(r.predicted)]
        if known.size:
            ax.ecdf(known * factor, color=REFERENCE_COLOUR, lw=0.7, ls="--")
        if r.deadline is not None:
            _draw_deadline(ax, r.deadline, factor)
        ax.set(
            title=f"{r.scheme}: KS {r.ks_distance:.2f} (p = {r.ks_pvalue:.2f})",
            xlabel=f"runtime per iteration ({unit})",
            ylabel="P(runtime ≤ t)",
            xlim=(0, top * factor),
            ylim=(0, 1.02),
        )
    estimated = any(r.scheme in PARTIAL_SCHEMES for r in results)
    model = "model: exact P(runtime ≤ t)" + ("; partial-gc*: Monte Carlo" if estimated else "")
    handles = [
        _mark(model, color=MODEL_COLOUR, lw=3),
        _mark("measured (steps, the scheme's colour)", lw=1.6),
        _mark("predicted for the same cycle times", color=REFERENCE_COLOUR, lw=0.7, ls="--"),
    ]
    if any(r.deadline is not None for r in results):
        handles += [
            _mark("deadline T", color=REFERENCE_COLOUR, lw=0.8, ls=":"),
            _mark(f"measured fraction by T, {CONFIDENCE:.0%} Wilson interval", marker="o", ls=""),
        ]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)))
    fig.suptitle(f"Runtime distribution: measured against the model\n{run_caption(run, results)}")
    return fig


def _draw_deadline(ax, check: DeadlineCheck, factor: float) -> None:
    """The deadline as a vertical line, and the measured fraction by it with its interval."""
    lo, hi = check.measured_ci
    fraction = check.measured_fraction
    ax.axvline(check.deadline_s * factor, color=REFERENCE_COLOUR, lw=0.8, ls=":")
    ax.errorbar(
        [check.deadline_s * factor],
        [fraction],
        yerr=[[fraction - lo], [hi - fraction]],
        fmt="o",
        ms=3.5,
        color=MARK_COLOUR,
        capsize=2.5,
        zorder=4,
    )


def plot_cdfs(run: RunRecord, results: list[SchemeValidation], path: Path) -> Path:
    return save_figure(cdf_figure(run, results), path)


# --- one iteration's timeline ------------------------------------------------------------------


@styled
def timeline_figure(run: RunRecord, scheme: str, iteration: int, note: str = ""):
    """Each worker's messages of one iteration (arrival marks, coloured by block, with a line
    from the send deadline to the arrival) and each block's decode time, measured and predicted.
    partial-gc schemes: colour = the chunk's position in the worker's order, last = UPLOAD."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm

    messages = [
        m
        for m in run.rows(scheme, "messages.csv")
        if int(m["iteration"]) == iteration and m["status"] != "stale"
    ]
    blocks = [b for b in run.rows(scheme, "blocks.csv") if int(b["iteration"]) == iteration]
    partial = scheme in PARTIAL_SCHEMES
    slots = max([len(blocks), *(int(m["slot"]) + 1 for m in messages)])
    cmap = colormaps["viridis"].resampled(max(2, slots))
    norm = BoundaryNorm(np.arange(slots + 1) - 0.5, cmap.N)
    times = [float(m["arrival_s"]) for m in messages]
    times += [float(b[key]) for b in blocks for key in ("decoded_s", "predicted_s")]
    largest = float(np.nanmax(times))
    unit, factor = time_unit(largest)
    n = run.model.n_workers
    fig = new_figure(PAGE_IN, 2.2 + 0.22 * n, layout="constrained")
    ax = fig.subplots()
    for m in messages:
        worker, colour = int(m["worker"]), cmap(norm(int(m["slot"])))
        due = (float(m["worker_start_s"]) + float(m["deadline_s"])) * factor
        arrival = float(m["arrival_s"]) * factor
        ax.plot([due, arrival], [worker, worker], color=colour, lw=LATE_WIDTH, alpha=0.45)
        used = m["status"] in ("used", "")  # "": partial-gc's NOTICE / UPLOAD rows
        ax.plot(arrival, worker, "o", ms=4.5, mec=colour, mfc=colour if used else "none", zorder=3)
    for b in blocks:
        colour = REFERENCE_COLOUR if partial else cmap(norm(int(b["slot"])))
        ax.axvline(float(b["decoded_s"]) * factor, color=colour, lw=0.9, alpha=0.85)
        ax.axvline(float(b["predicted_s"]) * factor, color=colour, lw=0.9, ls="--", alpha=0.85)
    ticks = list(range(0, slots, max(1, math.ceil(slots / 10))))
    colourbar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, ticks=ticks)
    if partial:
        colourbar.set_label("chunk position in the worker's order (last: UPLOAD)")
    else:
        tolerated = {int(b["slot"]): b["stragglers"] for b in blocks}
        colourbar.set_ticks(ticks, labels=[f"{k}: s = {tolerated.get(k, '?')}" for k in ticks])
        colourbar.set_label("block in sending order; s = stragglers tolerated")
    colourbar.ax.grid(False)
    decoded = "gradient decoded" if partial else "block decoded"
    arrival = "arrival of a NOTICE or the UPLOAD" if partial else "arrival, used to decode"
    handles = [_mark(arrival, marker="o", ls="")]
    if any(m["status"] not in ("used", "") for m in messages):
        handles.append(
            _mark("arrival after its block was decoded (unused)", marker="o", ls="", mfc="none")
        )
    natural = run.config.run.mode == "natural"  # no hold: the deadline is when compute ended
    since = "the send deadline" + (" (natural: compute done)" if natural else "")
    handles += [
        _mark(f"from {since} to the arrival", lw=LATE_WIDTH, alpha=0.45),
        _mark(f"{decoded}, measured", lw=0.9),
    ]
    if any(math.isfinite(float(b["predicted_s"])) for b in blocks):
        handles.append(_mark(f"{decoded}, predicted (same cycle times)", lw=0.9, ls="--"))
    fig.legend(handles=handles, loc="outside lower center", ncol=2)
    ax.set(
        xlabel=f"time since the master sent theta ({unit})",
        ylabel="worker (rank)",
        ylim=(-0.6, n - 0.4),
        xlim=(0, 1.03 * largest * factor),
    )
    ax.set_yticks(range(n))
    ax.grid(axis="y", visible=False)
    suffix = f" ({note})" if note else ""
    fig.suptitle(
        f"{scheme}, iteration {iteration}{suffix}: messages and decoding\n"
        f"N = {n} workers, seed {run.config.seed}"
    )
    return fig


def plot_timeline(run: RunRecord, scheme: str, iteration: int, path: Path, note: str = "") -> Path:
    """PNG only: one per scheme, a diagnostic more than a paper's figure (a PDF each would add
    about 0.4 s per scheme to `bcgc validate`)."""
    return save_figure(timeline_figure(run, scheme, iteration, note), path, pdf=False)


# --- a sweep -----------------------------------------------------------------------------------


@styled
def sweep_figure(summary: SweepSummary):
    """Fig. 4(a)/(b) shape. Left: per scheme and swept value, the measured mean runtime (filled)
    beside the mean prediction for the same cycle times (hollow), both with 95% intervals, and
    the model's E[runtime] (line). Right: the reduction of bcgc-opt over the best baseline,
    measured beside predicted, with 95% intervals (left out when the sweep has no bcgc-opt)."""
    values = summary.values
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    positions = [float(v) for v in values] if numeric else list(range(len(values)))
    at = dict(zip(values, positions, strict=True))
    log = summary.parameter == "straggler.rate" and numeric and min(positions) > 0
    panels = 2 if summary.reductions else 1
    fig = new_figure(PAGE_IN, 3.0, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    schemes = summary.schemes
    shift = _dodge(positions, log, len(schemes))
    largest = max(c.measured.mean for c in summary.cells)
    unit, factor = time_unit(largest)
    left = axes[0]
    for i, scheme in enumerate(schemes):
        style = scheme_style(scheme)
        cells = [c for c in summary.cells if c.scheme == scheme]
        xs = [at[c.value] for c in cells]
        left.plot(xs, [c.model_mean_s * factor for c in cells], color=style.colour, lw=0.8)
        for k, (kind, filled) in enumerate((("measured", True), ("predicted", False))):
            estimates = [getattr(c, kind) for c in cells]
            _errorbars(left, shift(xs, i, 2 * k - 1), estimates, factor, style, filled)
    left.set(
        xlabel=_parameter_label(summary.parameter),
        ylabel=f"mean runtime per iteration ({unit})",
        title="mean runtime: measured and predicted",
    )
    handles = [
        _mark(s, color=scheme_style(s).colour, marker=scheme_style(s).marker, ls="")
        for s in schemes
    ]
    handles += [
        _mark("measured", marker="o", ls=""),
        _mark("predicted, same cycle times", marker="o", ls="", mfc="none"),
        _mark("model E[runtime]", lw=0.8),
        _mark(f"{CONFIDENCE:.0%} interval of the mean", marker="|", ls="", ms=8),
    ]
    if summary.reductions:
        _reduction_panel(axes[1], summary, at, log)
    _value_axis(left, values, positions, log)
    if summary.reductions:
        labels = {r.value: _baselines(r.baselines) for r in summary.reductions}
        _value_axis(axes[1], values, positions, log, labels)
    fig.legend(handles=handles, loc="outside right center")
    low, high = summary.iterations
    iterations = f"{low}" if low == high else f"{low}-{high}"
    workers = "" if summary.parameter == "cluster.workers" else f"N = {summary.workers}, "
    fig.suptitle(
        f"Sweep of {_parameter_label(summary.parameter)}: {workers}{iterations} iterations "
        f"per scheme and point, seed {summary.seed}"
    )
    return fig


def _reduction_panel(ax, summary: SweepSummary, at: dict, log: bool) -> None:
    positions = [at[r.value] for r in summary.reductions]
    shift = _dodge(list(at.values()), log, 1)
    style = scheme_style("bcgc-opt")
    for k, (kind, filled) in enumerate((("measured", True), ("predicted", False))):
        estimates = [getattr(r, kind) for r in summary.reductions]
        _errorbars(ax, shift(positions, 0, 2 * k - 1), estimates, 1.0, style, filled)
    ax.axhline(0.0, color=REFERENCE_COLOUR, lw=0.8)
    ax.set(
        xlabel=f"{_parameter_label(summary.parameter)}, and the best baseline",
        ylabel="reduction of the mean runtime (%)",
        title="bcgc-opt against the best baseline",
    )


def _errorbars(ax, xs, estimates, factor: float, style, filled: bool) -> None:
    means = np.array([e.mean for e in estimates]) * factor
    lo = np.array([e.lo for e in estimates]) * factor
    hi = np.array([e.hi for e in estimates]) * factor
    known = np.isfinite(means)
    if not known.any():
        return
    spread = np.nan_to_num(np.vstack([means - lo, hi - means]))[:, known]
    ax.errorbar(
        np.asarray(xs)[known],
        means[known],
        yerr=spread,
        fmt=style.marker,
        color=style.colour,
        mfc=style.colour if filled else "white",
        ms=4,
        capsize=2,
        lw=0.9,
        zorder=3,
    )


def _dodge(positions: list[float], log: bool, groups: int):
    """f(xs, group, side) -> xs shifted so that `groups` pairs of marks at one x (side -1: the
    measured, +1: the predicted) sit side by side within 40% of the smallest gap between values
    (a factor on a log axis); the two of a pair closer together than the pairs."""
    space = np.log10(positions) if log else np.asarray(positions, dtype=float)
    gaps = np.diff(np.sort(space))
    gap = float(gaps.min()) if gaps.size and gaps.min() > 0 else (0.2 if log else 1.0)
    step = min(0.4 * gap / groups, 0.12 * gap)  # from one pair to the next

    def shift(xs, group: int, side: int):
        offset = (group - (groups - 1) / 2 + 0.2 * side) * step
        xs = np.asarray(xs, dtype=float)
        return xs * 10**offset if log else xs + offset

    return shift


def _parameter_label(parameter: str) -> str:
    return PARAMETER_LABELS.get(parameter, parameter)


def _value_axis(
    ax, values: list, positions: list[float], log: bool, below: dict | None = None
) -> None:
    """Ticks at the swept values only: whole numbers for integer keys (N, L, M), three digits
    for the others; `below` adds a second line under some of them."""
    from matplotlib import ticker

    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    labels = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in values]
    if below:
        labels = [
            f"{t}\n{below[v]}" if v in below else t for t, v in zip(labels, values, strict=True)
        ]
    ax.set_xticks(positions, labels)


def _baselines(names: tuple[str | None, str | None]) -> str:
    """The best baseline of the measured and of the predicted means: one name if they agree."""
    measured, predicted = names
    return measured if predicted in (None, measured) else f"{measured} / {predicted}"


def plot_sweep(summary: SweepSummary, path: Path) -> Path:
    return save_figure(sweep_figure(summary), path)


# -- natural mode: the papers' model, the system model and the measurement ------------------------
MODEL_BARS = (  # (key of calibrate's scheme dict, label, colour)
    ("predicted_mean_s", "papers' model (fitted law)", MODEL_COLOUR),
    ("system_predicted_mean_s", "system model (calibrated)", "#0072B2"),
    ("measured_median_round_s", "measured (median of rounds)", "#D55E00"),
)


def _bar_value(scheme: dict, key: str) -> float:
    """A bar's seconds; results written before medians were kept give their plain mean."""
    if key == "measured_median_round_s" and key not in scheme:
        return scheme["measured_mean_s"]
    return scheme[key]


@styled
def system_model_figure(settings: dict[str, dict[str, dict]]):
    """One panel per setting: per scheme the papers' prediction, the system model's and the
    measured runtime, the median of the alternating rounds' means with half their interquartile
    range (calibrate's scheme dicts, seconds)."""
    largest = max(
        _bar_value(schemes[n], key)
        for schemes in settings.values()
        for n in schemes
        for key, *_ in MODEL_BARS
    )
    unit, factor = time_unit(largest)
    fig = new_figure(min(PAGE_IN, 1.2 + 2.2 * len(settings)), 2.8, layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    for ax, (title, schemes) in zip(axes, settings.items(), strict=True):
        names = list(schemes)
        x = np.arange(len(names))
        for i, (key, label, colour) in enumerate(MODEL_BARS):
            values = [factor * _bar_value(schemes[n], key) for n in names]
            spread = None  # the measured bars: half the rounds' interquartile range
            if key == "measured_median_round_s":
                spread = [
                    v * schemes[n].get("round_spread", 0.0)
                    for v, n in zip(values, names, strict=True)
                ]
            ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=colour, yerr=spread)
        ax.set_xticks(x, names, rotation=60, ha="right")
        ax.set_title(title)
    axes[0].set_ylabel(f"mean runtime per iteration ({unit})")
    handles, labels = axes[0].get_legend_handles_labels()
    columns = len(MODEL_BARS) if len(settings) >= 3 else 1  # a narrow figure: one column
    fig.legend(handles, labels, loc="outside upper center", ncol=columns)
    return fig


def plot_system_model(settings: dict[str, dict[str, dict]], path: Path) -> Path:
    return save_figure(system_model_figure(settings), path)


def plot_calibration(schemes: dict[str, dict], path: Path) -> Path:
    """`bcgc calibrate`'s figure: one panel of system_model_figure."""
    return plot_system_model({"natural mode: predicted and measured": schemes}, path)
