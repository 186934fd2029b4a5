"""The look of every figure: one colour and marker per scheme, fonts sized for a paper's column,
and saving as PNG (and PDF beside it).

Colours come from colour-blind-safe sets: Okabe and Ito's "Color Universal Design" palette
(2008) for the schemes shown most, completed from Paul Tol's "muted" scheme (Tol, "Colour
Schemes", SRON technical note SRON/EPS/TN/09-002). Each scheme keeps its colour and marker in
every figure (`scheme_style`); the markers keep the figures readable in grey. Figures are plain
matplotlib Figures (`new_figure`), not pyplot's: the style applies inside `styled` functions
only and no backend is switched, so a notebook's own settings stay as they were. matplotlib is
imported on first use: the mapping alone needs none.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .results import writing

COLUMN_IN = 3.5  # width of one column of a two-column paper (inches)
PAGE_IN = 7.0  # width of both columns
DPI = 200  # of the PNG: 1400 pixels across a page-wide figure
MODEL_COLOUR = "#BBBBBB"  # the model's own curves (exact CDF, E[runtime]): light grey, drawn wide
REFERENCE_COLOUR = "#000000"  # reference lines: measured = predicted, deadlines


@dataclass(frozen=True)
class SchemeStyle:
    colour: str  # hex RGB
    marker: str  # matplotlib marker


SCHEME_STYLES: dict[str, SchemeStyle] = {
    "bcgc-opt": SchemeStyle("#0072B2", "o"),  # Okabe-Ito blue
    "bcgc-t": SchemeStyle("#56B4E9", "s"),  # sky blue
    "bcgc-f": SchemeStyle("#009E73", "^"),  # bluish green
    "single-bcgc": SchemeStyle("#CC79A7", "D"),  # reddish purple
    "tandon": SchemeStyle("#D55E00", "v"),  # vermillion
    "ferdinand-L": SchemeStyle("#E69F00", "P"),  # orange
    "ferdinand-L/2": SchemeStyle("#999933", "X"),  # Tol muted olive
    "uncoded": SchemeStyle("#666666", "*"),  # dark grey
    "bcgc-cdf-lg": SchemeStyle("#882255", "<"),  # Tol muted wine
    "bcgc-cdf-opt": SchemeStyle("#332288", ">"),  # Tol muted indigo
    "partial-gc": SchemeStyle("#44AA99", "h"),  # Tol muted teal
    "partial-gc-approx": SchemeStyle("#AA4499", "p"),  # Tol muted purple
    "bcgc-sys-opt": SchemeStyle("#994455", "x"),  # Tol medium-contrast dark red
    # the fair comparison's own rows (spec/partial-gc.md §5.3; scripts/compare_partial_*.py)
    "original-gc": SchemeStyle("#CC6677", "d"),  # Tol muted rose
    "bcgc-capped": SchemeStyle("#117733", "H"),  # Tol muted green
}
SPARE_STYLES = (  # for names not above (schemes added later): Tol muted
    SchemeStyle("#88CCEE", "8"),  # cyan
    SchemeStyle("#DDCC77", "1"),  # sand
)
SERIES_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
# the colour cycle of series that are not schemes (Okabe-Ito without its yellow)

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 9,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text in a paper's editor
}  # matplotlib rcParams, applied only inside `styled` functions and `save_figure`


def scheme_style(name: str) -> SchemeStyle:
    """The colour and marker of scheme `name`, the same in every figure. A name without its own
    entry (e.g. "bcgc-opt/paper-SPSG") takes its scheme's before the "/", else a spare one chosen
    by a stable hash of the name."""
    if name in SCHEME_STYLES:
        return SCHEME_STYLES[name]
    base = name.split("/")[0]
    if base in SCHEME_STYLES:
        return SCHEME_STYLES[base]
    return SPARE_STYLES[zlib.crc32(name.encode()) % len(SPARE_STYLES)]


def scheme_colour(name: str) -> str:
    return scheme_style(name).colour


def styled(draw: Callable) -> Callable:
    """Decorator: `draw` runs with the project's rcParams (fonts, grid, colour cycle), leaving
    the caller's matplotlib settings as they were."""

    @functools.wraps(draw)
    def with_style(*args, **kwargs):
        with _rc_context():
            return draw(*args, **kwargs)

    return with_style


def _rc_context():
    import matplotlib
    from cycler import cycler

    return matplotlib.rc_context({**RC, "axes.prop_cycle": cycler(color=SERIES_COLOURS)})


def new_figure(width_in: float, height_in: float, **kwargs):
    """A matplotlib Figure of the given size (inches) that is not registered with pyplot: no
    backend to switch, nothing to close. kwargs go to Figure (e.g. layout="constrained")."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), **kwargs)


def time_unit(largest_s: float) -> tuple[str, float]:
    """("ms", 1e3) for times below 1 s, else ("s", 1.0): the unit to show and the factor from
    seconds."""
    return ("ms", 1e3) if largest_s < 1.0 else ("s", 1.0)


def save_figure(fig, path: Path, pdf: bool = True) -> Path:
    """Save `fig` as a PNG at `path` (DPI) and, with `pdf`, as a PDF beside it (same stem): each
    whole or not at all (a temporary file, then rename), at the figure's own size (no cropping:
    lay figures out with layout="constrained"). Returns `path`.
    Raises WriteError."""
    path = Path(path)
    targets = [(path, "png")] + ([(path.with_suffix(".pdf"), "pdf")] if pdf else [])
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    for target, kind in targets:
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            with writing(target), _rc_context():
                fig.savefig(tmp, dpi=DPI, format=kind)
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return path
