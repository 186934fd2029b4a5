"""The `bcgc` command: plan, predict, run, validate, sweep, calibrate, config, master, worker,
keygen.

Part of the entry layer (bcgc_sim.entry), the one place that composes the model (bcgc_sim), the
master (master/) and the workers (workers/). Each command imports what it runs when it runs:
this module imports nothing heavy at its top, so `bcgc plan` and `bcgc predict` start without
ZeroMQ, master or workers, and every import, config load and data preparation happens inside
main's handlers. User mistakes, and failures of the machine a user can act on (a full disk, too
little memory, a folder another run writes into), end with one line `bcgc: error: ...` on stderr
and exit status 2, never a traceback. Ctrl-C ends with "bcgc: interrupted" and status 130
(SIGTERM: "bcgc: terminated", 143; results kept) at any moment once Python has started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .help import document

if TYPE_CHECKING:
    from ..config import Config
    from ..model.system import SystemModel
    from ..prediction import Prediction


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="TOML config (default: built-in defaults)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set cluster.workers=10 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help="system-model costs written by 'bcgc calibrate' (enables bcgc-sys-opt)",
    )


def _costs(args: argparse.Namespace):
    """The SystemCosts of --calibration FILE, or None."""
    if not getattr(args, "calibration", None):
        return None
    from ..calibration import load_costs

    return load_costs(args.calibration)


def _add_deadline_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="T",
        help="deadline T in model time units: P(tau <= T) and the deadline schemes "
        "(overrides predict.deadline)",
    )


def _config(args: argparse.Namespace) -> Config:
    from ..config import load_config

    overrides = list(args.overrides)
    check = getattr(args, "check", None)  # bcgc run --check / --no-check
    if check is not None:
        overrides.append(f"run.check={'true' if check else 'false'}")
    deadline = getattr(args, "deadline", None)
    if deadline is not None:
        if not (deadline > 0 and deadline < float("inf")):
            raise UserError(
                f"--deadline must be a positive number of model time units, got {deadline}"
            )
        overrides.append(f"predict.deadline={deadline!r}")
    return load_config(args.config, overrides)


def _check_model_memory(config: Config, schemes: list[str], samples: int) -> None:
    """Refuse before allocating: planning and evaluating `schemes` on `samples` draws."""
    from .api import check_model_memory

    check_model_memory(config, schemes, samples)


def _with_output(config: Config, args: argparse.Namespace) -> Config:
    """With --output, the run's data set goes inside that folder too (unless problem.data_dir
    is set): nothing is written elsewhere."""
    from .api import config_for_output

    return config_for_output(config, Path(args.output)) if args.output else config


def _check_model_time(config: Config, schemes: list[str], samples: int, exact: bool) -> None:
    """Refuse before starting: planning `schemes` and evaluating them on `samples` draws."""
    from ..prediction import check_time, time_needs

    needs = time_needs(config.system_model(), schemes, config.scheme_options(), samples, exact)
    what = f"{len(schemes)} schemes" if len(schemes) > 1 else schemes[0]
    step = f"{'predicting' if samples else 'planning'} {what} for N = {config.cluster.workers}"
    check_time(needs, step, config.predict.time_limit)


def cmd_plan(args: argparse.Namespace) -> int:
    from ..partial.plan import CDF_SAMPLES
    from ..schemes import PlanContext, build_plan
    from .api import describe_plan
    from .progress import ProgressLine

    config = _config(args)
    model = config.system_model()
    _check_model_memory(config, [args.scheme], max(config.optimize.tuning_samples, CDF_SAMPLES))
    _check_model_time(config, [args.scheme], 0, False)
    with ProgressLine(prefix=f"bcgc plan {args.scheme}") as progress:
        plan = build_plan(
            args.scheme, model, config.scheme_options(_costs(args)), PlanContext(progress=progress)
        )
    described = describe_plan(config, args.scheme, plan)
    if args.json:
        print(json.dumps(described.to_json()))
        return 0
    print(
        f"scheme {args.scheme}: N = {model.n_workers} workers, L = {model.coordinates} coordinates"
    )
    print(f"cycle times: {model.distribution.describe()}")
    print(plan.describe())
    _print_partial_plan(described)
    deadline = config.predict.deadline
    if deadline > 0:
        p = plan.completion_probability(deadline / model.scale, model.distribution)
        print(f"P(tau <= T) = {p:.6f} exactly, at T = {deadline:g} model time units")
    return 0


def _print_partial_plan(described) -> None:
    """partial-gc: each worker's stored chunks and its processing order (the first 20 workers)."""
    if described.assignment is None:
        return
    shown = list(zip(described.assignment, described.ordering, strict=True))
    print("worker  stores chunks  processes them in the order")
    for j, (stored, order) in enumerate(shown[:20]):
        print(f"{j:>6}  {' '.join(map(str, stored)):<13}  {' '.join(map(str, order))}")
    if len(shown) > 20:
        print(f"... {len(shown) - 20} more workers (all of them: --json)")


