"""Comparing resolved configs: what a run's saved ``config.yaml`` holds, and which settings
differ between it and the current command (resume and grid cells rely on it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["changed_keys", "config_difference", "resolved", "resolved_defaults", "run_config"]


def resolved(parser: Any, config: Any) -> dict[str, Any]:
    """``config`` as the cell's saved config.yaml holds it (SaveConfigCallback's dump)."""
    return yaml.safe_load(parser.dump(config, skip_none=False))


def resolved_defaults(parser: Any, config: Any) -> dict[str, Any]:
    """The CLI's defaults for ``config``'s data class, resolved as a saved config is."""
    try:
        return resolved(parser, parser.parse_args(["--data.class_path", config.data.class_path]))
    except Exception:
        return resolved(parser, parser.get_defaults())


def run_config(checkpoint: Path) -> dict[str, Any] | None:
    """The resolved ``config.yaml`` LightningCLI saved for the run of ``checkpoint``, if any."""
    config = checkpoint.parent.parent / "config.yaml"
    try:
        loaded = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= _flatten(item, f"{prefix}.{key}")
        return flat
    return {} if value is None else {prefix: value}


def changed_keys(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, sorted.

    Unset (None) values count as absent on both sides. With ``defaults`` (a resolved
    config of the CLI's defaults), a key absent from ``saved`` whose current value is its
    default does not count: it was added to the CLI after ``saved`` was written, and
    its default is what that run had.
    """
    old, new = _flatten(saved, ""), _flatten(current, "")
    default = _flatten(defaults, "") if defaults is not None else {}
    return [
        key[1:]
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
        and not (key not in old and key in default and default[key] == new.get(key))
    ]


def config_difference(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    sections: tuple[str, ...],
    defaults: Mapping[str, Any] | None = None,
) -> str | None:
    """The first setting in ``sections`` that differs, as ``"key: saved != current"``, or None.

    Unset (None) values count as absent on both sides; ``defaults`` as in :func:`changed_keys`.
    """
    for section in sections:
        default = None if defaults is None else {section: defaults.get(section)}
        old, new = {section: saved.get(section)}, {section: current.get(section)}
        for key in changed_keys(old, new, default):
            return f"{key}: {_lookup(saved, key)!r} != {_lookup(current, key)!r}"
    return None


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value
