"""Markdown text for the report: GitHub-flavoured pipe tables and their numbers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from dsrelu_lightning.study.report.hypothesis_tests import mean_std

__all__ = [
    "as_text",
    "format_interval",
    "format_mean_std",
    "format_p",
    "format_value",
    "markdown_table",
]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a pipe table: ``header``, its separator, then one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def format_value(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (and its sign when ``signed``); an em dash for a
    missing one."""
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_p(value: float | None) -> str:
    """A p-value: 4 decimals, or scientific below 1e-4; an em dash for a missing one."""
    if value is None:
        return "—"
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def format_interval(low: float | None, high: float | None) -> str:
    """``[low, high]`` with signs, 4 decimals; an em dash when either end is missing."""
    if low is None or high is None:
        return "—"
    return f"[{format_value(low, signed=True)}, {format_value(high, signed=True)}]"


def format_mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std) of ``values``; an em dash when there are none."""
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {format_value(std, digits)}"


def as_text(value: Any) -> str:
    """A config value as a table shows it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
