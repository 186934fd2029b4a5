"""Kill workers at random moments of real runs and count what happens.

Each trial runs the testbed of `bcgc run` (N = 4 local workers, a small least-squares problem,
heartbeat 0.1 s, liveness 5) on two schemes with one `cluster.on_failure` mode, and SIGKILLs one
random worker at a moment drawn uniformly over the run's expected length, counted from the
moment the cluster is up (set-ups and the gap between the schemes included). Trials cycle over
the scheme pairs and both modes. Outcomes:

  completed  the run finished and every decoded gradient was exact (relative error <= 1e-9)
  error      the run ended with one error line naming the dead worker and a block or chunk
  late       the kill came after the run's last iteration (nothing to notice)

and the failures, any of which makes the exit status 1:

  wrong      the run finished with an inexact gradient
  stall      an iteration ended at the stall limit (a death not noticed)
  hang       the trial did not end within --trial-timeout seconds
  other      any other error

Times, from the kill: `noticed` to the master's "worker r is dead" log line, `handled` to its
"the run ends" line (the error), or to "worker r replaced" when a replacement took over.

    python scripts/fault_kills.py --kills 30 --seed 1
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcgc_sim.config import load_config
from master.cluster import LocalCluster
from master.runner import max_message_bytes, prepare_problem, run_testbed
from master.session import RunError

SCHEME_PAIRS = (
    ("uncoded", "tandon"),
    ("bcgc-opt", "single-bcgc"),
    ("tandon", "partial-gc"),
    ("bcgc-t", "uncoded"),
    ("partial-gc", "bcgc-opt"),
)
MODES = ("error", "replace")
FAILURES = ("wrong", "stall", "hang", "other")
N = 4
ITERATIONS = 6
ITERATION_S = 0.03


class TrialTimeout(Exception):
    """The trial's alarm: the run hung."""


@dataclass
class Trial:
    schemes: tuple[str, str]
    mode: str
    kill_at_s: float  # after the cluster was up
    rank: int
    outcome: str = ""
    noticed_ms: float | None = None
    handled_ms: float | None = None
    detail: str = ""


