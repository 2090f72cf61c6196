"""The metrics every stage logs: accuracy, macro F1 and macro one-vs-rest AUROC (torchmetrics,
accumulated over the epoch on the module's device)."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

__all__ = ["stage_metrics"]


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """``<prefix>acc``, ``<prefix>f1`` and ``<prefix>auroc`` for ``num_classes`` classes."""
    # validate_args=False: torchmetrics' per-batch argument checks (torch.unique over the
    # targets, range checks) cost a host sync per batch; F.cross_entropy has already
    # rejected out-of-range targets before the metrics see them.
    checks = {"validate_args": False}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **checks),
            "f1": MulticlassF1Score(num_classes, average="macro", **checks),
            "auroc": MulticlassAUROC(num_classes, average="macro", thresholds=None, **checks),
        },
        prefix=prefix,
    )
