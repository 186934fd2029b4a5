"""What `bcgc COMMAND --help` says beyond its options: a description and an example each, and a
formatter that shows every option's default."""

from __future__ import annotations

import argparse

DESCRIPTIONS = {
    "plan": "Plan one scheme under the config and print its plan: the block partition x "
    "(coordinates per redundancy level) of the block schemes, the storage, assignment and "
    "ordering of partial-gc; with a deadline T also P(tau <= T), exactly.",
    "predict": "Predict every scheme's runtime under the config, instantly: R, E[tau] = (M C / N) "
    "R in model time units by Monte Carlo with its standard error, E[tau] exactly, and with a "
    "deadline T the exact P(tau <= T). No processes are started.",
    "run": "Run the schemes on a local cluster of N real worker processes (ZeroMQ, pinned to "
    "cores) under the same seeded stragglers, and print per scheme the measured and predicted "
    "mean runtime. Results go into a new folder (iterations.csv, messages.csv, blocks.csv, "
    "run.json, logs).",
    "validate": "Run the schemes (or read a finished run with --from) and compare measurement "
    "with prediction per iteration: ratio, Kolmogorov-Smirnov distance to the model's CDF, the "
    "fraction finished by a deadline; writes PNG figures into the run folder.",
    "sweep": "Sweep one config key over values, every point a real testbed run; sweep.csv grows "
    "as points finish. Run again with the same --output to resume, or with more --values to "
    "extend the sweep (same parameter and base config).",
    "calibrate": "Natural stragglers: run without injected delays, measure the cycle times, fit "
    "a law to them, then predict with it and validate against the measurement.",
    "config": "List every config key with its meaning, built-in default and the value in effect "
    "after --config and --set.",
    "master": "Multi-host: bind an endpoint, wait for N remote workers ('bcgc worker "
    "--connect ...' on each host), then run the schemes as 'bcgc run' does.",
    "keygen": "Create a CURVE key pair (NAME.key public, NAME.key_secret private) for "
    "authenticated, encrypted multi-host runs.",
}

EXAMPLES = {
    "plan": "bcgc plan --scheme bcgc-opt --config configs/paper.toml\n"
    "  bcgc plan --scheme bcgc-cdf-opt --deadline 6e7 --json",
    "predict": "bcgc predict --config configs/paper.toml\n"
    "  bcgc predict --set cluster.workers=30 --deadline 6e7 --json",
    "run": "bcgc run --set cluster.workers=12 --set run.iterations=30\n"
    "  bcgc run --no-check -o results/demo --json",
    "validate": "bcgc validate --set run.iterations=40\n"
    "  bcgc validate --from results/run-... --deadline 4.6e7",
    "sweep": "bcgc sweep --config configs/sweep-workers.toml -o results/sweep-N\n"
    "  bcgc sweep -o results/sweep-N --values 20   (adds N = 20 to that sweep)",
    "calibrate": "bcgc calibrate --config configs/natural.toml",
    "config": "bcgc config --config configs/paper.toml --set cluster.workers=10\n"
    "  bcgc config --json",
    "master": "bcgc master --config configs/multi-host.toml --bind tcp://0.0.0.0:5555 "
    "--workers 8 --key keys/master.key_secret --allow keys/allowed",
    "keygen": "bcgc keygen --dir keys --name master",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions wrapped, examples kept as written, each option's default shown when it has
    one (None and empty lists are no default; flags say what they do)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "(default" in text
            or not action.option_strings
            or default in (None, argparse.SUPPRESS, [], False)
            or isinstance(action, argparse.BooleanOptionalAction)
        ):
            return text
        return text + " (default: %(default)s)"


def document(subcommands: dict[str, argparse.ArgumentParser]) -> None:
    """Give each subcommand parser its description, example and formatter."""
    import textwrap

    for name, parser in subcommands.items():
        if name not in DESCRIPTIONS:
            continue
        parser.description = textwrap.fill(DESCRIPTIONS[name], 88)
        parser.epilog = f"example:\n  {EXAMPLES[name]}"
        parser.formatter_class = HelpFormatter
