"""ResNetClassifier: the LightningModule that trains ResNet-34 with a pluggable activation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import activation_factory
from dsrelu_lightning.nn.resnet import Stem, build_resnet34
from dsrelu_lightning.training.evaluable import EvaluationOutput

__all__ = ["ResNetClassifier"]


def _stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
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


def _fused_adam_supported(params: list[Tensor]) -> bool:
    """Whether every parameter lives where torch has a fused Adam kernel (cuda, cpu, ...)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # private helper moved: the two devices we know about
        devices = {"cuda", "cpu"}
    return bool(params) and all(
        p.device.type in devices and torch.is_floating_point(p) for p in params
    )


class ResNetClassifier(pl.LightningModule):
    """ResNet-34 image/signal classifier with a pluggable activation function.

    Args:
        num_classes: number of classes (linked from the data module by the CLI).
        activation: a registered name (``"dsrelu"``, ``"relu"``, ``"mish"``...), an
            ``nn.Module`` class or a zero-argument callable; each site gets a new module.
        in_channels: input channels (linked from the data module by the CLI).
        stem: ``"imagenet"`` (7x7/2 conv + max-pool, the paper's) or ``"cifar"`` (3x3/1).
        lr: Adam learning rate (the authors' code used 1e-3, the paper states 1e-4).
        weight_decay: Adam weight decay (the paper used none).
        activation_args: keyword arguments for the activation, e.g.
            ``{"initial_angle": 75, "final_angle": 30}`` for DSReLU.
        compile: ``torch.compile`` the ResNet (not the metrics or logging) when a Trainer
            sets the module up (``configure_model``). The weights keep their names, so
            checkpoints load with or without it. The first steps of each mode (train,
            validation) pay the compilation; DSReLU's progress stays a tensor, so the
            slope schedule never recompiles.

    Adam uses its fused kernel wherever the parameters' device has one (CUDA, CPU...).
    """

    def __init__(
        self,
        num_classes: int,
        activation: str | Callable[[], nn.Module] = "dsrelu",
        in_channels: int = 3,
        stem: Stem = "imagenet",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        activation_args: dict[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ConfigurationError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ConfigurationError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        make_activation = activation_factory(activation, **(activation_args or {}))
        self.model = build_resnet34(num_classes, make_activation, in_channels, stem)
        self.train_metrics = _stage_metrics(num_classes, "train/")
        self.val_metrics = _stage_metrics(num_classes, "val/")
        self.test_metrics = _stage_metrics(num_classes, "test/")
        self._compiled = False

    def configure_model(self) -> None:
        """Compile the network once (``compile=True``); Lightning calls this in every run."""
        if self.hparams.compile and not self._compiled:
            self.model.compile()
            self._compiled = True

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def evaluation_metrics(self, prefix: str) -> MetricCollection:
        """Accuracy, macro F1 and macro AUROC, named ``<prefix>acc`` etc., on this device."""
        return _stage_metrics(self.hparams.num_classes, prefix).to(self.device)

    def evaluation_step(self, batch: tuple[Tensor, Tensor]) -> EvaluationOutput:
        """The loss and class probabilities of one ``(inputs, targets)`` batch."""
        inputs, targets = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, targets)
        return EvaluationOutput(loss, logits.detach().float().softmax(dim=-1), targets)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        loss, probs, targets = self.evaluation_step(batch)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics.update(probs, targets)
        batch_size = targets.shape[0]
        # sync_dist with on_step=False reduces across ranks once, at the epoch's end.
        self.log(
            f"{stage}/loss",
            loss.detach(),
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
            prog_bar=stage == "train",
        )
        for name, metric in metrics.items():
            # The progress bar shows train/loss and the last epoch's val/acc.
            shown = name == "val/acc"
            self.log(
                name, metric, on_step=False, on_epoch=True, batch_size=batch_size, prog_bar=shown
            )
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        return self(inputs).softmax(dim=-1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Lightning moves the module to its device before this hook, so the check below
        # sees the parameters where they will train.
        params = list(self.parameters())
        return torch.optim.Adam(
            params,
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=_fused_adam_supported(params) or None,
        )
