"""`bcgc config`: every config key with its meaning, default and effective value."""

from __future__ import annotations

import json
from typing import Any

from ..config import Config
from ..config_keys import config_keys


def config_json(config: Config) -> dict:
    """{"keys": [{"key", "meaning", "default", "value"}, ...]}: values as TOML would type them."""
    return {
        "keys": [
            {"key": k.key, "meaning": k.meaning, "default": k.default, "value": k.value}
            for k in config_keys(config)
        ]
    }


def format_config(config: Config) -> str:
    """A table: key, effective value (marked * where it differs from the default), default,
    meaning."""
    keys = config_keys(config)
    width = max(len(k.key) for k in keys)
    shown = [(_toml(k.value), _toml(k.default)) for k in keys]
    value_width = min(24, max(len(v) for v, _ in shown))
    lines = [f"{'key':<{width}}  {'value':<{value_width}}   {'default':<{value_width}}  meaning"]
    for k, (value, default) in zip(keys, shown, strict=True):
        mark = "*" if k.value != k.default else " "
        lines.append(
            f"{k.key:<{width}}  {value:<{value_width}} {mark} {default:<{value_width}}  {k.meaning}"
        )
    lines.append(
        "* differs from the built-in default; set keys with --config FILE or --set KEY=VALUE"
    )
    return "\n".join(lines)


def _toml(value: Any) -> str:
    """A value as it would be written in a TOML file."""
    return json.dumps(value)


def print_config(config: Config, as_json: bool) -> None:
    print(json.dumps(config_json(config)) if as_json else format_config(config))
