"""Figures: each drawn from a real small run or sweep, checked for what a reader relies on (one
panel per scheme, the plotted values, titles naming N, iterations and seed, legends, colour bar,
integer ticks, one colour per scheme), and the intervals and style they use."""

from __future__ import annotations

import json
import struct

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex

from bcgc_sim import plots
from bcgc_sim.entry.cli import main
from bcgc_sim.errors import UserError
from bcgc_sim.intervals import mean_interval, reduction_interval
from bcgc_sim.schemes import SCHEMES
from bcgc_sim.style import DPI, PAGE_IN, SCHEME_STYLES, save_figure, scheme_colour, scheme_style
from bcgc_sim.sweep_summary import load_sweep, point_folder
from bcgc_sim.validation import load_run, validate_run
from master.sweep import read_rows, reductions

SMALL = [
    "--set", "cluster.workers=4", "--set", "model.samples=120", "--set", "model.coordinates=40",
    "--set", "run.iterations=12", "--set", "run.iteration_seconds=0.03", "--set", "seed=3",
]  # fmt: skip
SCHEMES_RUN = ("bcgc-opt", "tandon", "partial-gc")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A real validated run: N = 4, 12 iterations of three schemes, seed 3 (figures drawn)."""
    folder = tmp_path_factory.mktemp("plots") / "run"
    schemes = f"run.schemes={list(SCHEMES_RUN)}"
    assert main(["validate", "--json", "--output", str(folder), *SMALL, "--set", schemes]) == 0
    return folder


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    """A real sweep over N = 3, 4 (bcgc-opt and single-bcgc, 8 iterations each, seed 3)."""
    folder = tmp_path_factory.mktemp("plots") / "sweep"
    argv = [
        "sweep", "--json", "--param", "cluster.workers", "--values", "3", "4",
        "--output", str(folder), *SMALL[2:],
        "--set", "run.iterations=8", "--set", "run.schemes=['bcgc-opt', 'single-bcgc']",
    ]  # fmt: skip
    assert main(argv) == 0
    return folder


def _loaded(folder):
    run = load_run(folder)
    return run, validate_run(run)


def _title(fig) -> str:
    return fig.get_suptitle()


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# --- figures of a run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_writes_each_figure_as_png_and_pdf(run_folder):
    for stem in ("validate-per-iteration", "validate-cdf"):
        for suffix in (".png", ".pdf"):
            assert (run_folder / f"{stem}{suffix}").stat().st_size > 10_000, stem
    for scheme in SCHEMES_RUN:
        assert (run_folder / f"timeline-{scheme}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_per_iteration_gives_each_scheme_its_panel_of_measured_over_predicted(run_folder):
    run, results = _loaded(run_folder)
    fig = plots.per_iteration_figure(run, results)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(SCHEMES_RUN)
    for ax, r in zip(panels, results, strict=True):
        assert ax.get_title(loc="left").startswith(f"{r.scheme}: mean ratio {r.ratio:.3f}")
        (line,) = [x for x in ax.get_lines() if x.get_marker() == scheme_style(r.scheme).marker]
        rows = [row for row in run.iterations if row["scheme"] == r.scheme]
        expected = [float(row["measured_s"]) / float(row["predicted_s"]) for row in rows]
        np.testing.assert_allclose(line.get_ydata(), expected)
        assert to_hex(line.get_color()) == scheme_colour(r.scheme).lower()
    assert "N = 4 workers, 12 iterations per scheme, seed 3" in _title(fig)
    assert len(_legend_texts(fig)) == 3


@pytest.mark.slow
def test_cdf_draws_the_measured_steps_over_the_model_line(run_folder):
    run, results = _loaded(run_folder)
    fig = plots.cdf_figure(run, results)
    assert "N = 4 workers, 12 iterations per scheme, seed 3" in _title(fig)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(SCHEMES_RUN)
    for ax, r in zip(panels, results, strict=True):
        assert ax.get_xlabel() == "runtime per iteration (ms)"
        model, measured, predicted = ax.get_lines()
        assert measured.get_zorder() >= model.get_zorder()  # drawn later: on top
        assert to_hex(measured.get_color()) == scheme_colour(r.scheme).lower()
        assert model.get_linewidth() > measured.get_linewidth() > predicted.get_linewidth()
        # the measured ECDF: its steps sit at the measured runtimes (ms), rising to 1
        np.testing.assert_allclose(np.unique(measured.get_xdata()), np.unique(r.measured * 1e3))
        assert measured.get_ydata()[-1] == pytest.approx(1.0)
        assert np.all(np.diff(measured.get_ydata()) >= 0)
    assert any("partial-gc*: Monte Carlo" in t for t in _legend_texts(fig))


@pytest.mark.slow
def test_cdf_with_a_deadline_shows_the_measured_fraction_and_its_interval(run_folder):
    run = load_run(run_folder)
    deadline = float(np.median([float(r["measured_s"]) for r in run.iterations])) / run.time_scale
    results = validate_run(run, deadline)
    fig = plots.cdf_figure(run, results)
    texts = _legend_texts(fig)
    assert "deadline T" in texts and "measured fraction by T, 95% Wilson interval" in texts
    for ax, r in zip(fig.axes, results, strict=False):
        (bars,) = ax.containers  # the errorbar at the deadline
        x, y = bars.lines[0].get_data()
        assert x[0] == pytest.approx(r.deadline.deadline_s * 1e3)
        assert y[0] == pytest.approx(r.deadline.measured_fraction)


@pytest.mark.slow
def test_timeline_explains_its_marks_with_a_legend_and_a_colour_bar(run_folder):
    run, results = _loaded(run_folder)
    for r in results:
        iteration = r.typical_iteration()
        fig = plots.timeline_figure(run, r.scheme, iteration, "typical")
        main_ax, bar = fig.axes  # the timeline and its colour bar
        messages = [
            m
            for m in run.rows(r.scheme, "messages.csv")
            if int(m["iteration"]) == iteration and m["status"] != "stale"
        ]
        arrivals = [line for line in main_ax.get_lines() if line.get_marker() == "o"]
        assert len(arrivals) == len(messages)
        assert f"{r.scheme}, iteration {iteration} (typical)" in _title(fig)
        assert "N = 4 workers, seed 3" in _title(fig)
        texts = _legend_texts(fig)
        decoded = "gradient decoded" if r.scheme == "partial-gc" else "block decoded"
        assert f"{decoded}, measured" in texts
        assert f"{decoded}, predicted (same cycle times)" in texts
        assert "from the send deadline to the arrival" in texts
        label = bar.get_ylabel()
        if r.scheme == "partial-gc":
            assert "UPLOAD" in label
        else:
            assert label == "block in sending order; s = stragglers tolerated"
            blocks = [
                b for b in run.rows(r.scheme, "blocks.csv") if int(b["iteration"]) == iteration
            ]
            ticks = [t.get_text() for t in bar.get_yticklabels()]
            assert ticks == [f"{b['slot']}: s = {b['stragglers']}" for b in blocks][: len(ticks)]
        assert main_ax.get_xlabel() == "time since the master sent theta (ms)"


# --- the sweep figure ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_figure_puts_predictions_beside_measurements_with_intervals(sweep_folder):
    assert (sweep_folder / "sweep.png").stat().st_size > 10_000
    summary = load_sweep(sweep_folder)
    fig = plots.sweep_figure(summary)
    left, right = (ax for ax in fig.axes)
    # N on integer ticks, exactly the swept values
    assert list(left.get_xticks()) == [3.0, 4.0]
    assert [t.get_text() for t in left.get_xticklabels()] == ["3", "4"]
    assert [t.get_text().split("\n")[0] for t in right.get_xticklabels()] == ["3", "4"]
    # per scheme a measured and a predicted errorbar series, side by side, values from the runs
    assert len(left.containers) == 2 * len(summary.schemes)
    for index, scheme in enumerate(summary.schemes):
        for kind, bars in zip(
            ("measured", "predicted"), left.containers[2 * index :], strict=False
        ):
            x, y = bars.lines[0].get_data()
            cells = [c for c in summary.cells if c.scheme == scheme]
            column = f"{kind}_s"
            for cell, mean, at in zip(cells, y, x, strict=True):
                runs = load_run(point_folder(sweep_folder, summary.values.index(cell.value)))
                samples = [float(r[column]) for r in runs.iterations if r["scheme"] == scheme]
                assert mean == pytest.approx(1e3 * np.mean(samples))
                assert (cell.measured if kind == "measured" else cell.predicted).lo == (
                    pytest.approx(mean_interval(np.array(samples))[0])
                )
                assert at != cell.value  # dodged beside the other marks
    assert len(right.containers) == 2  # the reduction, measured and predicted
    title = _title(fig)
    assert "N (workers)" in title and "8 iterations per scheme and point" in title
    assert "seed 3" in title


@pytest.mark.slow
def test_sweep_reductions_agree_with_the_sweep_table(sweep_folder):
    summary = load_sweep(sweep_folder)
    rows = read_rows(sweep_folder / "sweep.csv")
    table = reductions(rows, "measured_mean_s"), reductions(rows, "predicted_mean_s")
    for r in summary.reductions:
        assert r.measured.mean == pytest.approx(table[0][str(r.value)])
        assert r.predicted.mean == pytest.approx(table[1][str(r.value)])
        assert r.measured.lo < r.measured.mean < r.measured.hi
        assert r.baselines == ("single-bcgc", "single-bcgc")
    assert json.loads((sweep_folder / "sweep.json").read_text())["values"] == [3, 4]


def test_load_sweep_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    with pytest.raises(UserError, match="is not a sweep folder: sweep.json is missing"):
        load_sweep(tmp_path)


# --- intervals -----------------------------------------------------------------------------------


def test_mean_interval_is_student_t():
    # mean 2.5, sd 1.2910, t(0.975, 3) = 3.18245: 2.5 -+ 3.18245 * 1.2910 / 2
    assert mean_interval(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
        (0.44574, 4.55426), abs=1e-5
    )
    assert all(np.isnan(mean_interval(np.array([1.0]))))


def test_reduction_interval_by_the_delta_method_hand_case():
    # r = 1.5 / 2 = 0.75; d = ours - r * base = (-0.5, 0.5), sd 0.70711; t(0.975, 1) = 12.7062;
    # half = 12.7062 * 0.70711 / (sqrt(2) * 2) = 3.17655: 100 (1 - 0.75 -+ 3.17655)
    lo, hi = reduction_interval(np.array([1.0, 2.0]), np.array([2.0, 2.0]))
    assert (lo, hi) == pytest.approx((-292.655, 342.655), abs=1e-2)
    # exactly proportional pairs: no spread, the interval is the point 50%
    assert reduction_interval(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])) == (
        pytest.approx((50.0, 50.0))
    )


# --- style ---------------------------------------------------------------------------------------


def test_every_scheme_has_its_own_colour_and_marker():
    styles = [scheme_style(name) for name in SCHEMES]
    assert len({s.colour.lower() for s in styles}) == len(SCHEMES)
    assert len({s.marker for s in styles}) == len(SCHEMES)
    assert len({s.colour.lower() for s in SCHEME_STYLES.values()}) == len(SCHEME_STYLES)
    assert scheme_style("bcgc-opt/paper-SPSG") == scheme_style("bcgc-opt")  # a variant
    assert scheme_style("some-new-scheme") == scheme_style("some-new-scheme")  # stable


def test_figures_leave_the_callers_matplotlib_settings_alone_and_save_at_the_dpi(tmp_path):
    from bcgc_sim.style import new_figure, styled

    before = matplotlib.rcParams["font.size"]

    @styled
    def draw():
        assert matplotlib.rcParams["font.size"] == 8
        fig = new_figure(PAGE_IN, 2.0)
        fig.subplots().plot([0, 1], [0, 1])
        return fig

    path = save_figure(draw(), tmp_path / "f.png")
    assert matplotlib.rcParams["font.size"] == before
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG's IHDR
    assert (width, height) == (round(PAGE_IN * DPI), round(2.0 * DPI))
    assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temporaries
