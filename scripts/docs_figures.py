"""Regenerate the figures that README.md and docs/ show (docs/figures/*.png).

Runs, on this machine, exactly the commands README names for each figure, into a temporary
folder, and copies the figures into docs/figures/:

  validate-cdf.png, validate-per-iteration.png, timeline-bcgc-opt.png
      bcgc validate --set run.iterations=40  (the demo: N = 8, L = 400, M = 800, five schemes)
  sweep.png
      bcgc sweep --param cluster.workers --values 4 8 12 16 --set run.iterations=20
  system_model.png (when docs/system_model.json exists)
      its figure redrawn from that file (scripts/bench_system_model.py --replot); the
      measurement itself: scripts/bench_system_model.py --json docs/system_model.json

About 2 minutes on 2 cores. Run it alone on the machine: the figures show measured times.

    python scripts/docs_figures.py [--only validate sweep system]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
JOBS = ("validate", "sweep", "system")


def bcgc(*args: str) -> None:
    """Run one bcgc command as a user would; stop on failure."""
    subprocess.run([sys.executable, "-m", "bcgc_sim", *args], check=True, cwd=ROOT)


def validate(work: Path) -> list[Path]:
    folder = work / "validate"
    bcgc("validate", "--set", "run.iterations=40", "-o", str(folder))
    names = ("validate-cdf.png", "validate-per-iteration.png", "timeline-bcgc-opt.png")
    return [folder / name for name in names]


def sweep(work: Path) -> list[Path]:
    folder = work / "sweep"
    values = ["--values", "4", "8", "12", "16"]
    bcgc(
        "sweep",
        "--param",
        "cluster.workers",
        *values,
        "--set",
        "run.iterations=20",
        "-o",
        str(folder),
    )
    return [folder / "sweep.png"]


def system(work: Path) -> list[Path]:
    results = ROOT / "docs" / "system_model.json"
    if not results.exists():
        print(f"skipped system-model.png: no {results.relative_to(ROOT)}", file=sys.stderr)
        return []
    figure = work / "system_model.png"
    script = ROOT / "scripts" / "bench_system_model.py"
    subprocess.run(
        [sys.executable, str(script), "--replot", str(results), "--figure", str(figure)],
        check=True,
        cwd=ROOT,
    )
    return [figure]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=JOBS, default=list(JOBS))
    args = parser.parse_args(argv)
    FIGURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bcgc-figures-") as work:
        for job in args.only:
            for path in {"validate": validate, "sweep": sweep, "system": system}[job](Path(work)):
                shutil.copyfile(path, FIGURES / path.name)
                print(f"docs/figures/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
