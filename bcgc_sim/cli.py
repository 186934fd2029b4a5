"""The `bcgc` command: plan, predict (and, as they land, run, validate, sweep, ...).

User mistakes end with one line `bcgc: error: ...` on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import Config, load_config
from .errors import UserError
from .predict import finite_or_none, predict
from .schemes import SCHEMES, build_plan, check_scheme_names


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


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def cmd_plan(args: argparse.Namespace) -> int:
    config = _config(args)
    model = config.system_model()
    plan = build_plan(args.scheme, model, config.scheme_options())
    from .predict import Prediction

    x = Prediction(args.scheme, plan, None, None, None).partition()
    if args.json:
        print(json.dumps({"scheme": args.scheme, "x": x}))
        return 0
    print(
        f"scheme {args.scheme}: N = {model.n_workers} workers, L = {model.coordinates} coordinates"
    )
    print(f"cycle times: {model.distribution.describe()}")
    print(plan.describe())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    config = _config(args)
    model = config.system_model()
    schemes = args.scheme or list(config.predict.schemes)
    check_scheme_names(schemes)
    results = predict(
        model, schemes, config.scheme_options(), config.predict.samples, config.predict.exact
    )
    if args.json:
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
        print(
            json.dumps(
                {"schemes": out, "unit": "model time units", "samples": config.predict.samples}
            )
        )
        return 0
    print(
        f"N = {model.n_workers}, L = {model.coordinates}, M = {model.samples}, C = {model.cycles:g}; "
        f"{model.distribution.describe()}"
    )
    print(
        f"E[tau] = (M C / N) R in model time units; Monte Carlo over {config.predict.samples} draws of T"
    )
    header = f"{'scheme':<14} {'R':>12} {'E[tau]':>12} {'+- stderr':>10} {'E[tau] exact':>13}  plan"
    print(header)
    print("-" * len(header))
    for r in results:
        if r.plan is None:
            print(f"{r.scheme:<14} {'n/a':>12}  {r.error}")
            continue
        exact = (
            f"{r.exact_expected_runtime:>13.5g}"
            if r.exact_expected_runtime is not None
            else f"{'-':>13}"
        )
        print(
            f"{r.scheme:<14} {r.raw.mean:>12.5g} {r.expected_runtime.mean:>12.5g} "
            f"{r.expected_runtime.stderr:>10.3g} {exact}  {_short(r.plan.describe())}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from master.runner import output_folder, print_summaries, run_testbed

    config = _config(args)
    if args.check:
        config = load_config(args.config, [*args.overrides, "run.check=true"])
    folder = Path(args.output) if args.output else output_folder(config)
    summaries = run_testbed(config, folder, log=lambda text: print(text, file=sys.stderr))
    if args.json:
        print(
            json.dumps(
                {
                    "schemes": {
                        s.scheme: {
                            "iterations": s.iterations,
                            "measured_mean_s": s.measured_mean_s,
                            "predicted_mean_s": s.predicted_mean_s,
                            "ratio": s.ratio,
                            "median_ratio": s.median_ratio,
                            "final_loss": s.final_loss,
                            "gradient_max_rel_error": s.gradient_max_rel_error,
                            "stale_messages": s.stale_messages,
                            "overruns": s.overruns,
                        }
                        for s in summaries
                    },
                    "output": str(folder),
                }
            )
        )
        return 0
    print_summaries(summaries, folder)
    return 0


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bcgc", description="Block coordinate gradient coding: predict and measure."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    plan = sub.add_parser("plan", help="print the block partition x of a scheme")
    _add_config_arguments(plan)
    plan.add_argument("--scheme", default="bcgc-opt", help=f"one of: {', '.join(SCHEMES)}")
    plan.set_defaults(func=cmd_plan)

    pred = sub.add_parser("predict", help="predicted R, E[tau] and standard error of every scheme")
    _add_config_arguments(pred)
    pred.add_argument("--scheme", action="append", help="only this scheme (repeatable)")
    pred.set_defaults(func=cmd_predict)

    run = sub.add_parser("run", help="run the schemes on a local cluster: measured vs predicted")
    _add_config_arguments(run)
    run.add_argument(
        "--check", action="store_true", help="check every decoded gradient (run.check)"
    )
    run.add_argument("--output", "-o", metavar="DIR", help="folder for this run's results")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"bcgc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bcgc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