def cmd_predict(args: argparse.Namespace) -> int:
    from ..partial.plan import CDF_SAMPLES
    from ..prediction import predict
    from ..schemes import PARTIAL_SCHEMES, check_scheme_names, missing_deadline, needs_deadline
    from .progress import ProgressLine

    if args.model == "system":
        return _predict_system(args)
    config = _config(args)
    model = config.system_model()
    schemes = args.scheme or list(config.predict.schemes)
    check_scheme_names(schemes)
    options = config.scheme_options()
    if options.deadline is None:  # deadline schemes: an error if asked for, else not listed
        for name in args.scheme or []:
            if needs_deadline(name):
                raise missing_deadline(name)
        schemes = [name for name in schemes if not needs_deadline(name)]
        if not schemes:
            raise missing_deadline(config.predict.schemes[0])
    samples = max(config.predict.samples, config.optimize.tuning_samples, CDF_SAMPLES)
    _check_model_memory(config, schemes, samples)
    _check_model_time(config, schemes, config.predict.samples, config.predict.exact)
    with ProgressLine(prefix="bcgc predict") as progress:
        results = predict(
            model, schemes, options, config.predict.samples, config.predict.exact, progress
        )
    if args.json:
        _print_prediction_json(results, config.predict.samples, options.deadline)
    else:
        _print_prediction_table(results, model, config.predict.samples, options.deadline)
        if any(name in PARTIAL_SCHEMES for name in schemes):
            print(
                "partial-gc*: no exact E[tau]; P(tau<=T) by Monte Carlo over 20000 draws "
                "(bcgc_sim/partial/plan.py); R excludes the COMBINE/UPLOAD round trip"
            )
    return 0


def _print_prediction_json(results: list[Prediction], samples: int, deadline: float | None) -> None:
    from ..prediction import finite_or_none

    out = {}
    for r in results:
        if r.plan is None:
            out[r.scheme] = {"error": r.error}
            continue
        out[r.scheme] = {
            "R": finite_or_none(r.raw.mean),
            "expected_runtime": finite_or_none(r.expected_runtime.mean),
            "stderr": finite_or_none(r.expected_runtime.stderr),
            "expected_runtime_exact": finite_or_none(r.exact_expected_runtime),
            "x": r.partition(),
        }
        if deadline is not None:
            out[r.scheme]["completion_probability"] = r.completion_probability
    print(
        json.dumps(
            {
                "schemes": out,
                "unit": "model time units",
                "samples": samples,
                "deadline": deadline,
            }
        )
    )


