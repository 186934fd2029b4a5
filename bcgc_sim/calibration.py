"""The calibration file: SystemCosts (model/costs.py) as TOML, written by `bcgc calibrate` and
loaded by every command's `--calibration FILE`. One clear error line for a bad file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from .errors import UserError
from .model.costs import SystemCosts


def costs_to_toml(costs: SystemCosts, notes: dict[str, str] | None = None) -> str:
    """The calibration file's text: a [system] table (and an optional [notes] table)."""
    lines = [
        "# bcgc-sim calibration: costs of this machine in seconds (bcgc calibrate)",
        "[system]",
    ]
    for f in dataclasses.fields(costs):
        value = getattr(costs, f.name)
        if isinstance(value, tuple):
            text = "[" + ", ".join(repr(float(v)) for v in value) + "]"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = repr(float(value))
        lines.append(f"{f.name} = {text}")
    if notes:
        lines.append("")
        lines.append("[notes]")
        for key, value in notes.items():
            lines.append(f"{key} = {_toml_string(value)}")
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def costs_from_dict(data: dict) -> SystemCosts:
    """SystemCosts from the [system] table of a calibration file (unknown keys are errors)."""
    known = {f.name: f for f in dataclasses.fields(SystemCosts)}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise UserError(f"calibration: unknown key system.{key}")
        if key in ("law_shift", "law_rate"):
            if not isinstance(value, list):
                raise UserError(f"calibration: system.{key} must be a list of numbers")
            values[key] = tuple(float(v) for v in value)
        elif key == "cores":
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError("calibration: system.cores must be an integer")
            values[key] = value
        else:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise UserError(f"calibration: system.{key} must be a number, got {value!r}")
            values[key] = float(value)
    return SystemCosts(**values)


def load_costs(path: str | Path) -> SystemCosts:
    """Read a calibration file written by `bcgc calibrate`; one clear error for a bad file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"calibration file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read calibration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"calibration file {path} is not valid TOML: {exc}") from None
    if not isinstance(data.get("system"), dict):
        raise UserError(f"calibration file {path} has no [system] table (see 'bcgc calibrate')")
    return costs_from_dict(data["system"])


def save_costs(costs: SystemCosts, path: str | Path, notes: dict[str, str] | None = None) -> Path:
    path = Path(path)
    path.write_text(costs_to_toml(costs, notes))
    return path
