"""What ran: every setting that shapes a table's numbers, read from the cells' records, and
whether the grid was a smoke run with its batches cut."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsrelu_lightning.study.report.markdown import as_text
from dsrelu_lightning.study.report.results import CellResult, config_value

__all__ = ["PROTOCOL", "batch_limits", "protocol_lines"]

PROTOCOL = (
    ("data", ("data", "class_path")),
    ("backbone_args", ("model", "backbone_args")),
    ("stem", ("model", "stem")),
    ("activation_targets", ("model", "activation_targets")),
    ("max_epochs", ("trainer", "max_epochs")),
    ("max_steps", ("trainer", "max_steps")),
    ("limit_train_batches", ("trainer", "limit_train_batches")),
    ("limit_val_batches", ("trainer", "limit_val_batches")),
    ("limit_test_batches", ("trainer", "limit_test_batches")),
    ("batch_size", ("data", "init_args", "batch_size")),
    ("precision", ("trainer", "precision")),
    ("accumulate_grad_batches", ("trainer", "accumulate_grad_batches")),
    ("gradient_clip_val", ("trainer", "gradient_clip_val")),
    ("lr", ("model", "lr")),
    ("weight_decay", ("model", "weight_decay")),
    ("num_folds", ("data", "init_args", "num_folds")),
    ("seed", ("seed_everything",)),
    ("early stopping patience", ("early_stopping", "patience")),
    ("slope schedule", ("slope_scheduler", "schedule")),
    ("slope granularity", ("slope_scheduler", "granularity")),
    ("precise BN", ("precise_bn", "enabled")),
    ("precise BN batches", ("precise_bn", "num_batches")),
    ("precise BN eval-consistent", ("precise_bn", "eval_consistent")),
)
"""(name in summary.md's protocol line, key path in the resolved config): the settings that
shape the numbers. A key a record's config lacks (written before it existed) shows as null."""

_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")


def _seen(results: Sequence[CellResult], text: Any) -> str:
    values = sorted({text(r) for r in results})
    return values[0] if len(values) == 1 else "mixed: " + ", ".join(values)


def batch_limits(results: Sequence[CellResult]) -> dict[str, str]:
    """The ``limit_*_batches`` settings that cut the cells' epochs (a smoke run), by name."""
    limits = {}
    for name in _LIMITS:
        values = {config_value(r, "trainer", name) for r in results}
        values = {v for v in values if not _whole(v)}
        if values:
            limits[name] = ", ".join(sorted(map(as_text, values)))
    return limits


def _whole(limit: Any) -> bool:
    """Whether a ``limit_*_batches`` value keeps every batch: unset or the fraction 1.0 (the
    integer 1, equal to 1.0 in Python, is one batch)."""
    return limit is None or (isinstance(limit, float) and limit == 1.0)


def protocol_lines(results: Sequence[CellResult]) -> list[str]:
    """summary.md's protocol line: each setting's value, split sizes, grid-wide overrides."""
    parts = [
        f"{name} {_seen(results, lambda r, path=path: as_text(config_value(r, *path)))}"
        for name, path in PROTOCOL
    ]
    parts.insert(1, f"backbone {_seen(results, lambda r: r.backbone)}")

    def sizes(result: CellResult) -> str:
        split = result.data.get("split_sizes") or {}
        return "/".join(str(split.get(s, "?")) for s in ("train", "val", "test")) if split else "?"

    def overrides(result: CellResult) -> str:
        return " ".join(result.data.get("grid_overrides") or []) or "none"

    parts.append(f"samples train/val/test {_seen(results, sizes)}")
    parts.append(f"command-line overrides of every cell: {_seen(results, overrides)}")
    return [f"Protocol (from the cells' records and resolved configs): {'; '.join(parts)}.", ""]