def _print_prediction_table(
    results: list[Prediction], model: SystemModel, samples: int, deadline: float | None
) -> None:
    print(
        f"N = {model.n_workers}, L = {model.coordinates}, M = {model.samples}, C = {model.cycles:g}; "
        f"{model.distribution.describe()}"
    )
    print(f"E[tau] = (M C / N) R in model time units; Monte Carlo over {samples} draws of T")
    if deadline is not None:
        print(f"P(tau<=T): exact completion probability at T = {deadline:g} model time units")
    column = f" {'P(tau<=T)':>10}" if deadline is not None else ""
    w = max([14, *(len(r.scheme) for r in results)])
    header = (
        f"{'scheme':<{w}} {'R':>12} {'E[tau]':>12} {'+- stderr':>10} {'E[tau] exact':>13}{column}"
        "  plan"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.plan is None:
            print(f"{r.scheme:<{w}} {'n/a':>12}  {r.error}")
            continue
        exact = (
            f"{r.exact_expected_runtime:>13.5g}"
            if r.exact_expected_runtime is not None
            else f"{'-':>13}"
        )
        probability = (
            f" {r.completion_probability:>10.6f}" if r.completion_probability is not None else ""
        )
        print(
            f"{r.scheme:<{w}} {r.raw.mean:>12.5g} {r.expected_runtime.mean:>12.5g} "
            f"{r.expected_runtime.stderr:>10.3g} {exact}{probability}  {_short(r.plan.describe())}"
        )


def _predict_system(args: argparse.Namespace) -> int:
    """`bcgc predict --model system`: every scheme's runtime on the calibrated system model
    (natural mode: real compute on this machine's cores), in seconds."""
    from ..predict_system import format_system_predictions, predict_system, system_json
    from ..schemes import check_scheme_names, needs_deadline

    costs = _costs(args)
    if costs is None:
        raise UserError("--model system needs --calibration FILE (written by 'bcgc calibrate')")
    config = _config(args)
    schemes = args.scheme or [*config.predict.schemes, "bcgc-sys-opt"]
    check_scheme_names(schemes)
    schemes = [name for name in schemes if not needs_deadline(name)]
    results = predict_system(config, schemes, costs)
    if args.json:
        print(json.dumps(system_json(results, config)))
        return 0
    print(format_system_predictions(results, config, costs))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from master.runner import output_folder, run_testbed

    config = _with_output(_config(args), args)  # --check / --no-check: run.check
    folder = Path(args.output) if args.output else output_folder(config)
    summaries = run_testbed(
        config, folder, log=lambda text: print(text, file=sys.stderr), costs=_costs(args)
    )
    return _report_run(summaries, folder, args.json)


def _report_run(summaries, folder: Path, as_json: bool) -> int:
    from dataclasses import asdict

    from master.runner import print_summaries

    from ..results import json_safe

    if as_json:
        schemes = {
            s.scheme: {k: v for k, v in asdict(s).items() if k != "scheme"} for s in summaries
        }
        print(json.dumps(json_safe({"schemes": schemes, "output": str(folder)})))
    else:
        print_summaries(summaries, folder)
    return 0


def cmd_master(args: argparse.Namespace) -> int:
    from master.cluster import RemoteCluster
    from master.runner import (
        check_run_memory,
        max_message_bytes,
        output_folder,
        prepare_problem,
        run_testbed,
    )
    from master.transport import Curve

    from ..config import load_config

    config = _with_output(
        load_config(args.config, [*args.overrides, f"cluster.workers={args.workers}"]), args
    )
    if bool(args.key) != bool(args.allow):
        raise UserError(
            "CURVE needs both --key (the master's .key_secret) and --allow (folder of worker .key files)"
        )
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    startup_timeout = args.timeout if args.timeout is not None else config.run.startup_timeout
    curve = Curve.load(args.key, args.allow) if args.key else None
    folder = Path(args.output) if args.output else output_folder(config)
    check_run_memory(config, local=False)  # the workers' memory is on their own hosts
    data = prepare_problem(config)

    def cluster():
        return RemoteCluster(
            config.cluster.workers,
            args.bind,
            startup_timeout,
            max_message_bytes(data),
            curve,
            log=lambda text: print(text, file=sys.stderr),
            transport=config.cluster.transport,
        )

    summaries = run_testbed(
        config, folder, log=lambda text: print(text, file=sys.stderr), cluster_factory=cluster
    )
    return _report_run(summaries, folder, args.json)


def cmd_keygen(args: argparse.Namespace) -> int:
    import zmq

    from ..results import writing

    name = args.name
    if not name or name != Path(name).name or name.startswith("."):
        raise UserError(
            f"--name must be a plain file name such as master or worker-3, got '{name}'"
        )
    folder = Path(args.dir)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    existing = [path for path in (secret, public) if path.exists()]
    if existing and not args.force:
        raise UserError(
            f"{existing[0]} already exists and is kept: give --force to replace the pair (then "
            "hand the new public key to the master's --allow folder or to the workers)"
        )
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = zmq.curve_keypair()
    with writing(secret):
        _write_key_file(secret, _certificate(name, public_key, secret_key), 0o600, args.force)
    with writing(public):
        _write_key_file(public, _certificate(name, public_key, None), 0o644, args.force)
    if args.json:
        print(json.dumps({"public_key": str(public), "secret_key": str(secret)}))
        return 0
    print(f"public key: {public}")
    print(f"secret key: {secret}  (mode 0600: keep it private)")
    print(
        "workers: put each worker's public .key file in the folder given to 'bcgc master --allow'"
    )
    return 0


def _certificate(name: str, public: bytes, secret: bytes | None) -> str:
    """A key file in ZeroMQ's certificate layout (what zmq.auth.load_certificate reads)."""
    kind = "secret" if secret is not None else "public"
    lines = [
        f"#   {kind} CURVE key '{name}', made by bcgc keygen",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write_key_file(path: Path, text: str, mode: int, replace: bool) -> None:
    """Write `path` with `mode` from the moment it exists (never readable by others if mode
    says so). Without `replace` an existing file is an error (O_EXCL); with it, a temporary file
    replaces the old one at once. A failed write leaves no file behind."""
    from ..results import write_at

    target = path.with_name(f".{path.name}.tmp{os.getpid()}") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask took away
            write_at(fd, text.encode(), 0)
        finally:
            os.close(fd)
        if replace:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def cmd_validate(args: argparse.Namespace) -> int:
    from .. import plots
    from ..validation import format_table, load_run, to_json, validate_run

    if args.source:
        folder = Path(args.source)
    else:
        from master.runner import output_folder, run_testbed

        config = _with_output(_config(args), args)
        folder = Path(args.output) if args.output else output_folder(config)
        run_testbed(
            config, folder, log=lambda text: print(text, file=sys.stderr), costs=_costs(args)
        )
    run = load_run(folder)
    # T in model time units: --deadline, else the run's predict.deadline (0 = none)
    deadline = args.deadline if args.deadline is not None else run.config.predict.deadline
    results = validate_run(run, deadline)
    figures = [
        plots.plot_per_iteration(run, results, folder / "validate-per-iteration.png"),
        plots.plot_cdfs(run, results, folder / "validate-cdf.png"),
    ]
    for r in results:
        path = folder / f"timeline-{_file_name(r.scheme)}.png"
        note = "the typical one: nearest the median"
        figures.append(plots.plot_timeline(run, r.scheme, r.typical_iteration(), path, note))
    costs = _costs(args)
    system = None
    if costs is not None and run.config.run.mode == "natural":
        from ..predict_system import system_validation

        system = system_validation(run, costs)
    if args.json:
        out = to_json(results) | {"output": str(folder)}
        if system is not None:
            for name, values in system.items():
                out["schemes"].setdefault(name, {}).update(values)
        print(json.dumps(out))
        return 0
    print(format_table(results))
    if system is not None:
        from ..predict_system import format_system_validation

        print(format_system_validation(system))
    print(f"figures: {', '.join(str(f) for f in figures)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import datetime as dt

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from master.sweep import SweepSpec, reductions, run_sweep

    from .. import plots
    from ..sweep_summary import load_sweep

    base = _config(args)  # validates the config and the overrides
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    param = args.param or "cluster.workers"
    folder = Path(args.output or Path(base.run.output) / f"sweep-{param}-{stamp}")
    param, values, total = _sweep_values(args, folder)
    spec = SweepSpec(param, values, base, tuple(args.overrides), args.config)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} points"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("sweep", total=total)

        def progress(index, value, state):
            text = f"{param} = {value}: {state}" if value is not None else state
            bar.update(task, completed=index, description=text)

        rows = run_sweep(spec, folder, progress)
    measured, predicted = reductions(rows, "measured_mean_s"), reductions(rows, "predicted_mean_s")
    figure = plots.plot_sweep(load_sweep(folder), folder / "sweep.png")
    if args.json:
        from ..results import json_safe

        reduction = [
            {"value": v, "measured_pct": measured[v], "predicted_pct": predicted.get(v)}
            for v in measured
        ]
        out = {"parameter": param, "rows": rows, "reductions": reduction, "output": str(folder)}
        print(json.dumps(json_safe(out)))
        return 0
    _print_sweep_table(param, rows, measured, predicted)
    print(f"results: {folder / 'sweep.csv'}, figure: {figure}")
    return 0


def _sweep_values(args: argparse.Namespace, folder: Path) -> tuple[str, tuple, int]:
    """(parameter, values, points in all) of `bcgc sweep`: --param, else the one of the sweep
    already in the folder, else cluster.workers; --values (added to those of a sweep already
    there), else the folder's, else a default grid."""
    from master.sweep import DEFAULT_VALUES, parse_values, stored_sweep

    stored = stored_sweep(folder)
    param = args.param or (stored[0] if stored else "cluster.workers")
    old = stored[1] if stored and stored[0] == param else ()
    if args.values:
        values = parse_values(args.values)
    elif old:
        values = ()  # resume: the folder's own values
    elif param in DEFAULT_VALUES:
        values = DEFAULT_VALUES[param]
    else:
        raise UserError(f"give --values for --param {param}")
    return param, values, len(dict.fromkeys([*old, *values]))


def _print_sweep_table(param: str, rows: list[dict], measured: dict, predicted: dict) -> None:
    w = max([14, *(len(r["scheme"]) for r in rows)])
    print(
        f"{param:>18} {'scheme':<{w}} {'measured s':>11} {'predicted s':>12} {'model s':>9} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['value']:>18} {r['scheme']:<{w}} {float(r['measured_mean_s']):>11.4f} "
            f"{float(r['predicted_mean_s']):>12.4f} {float(r['model_mean_s']):>9.4f} {float(r['ratio']):>6.3f}"
        )
    print(
        "reduction of bcgc-opt over the best baseline (%), measured vs predicted (same cycle times):"
    )
    for value in measured:
        print(f"  {param} = {value}: {measured[value]:.1f} vs {predicted[value]:.1f}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    import datetime as dt

    from master.calibrate import calibrate, format_calibration

    config = _config(args)  # validates the config and the overrides
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(args.output or Path(config.run.output) / f"calibrate-{stamp}")
    result = calibrate(
        args.config, args.overrides, folder, log=lambda text: print(text, file=sys.stderr)
    )
    print(json.dumps(result) if args.json else format_calibration(result))
    return 0


def _file_name(scheme: str) -> str:
    return scheme.replace("/", "-")


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="bcgc",
        description="Block coordinate gradient coding: predict and measure.",
        epilog="'bcgc COMMAND --help' describes each command, with an example",
    )
    parser.add_argument("--version", action="version", version=f"bcgc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from ..schemes import SCHEMES

    plan = sub.add_parser("plan", help="print the block partition x of a scheme")
    _add_config_arguments(plan)
    _add_deadline_argument(plan)
    plan.add_argument("--scheme", default="bcgc-opt", help=f"one of: {', '.join(SCHEMES)}")
    plan.set_defaults(func=cmd_plan)

    pred = sub.add_parser("predict", help="predicted R, E[tau] and standard error of every scheme")
    _add_config_arguments(pred)
    _add_deadline_argument(pred)
    pred.add_argument("--scheme", action="append", help="only this scheme (repeatable)")
    pred.add_argument(
        "--model",
        choices=("paper", "system"),
        default="paper",
        help="paper: the papers' runtime model (model time units); system: the calibrated "
        "system model of natural runs on this machine (seconds; needs --calibration)",
    )
    pred.set_defaults(func=cmd_predict)

    run = sub.add_parser("run", help="run the schemes on a local cluster: measured vs predicted")
    _add_config_arguments(run)
    run.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        help="check every decoded gradient against the uncoded one, or not (default: run.check "
        "of the config, true)",
    )
    run.add_argument("--output", "-o", metavar="DIR", help="folder for this run's results")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="run the schemes and compare measurement with prediction")
    _add_config_arguments(val)
    _add_deadline_argument(val)
    val.add_argument("--from", dest="source", metavar="DIR", help="validate an existing run folder")
    val.add_argument("--output", "-o", metavar="DIR", help="folder for this run's results")
    val.set_defaults(func=cmd_validate)

    swp = sub.add_parser("sweep", help="sweep one config key on the testbed (resumable)")
    _add_config_arguments(swp)
    swp.add_argument(
        "--param", help="config key to sweep (default: the folder's, else cluster.workers)"
    )
    swp.add_argument(
        "--values",
        nargs="+",
        help="its values; added to those of a sweep already in --output (default: the folder's, "
        "else a grid scaled to 2 cores)",
    )
    swp.add_argument(
        "--output", "-o", metavar="DIR", help="sweep folder; run again to resume or extend"
    )
    swp.set_defaults(func=cmd_sweep)

    cal = sub.add_parser(
        "calibrate", help="natural stragglers: measure cycle times, fit, predict and validate"
    )
    _add_config_arguments(cal)
    cal.add_argument("--output", "-o", metavar="DIR", help="folder for the calibration")
    cal.set_defaults(func=cmd_calibrate)

    mas = sub.add_parser(
        "master", help="multi-host: bind, wait for N remote workers, run the schemes"
    )
    _add_config_arguments(mas)
    mas.add_argument(
        "--bind", default="tcp://127.0.0.1:5555", help="endpoint, e.g. tcp://0.0.0.0:5555"
    )
    mas.add_argument("--workers", type=int, required=True, help="number of workers to wait for (N)")
    mas.add_argument("--key", help="the master's CURVE secret key file (required off loopback)")
    mas.add_argument("--allow", help="folder of allowed worker public keys (.key files)")
    mas.add_argument("--output", "-o", metavar="DIR", help="folder for this run's results")
    mas.add_argument(
        "--timeout", type=float, metavar="SECONDS",
        help="wait at most this long for the N workers at start-up, then name who connected "
        "and who was refused, and exit 2 (default: run.startup_timeout, 60)",
    )  # fmt: skip
    mas.set_defaults(func=cmd_master)

    sub.add_parser(
        "worker",
        help="a worker process for 'bcgc master' (see 'bcgc worker --help')",
        add_help=False,
    )

    key = sub.add_parser("keygen", help="create a CURVE key pair (NAME.key, NAME.key_secret)")
    key.add_argument("--dir", default="keys", help="folder for the key files")
    key.add_argument("--name", required=True, help="e.g. master, or worker-3")
    key.add_argument("--force", action="store_true", help="replace an existing pair of that name")
    key.add_argument("--json", action="store_true", help="print the two paths as JSON")
    key.set_defaults(func=cmd_keygen)

    cfg = sub.add_parser("config", help="list every config key: meaning, default, value")
    _add_config_arguments(cfg)
    cfg.set_defaults(func=cmd_config)
    document(sub.choices)
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    from .config_command import print_config

    print_config(_config(args), args.json)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (clean shutdown, results kept), exit status 143."""


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM while `bcgc` runs (a context manager that restores the
    handlers it found; a SIGINT ignored by the shell stays ignored).

    Each signal raises KeyboardInterrupt (SIGTERM: Terminated) in the main thread and is
    remembered in `received`, so that the command ends as stopped even when a library turned
    the exception into another (an extension module's import reports "ImportError:
    initialization failed"), or when Python could not raise it where it landed (a weakref
    callback of the import system, a __del__): there it would be swallowed with a traceback, so
    it is sent again a moment later, to land in ordinary code."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for signum, usual in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
        ):
            if signal.getsignal(signum) is usual:
                self.previous[signum] = signal.signal(signum, self._raise)
        self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc) -> None:
        sys.unraisablehook = self.previous_hook
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _raise(self, signum: int, frame) -> None:
        self.received.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _unraisable(self, unraisable) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt) and self.received:
            threading.Timer(0.005, os.kill, (os.getpid(), self.received[-1])).start()
            return
        self.previous_hook(unraisable)

    def status(self, exc: BaseException) -> int | None:
        """130 (Ctrl-C) or 143 (SIGTERM) if a stop signal ended the command, else None."""
        if not (self.received or isinstance(exc, KeyboardInterrupt)):
            return None
        if self.received:
            return 143 if self.received[0] == signal.SIGTERM else 130
        return 143 if isinstance(exc, Terminated) else 130


def main(argv: list[str] | None = None) -> int:
    """The `bcgc` command; returns the exit status. Every import happens inside the handlers."""
    as_program = argv is None
    stop = StopSignals()
    try:
        with stop:
            argv = sys.argv[1:] if argv is None else argv
            if argv[:1] == ["worker"]:  # the worker has its own parser and signal handling
                from workers.worker import main as worker_main

                return worker_main(argv[1:], prog="bcgc worker")
            args = build_parser().parse_args(argv)
            return args.func(args)
    except BaseException as exc:  # noqa: BLE001 - _exit_status re-raises what it does not know
        return _exit_status(exc, stop)
    finally:
        if as_program:  # the work is over: a late Ctrl-C must not print a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_status(exc: BaseException, stop: StopSignals) -> int:
    """The exit status, and the one line on stderr, of a command that ended with `exc`; anything
    that is neither a stop signal nor a failure a user can act on is raised again (a bug: its
    traceback is wanted)."""
    stopped = stop.status(exc)
    if stopped is not None:
        # A KeyboardInterrupt that left an exec() of a string on its way here (scipy's imports
        # run some) makes `python -m` kill itself by SIGINT at exit despite the status below;
        # a successful exec() clears that mark (CPython's run_eval_code_obj).
        exec("")
        print("bcgc: terminated" if stopped == 143 else "bcgc: interrupted", file=sys.stderr)
        return stopped
    if isinstance(exc, UserError):
        return _fail(str(exc))
    if isinstance(exc, MemoryError):
        return _fail(
            f"out of memory ({exc or 'an allocation failed'}): lower model.coordinates, "
            "model.samples, cluster.workers or predict.samples"
        )
    if isinstance(exc, BrokenPipeError):  # e.g. 'bcgc predict | head -1': the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if isinstance(exc, OSError):  # a file the command could not read or write
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}")
    raise exc


def _fail(message: str) -> int:
    print(f"bcgc: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