class LogTimes(logging.Handler):
    """(monotonic time, message) of every line the master logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))

    def first(self, text: str, after: float) -> float | None:
        return next((t for t, line in self.lines if t >= after and text in line), None)


def run_trial(trial: Trial, folder: Path, timeout_s: float) -> Trial:
    config = load_config(
        None,
        [
            f"cluster.workers={N}",
            "model.samples=80",
            "model.coordinates=30",
            f"run.iterations={ITERATIONS}",
            f"run.iteration_seconds={ITERATION_S}",
            "cluster.heartbeat=0.1",
            "cluster.liveness=5",
            f"cluster.on_failure='{trial.mode}'",
            "run.schemes=[" + ", ".join(f"'{s}'" for s in trial.schemes) + "]",
            f"run.output='{folder}'",
            "predict.samples=2000",
        ],
    )
    data = prepare_problem(config)
    clusters, kills, closing = [], [], []

    class Cluster(LocalCluster):
        def close(self, grace_s: float = 0.5) -> None:
            closing.append(time.monotonic())  # the run's work is over from here
            super().close(grace_s)

    def cluster():
        clusters.append(
            Cluster(
                N,
                config.run.startup_timeout,
                folder / "run" / "logs",
                (),
                max_message_bytes(data),
                config.cluster.heartbeat,
                config.cluster.liveness,
            )
        )
        return clusters[-1]

    def kill() -> None:
        process = clusters[0].processes[trial.rank]
        kills.append(time.monotonic())
        process.send_signal(signal.SIGKILL)

    timer = threading.Timer(trial.kill_at_s, kill)

    def log(text: str) -> None:
        if not timer.is_alive() and not kills:  # the first scheme starts: the cluster is up
            timer.start()

    times = LogTimes()
    logging.getLogger("bcgc.master").addHandler(times)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        summaries = run_testbed(config, folder / "run", log=log, cluster_factory=cluster)
        ended, error = time.monotonic(), None
    except TrialTimeout:
        ended, error = time.monotonic(), "hang"
    except RunError as exc:
        ended, error = time.monotonic(), str(exc)
    except Exception as exc:  # noqa: BLE001 - counted as a failure, with its text
        ended, error = time.monotonic(), f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        timer.cancel()
        logging.getLogger("bcgc.master").removeHandler(times)
    if not kills or (closing and kills[0] >= closing[0]):
        trial.outcome = "late"
        return trial
    killed = kills[0]
    noticed = times.first(f"worker {trial.rank} is dead", killed)
    replaced = times.first(f"worker {trial.rank} replaced", killed)
    trial.noticed_ms = None if noticed is None else 1e3 * (noticed - killed)
    if error is None:
        exact = all(
            s.gradient_max_rel_error is not None and s.gradient_max_rel_error <= 1e-9
            for s in summaries
        )
        trial.outcome = "completed" if exact else "wrong"
        if replaced is not None:
            trial.handled_ms = 1e3 * (replaced - killed)
    elif error == "hang":
        trial.outcome = "hang"
    else:
        trial.detail = error
        failed = times.first("the run ends", killed) or ended
        trial.handled_ms = 1e3 * (failed - killed)
        if "no usable" in error:
            trial.outcome = "stall"
        elif _names(error, trial.rank):
            trial.outcome = "error"
        else:
            trial.outcome = "other"
    return trial


def _names(error: str, rank: int) -> bool:
    """The one-line error names worker `rank` and a block or chunk (or R1's lost upload)."""
    match = re.search(r"worker\(s\) \[?([\d, ]+)\]?", error)
    ranks = {int(r) for r in match.group(1).replace(" ", "").split(",") if r} if match else set()
    return rank in ranks and any(word in error for word in ("block", "chunk", "cannot recover"))


def _alarm(signum, frame) -> None:
    raise TrialTimeout()


def trials(kills: int, seed: int) -> list[Trial]:
    rng = np.random.default_rng(seed)
    expected_s = 2 * (0.02 + ITERATIONS * ITERATION_S)  # two set-ups and their iterations
    combos = itertools.cycle(itertools.product(SCHEME_PAIRS, MODES))
    return [
        Trial(pair, mode, float(rng.uniform(0, expected_s)), int(rng.integers(N)))
        for (pair, mode), _ in zip(combos, range(kills), strict=False)
    ]


def summary(done: list[Trial]) -> list[str]:
    counts = {
        o: sum(t.outcome == o for t in done) for o in ("completed", "error", "late", *FAILURES)
    }
    lines = ["outcomes: " + ", ".join(f"{o} {c}" for o, c in counts.items())]
    for name in ("noticed_ms", "handled_ms"):
        values = [getattr(t, name) for t in done if getattr(t, name) is not None]
        if values:
            lines.append(
                f"{name[:-3]}: {len(values)} kills, min {min(values):.0f} ms, median "
                f"{statistics.median(values):.0f} ms, max {max(values):.0f} ms"
            )
    unnoticed = [t for t in done if t.outcome in ("completed", "error") and t.noticed_ms is None]
    lines.append(
        f"not noticed before the run ended (the rank was no longer needed): {len(unnoticed)}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trial-timeout", type=float, default=60.0, help="seconds per trial")
    parser.add_argument("--only", type=int, default=None, help="run this trial of the list alone")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bcgc-fault-kills-"))
    print(f"run folders in {root}")
    print(
        f"{'#':>3} {'schemes':<24} {'mode':<8} {'kill s':>6} {'rank':>4} {'outcome':<9} "
        f"{'noticed ms':>10} {'handled ms':>10}  detail"
    )
    done = []
    for index, trial in enumerate(trials(args.kills, args.seed)):
        if args.only is not None and index != args.only:
            continue
        begun = time.monotonic()
        run_trial(trial, root / str(index), args.trial_timeout)
        trial.detail = f"[{time.monotonic() - begun:.1f} s] {trial.detail}"
        done.append(trial)
        noticed = "-" if trial.noticed_ms is None else f"{trial.noticed_ms:.0f}"
        handled = "-" if trial.handled_ms is None else f"{trial.handled_ms:.0f}"
        print(
            f"{index:>3} {'+'.join(trial.schemes):<24} {trial.mode:<8} {trial.kill_at_s:>6.3f} "
            f"{trial.rank:>4} {trial.outcome:<9} {noticed:>10} {handled:>10}  {trial.detail[:90]}",
            flush=True,
        )
    for line in summary(done):
        print(line)
    return 1 if any(t.outcome in FAILURES for t in done) else 0


if __name__ == "__main__":
    sys.exit(main())
