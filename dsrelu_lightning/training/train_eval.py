"""TrainEval: score a fixed subset of the training data exactly as validation is scored, and
log the generalization gap ``gap/acc`` and ``gap/loss``."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.training.evaluable import Evaluable
from dsrelu_lightning.training.unit_stats import UnitStats

__all__ = ["TrainEval", "score_batches"]

PREFIX = "train_eval/"


def score_batches(
    trainer: pl.Trainer, module: Evaluable, batches: Iterable[Any], prefix: str
) -> dict[str, Tensor]:
    """``<prefix>loss|acc|f1|auroc`` of ``batches`` scored by the module's own
    ``evaluation_step`` (in the trainer's precision, on its device), reduced over ranks; the
    loss averaged over samples as ``self.log`` averages ``val/loss``."""
    metrics = module.evaluation_metrics(prefix)
    device = trainer.strategy.root_device
    loss_sum = torch.zeros((), device=device)
    samples = torch.zeros((), device=device)
    for batch in batches:
        with trainer.precision_plugin.forward_context():
            loss, probs, targets = module.evaluation_step(trainer.strategy.batch_to_device(batch))
        loss_sum += loss.float() * targets.shape[0]
        samples += targets.shape[0]
        metrics.update(probs, targets)
    totals = trainer.strategy.reduce(torch.stack([loss_sum, samples]), reduce_op="sum")
    values = {k: v.detach() for k, v in metrics.compute().items()}  # synced by torchmetrics
    values[f"{prefix}loss"] = totals[0] / totals[1].clamp_min(1.0)
    return values


class TrainEval(Callback):
    """Log ``train_eval/*`` (training data scored as validation) and the gap ``gap/*``.

    Each validation of a fit scores a fixed, seeded subset of the fold's training split as
    ``train_eval/loss|acc|f1|auroc``: eval mode, no augmentation, the statistics
    validation uses (after :class:`~dsrelu_lightning.training.precise_bn.PreciseBN`
    recalibrates), the module's ``evaluation_step``; then it logs the generalization gap
    ``gap/acc = train_eval/acc - val/acc`` and ``gap/loss = val/loss - train_eval/loss``.

    ``train/acc`` cannot serve: it is measured while the weights move, with BatchNorm in
    training mode. The data module must offer ``train_eval_dataloader(num_samples)``
    (every :class:`~dsrelu_lightning.data.kfold.KFoldDataModule` does).

    The pass also serves :class:`~dsrelu_lightning.training.unit_stats.UnitStats` as its
    probe (its first ``num_samples`` samples): one eval forward for both.

    Args:
        enabled: on by default (``--train_eval.enabled false`` switches it off).
        num_samples: training samples scored; default as many as the validation split.
    """

    def __init__(self, enabled: bool = True, num_samples: int | None = None) -> None:
        if num_samples is not None and (isinstance(num_samples, bool) or num_samples < 1):
            raise ConfigurationError(f"train_eval.num_samples must be >= 1, got {num_samples!r}")
        self.enabled = enabled
        self.num_samples = num_samples
        self._scored_epoch: int | None = None

    def _active(self, trainer: pl.Trainer) -> bool:
        return self.enabled and trainer.state.fn == "fit" and not trainer.sanity_checking

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit":
            return
        if not isinstance(pl_module, Evaluable):
            raise ConfigurationError(
                f"--train_eval.enabled true needs a module with evaluation_step and "
                f"evaluation_metrics; {type(pl_module).__name__} has not both "
                "(or set --train_eval.enabled false)"
            )
        if not hasattr(trainer.datamodule, "train_eval_dataloader"):
            rank_zero_warn(
                "train_eval: the data module has no train_eval_dataloader(num_samples), so "
                "train_eval/* and gap/* are not logged; derive it from KFoldDataModule"
            )
            self.enabled = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer):
            return
        module: Evaluable = pl_module  # type: ignore[assignment]  # checked in setup
        loader = trainer.datamodule.train_eval_dataloader(self.num_samples)  # type: ignore[union-attr]
        with torch.no_grad(), ExitStack() as stack:
            for units in trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(units, UnitStats) and units.enabled:  # one pass serves both
                    stack.enter_context(units.recording(trainer, pl_module))
            values = score_batches(trainer, module, loader, PREFIX)
        # Already reduced over ranks: no further sync.
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)
        self._scored_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # val/* of this epoch are in callback_metrics only once validation has ended.
        if not self._active(trainer) or self._scored_epoch != trainer.current_epoch:
            return
        metrics = trainer.callback_metrics
        names = ("val/acc", "val/loss", f"{PREFIX}acc", f"{PREFIX}loss")
        if not all(name in metrics for name in names):
            return
        gaps = {
            "gap/acc": metrics[f"{PREFIX}acc"] - metrics["val/acc"],
            "gap/loss": metrics["val/loss"] - metrics[f"{PREFIX}loss"],
        }
        pl_module.log_dict(gaps, on_step=False, on_epoch=True, sync_dist=False)
