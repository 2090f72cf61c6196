"""Markdown text for the report: GitHub-flavoured pipe tables and their numbers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dsrelu_lightning.study.stats import mean_std

__all__ = ["format_mean_std", "format_value", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a pipe table: ``header``, its separator, then one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def format_value(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; an em dash for a missing one."""
    return "—" if value is None else f"{value:.{digits}f}"


def format_mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std) of ``values``; an em dash when there are none."""
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {format_value(std, digits)}"
