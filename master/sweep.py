"""`bcgc sweep`: one config key swept over values, every point a real testbed run.

Each finished point appends its rows to sweep.csv at once, so an interrupted sweep resumes
where it stopped (run it again with the same --output) and loses nothing finished. The time
scale is fixed for the whole sweep so that runtimes are comparable across points; when
run.time_scale = 0 it is the largest of the points' own choices, so that no point's mean
iteration is shorter than run.iteration_seconds (the testbed's fixed overhead of about a
millisecond would otherwise weigh more at the fastest point). A grid this machine cannot run is refused before any
work starts.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bcgc_sim.config import Config, load_config, parse_override
from bcgc_sim.errors import UserError
from bcgc_sim.predict import evaluation_samples
from bcgc_sim.results import FolderLock, append_rows, write_atomically, writing
from bcgc_sim.schemes import build_plan
from bcgc_sim.sweep_summary import best_baseline, point_folder

from .cluster import check_capacity
from .runner import (
    check_run_memory,
    choose_time_scale,
    model_for_data,
    prepare_problem,
    run_testbed,
)

DEFAULT_VALUES = {  # scaled to a 2-core machine
    "cluster.workers": (4, 8, 12, 16),
    "straggler.rate": (10**-3.4, 10**-3.2, 10**-3.0, 10**-2.8, 10**-2.6),
    "model.coordinates": (200, 400, 800, 1600),
}
SWEEP_FIELDS = (
    "point", "parameter", "value", "scheme", "iterations", "measured_mean_s", "predicted_mean_s",
    "model_mean_s", "ratio",
)  # fmt: skip


@dataclass(frozen=True)
class SweepSpec:
    parameter: str
    values: tuple
    base: Config  # the config without the swept key
    overrides: tuple[str, ...]
    config_path: str | None


def point_config(spec: SweepSpec, value, time_scale: float | None, folder: Path) -> Config:
    extra = [f"{spec.parameter}={_toml(value)}", f"run.output='{folder}'"]
    if time_scale is not None:
        extra.append(f"run.time_scale={time_scale!r}")
    return load_config(spec.config_path, [*spec.overrides, *extra])


def _toml(value) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def check_grid(spec: SweepSpec, folder: Path) -> None:
    """Refuse up front a point this machine cannot run (workers, memory)."""
    for value in spec.values:
        try:
            config = point_config(spec, value, None, folder)
            check_capacity(config.cluster.workers)
            check_run_memory(config)
        except UserError as exc:
            raise UserError(
                f"sweep point {spec.parameter} = {value} cannot run here: {exc}"
            ) from None


def run_sweep(spec: SweepSpec, folder: Path, progress=None) -> list[dict]:
    """Run every point not yet in folder/sweep.csv; return all rows. The folder is locked
    while the sweep runs (a second sweep into it is refused)."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder)
    try:
        return _run_points(spec, folder, progress)
    finally:
        lock.release()


def _run_points(spec: SweepSpec, folder: Path, progress) -> list[dict]:
    meta_path, table = folder / "sweep.json", folder / "sweep.csv"
    meta = {
        "parameter": spec.parameter,
        "values": list(spec.values),
        "overrides": list(spec.overrides),
    }
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {meta_path}: {exc}; use another --output") from None
        if {k: old.get(k) for k in meta} != meta:
            raise UserError(
                f"{folder} holds a different sweep ({old.get('parameter')} = {old.get('values')}); use another --output"
            )
        time_scale = old["time_scale_s_per_unit"]
    else:
        check_grid(spec, folder)
        time_scale = max(_time_scale(point_config(spec, v, None, folder)) for v in spec.values)
        meta["time_scale_s_per_unit"] = time_scale
        meta["config"] = asdict(point_config(spec, spec.values[0], None, folder))
        write_atomically(meta_path, json.dumps(meta, indent=2))
    rows = read_rows(table)
    done = {int(r["point"]) for r in rows}
    for index, value in enumerate(spec.values):
        if index in done:
            if progress:
                progress(index, value, "already done")
            continue
        if progress:
            progress(index, value, "running")
        config = point_config(spec, value, time_scale, folder)
        summaries = run_testbed(config, point_folder(folder, index), log=lambda text: None)
        model_means = _model_means(config, time_scale)
        new = [
            {
                "point": index, "parameter": spec.parameter, "value": value, "scheme": s.scheme,
                "iterations": s.iterations, "measured_mean_s": s.measured_mean_s,
                "predicted_mean_s": s.predicted_mean_s, "model_mean_s": model_means[s.scheme],
                "ratio": s.ratio,
            }
            for s in summaries
        ]  # fmt: skip
        append_rows(table, SWEEP_FIELDS, new)  # whole rows or none
        rows += [{k: str(v) for k, v in r.items()} for r in new]
    if progress:
        progress(len(spec.values), None, "finished")
    return rows


def _time_scale(config: Config) -> float:
    data = prepare_problem(config)
    model = model_for_data(config, data)
    plans = {name: build_plan(name, model, config.scheme_options()) for name in config.run.schemes}
    return choose_time_scale(config, model, plans)


def _model_means(config: Config, time_scale: float) -> dict[str, float]:
    """E[runtime] in seconds of every scheme at this point (Monte Carlo, 20000 draws)."""
    data = prepare_problem(config)
    model = model_for_data(config, data)
    samples = evaluation_samples(model, config.seed, 20_000)
    out = {}
    for name in config.run.schemes:
        plan = build_plan(name, model, config.scheme_options())
        out[name] = float(np.mean(plan.raw_runtime(samples))) * model.scale * time_scale
    return out


def read_rows(table: Path) -> list[dict]:
    if not table.exists():
        return []
    with open(table) as handle:
        return list(csv.DictReader(handle))


def reductions(rows: list[dict], column: str) -> dict[str, float]:
    """Per swept value: % reduction of bcgc-opt's runtime over the best non-BCGC baseline
    (schemes that decode only an approximate gradient are no baseline)."""
    out = {}
    for value in dict.fromkeys(r["value"] for r in rows):
        at = {r["scheme"]: float(r[column]) for r in rows if r["value"] == value}
        baseline = best_baseline(at)
        if "bcgc-opt" in at and baseline is not None:
            out[value] = 100.0 * (1.0 - at["bcgc-opt"] / at[baseline])
    return out


def parse_values(texts: list[str]) -> tuple:
    return tuple(parse_override(f"v={t}")[1] for t in texts)
