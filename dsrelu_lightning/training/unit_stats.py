"""UnitStats: the share of dead, linear and saturated units of a network, once per epoch, from
the inputs of every activation call site on a fixed probe set of training samples."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activation_kinds import DEFAULT_KINDS, resolve_kinds
from dsrelu_lightning.nn.activations import activation_factory
from dsrelu_lightning.training.evaluable import batch_forward
from dsrelu_lightning.training.unit_shapes import UnitShape, unit_shape

__all__ = ["UnitStats", "activation_sites", "histogram_values"]

KINDS = ("dead", "linear", "saturated")
HISTOGRAM_VALUES = 2**16
"""Most pre-activation values a site keeps for its histogram: a seeded random draw from the
first probe batch (a ResNet's stem on 224-pixel images sees 51 million in one batch of 64)."""


def activation_sites(pl_module: pl.LightningModule) -> dict[str, nn.Module]:
    """Every activation call site of the module's network, by module path: each module of
    the class its activation factory makes (after ``replace_activations`` every call site is
    such a module of its own), else of the default kinds (ReLU, GELU, DSReLU...)."""
    hparams = getattr(pl_module, "hparams", {})
    classes: tuple[type[nn.Module], ...] = ()
    if "activation" in hparams:
        try:
            made = activation_factory(
                hparams["activation"], **(hparams.get("activation_args") or {})
            )
            classes = (type(made()),)
        except (ValueError, TypeError, ConfigurationError):
            classes = ()
    if not classes:
        classes = tuple(c for kind in resolve_kinds(DEFAULT_KINDS) for c in kind.modules)
    return {name: m for name, m in pl_module.named_modules() if isinstance(m, classes)}


@dataclass
class _SiteStats:
    """Per-channel input minimum and maximum, inputs past the saturation threshold, inputs
    seen; and a draw of the first probe batch's inputs for the histogram."""

    shape: UnitShape
    limit: int
    keep_sample: bool = False
    low: Tensor | None = None
    high: Tensor | None = None
    beyond: Tensor | None = None
    count: int = 0
    samples: int = 0
    sample: Tensor | None = field(default=None, repr=False)

    def update(self, x: Tensor) -> None:
        """Record the first ``limit`` samples' inputs (the first batch's for the histogram)."""
        if self.samples >= self.limit or x.ndim == 0:
            return
        x = x.detach()[: self.limit - self.samples].float()
        self.samples += x.shape[0]
        keep_sample = self.keep_sample and self.sample is None
        channels = x.movedim(1, 0).reshape(x.shape[1], -1) if x.ndim > 1 else x.reshape(1, -1)
        low, high = channels.amin(1), channels.amax(1)
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)
        if self.shape.saturation is not None:
            beyond = (channels.abs() > self.shape.saturation).sum(1)
            self.beyond = beyond if self.beyond is None else self.beyond + beyond
        self.count += channels.shape[1]
        if keep_sample:
            self.sample = histogram_values(x)

    def kinds(self) -> dict[str, Tensor]:
        """Per channel: dead, linear, saturated (bool tensors)."""
        assert self.low is not None and self.high is not None
        beyond = self.beyond if self.beyond is not None else torch.zeros_like(self.low)
        count = torch.full_like(beyond, self.count, dtype=torch.float)
        return {
            "dead": self.shape.dead(self.low, self.high),
            "linear": self.shape.linear(self.low, self.high),
            "saturated": self.shape.saturated(beyond.float(), count),
        }


def histogram_values(x: Tensor, limit: int = HISTOGRAM_VALUES) -> Tensor:
    """``x``'s values on the CPU, flattened; at most ``limit`` of them, drawn with a fixed seed
    (with replacement) where there are more."""
    flat = x.detach().reshape(-1)
    if flat.numel() > limit:
        generator = torch.Generator().manual_seed(0)
        flat = flat[torch.randint(flat.numel(), (limit,), generator=generator).to(flat.device)]
    return flat.float().cpu()


class UnitStats(Callback):
    """Log the shares of dead, linear and saturated units, ``units/*``, once per epoch.

    On a fixed probe set of training samples in eval mode (after validation, with the
    statistics it used), the input of every activation call site is hooked; a unit is a
    channel at a site, and the shares are over the network's units:

    - ``units/dead``: zero derivative for every probe input (ReLU: every input <= 0);
    - ``units/linear``: every input on one side of a piecewise-linear activation's kink, so
      the unit computes a linear function (DSReLU with negative slope 1: the identity);
    - ``units/saturated``: sigmoid/tanh with derivative below 1% of its maximum for 99% of
      the inputs.

    Units of other activations (Mish, GELU...) are none of these, and count in the
    denominator. With a TensorBoard logger it also writes each site's shares
    (``units_site/<kind>/<site>``) and, every ``histogram_every_n_epochs``, a histogram of
    each site's pre-activation values on the first probe batch (``preact/<site>``, at most
    :data:`HISTOGRAM_VALUES` of them).

    Args:
        enabled: on by default (``--unit_stats.enabled false`` switches it off).
        num_samples: probe samples (a fixed, seeded subset of the fold's training split).
        histogram_every_n_epochs: pre-activation histograms every N epochs; 0: never.
    """

    def __init__(
        self, enabled: bool = True, num_samples: int = 256, histogram_every_n_epochs: int = 5
    ) -> None:
        if isinstance(num_samples, bool) or num_samples < 1:
            raise ConfigurationError(f"unit_stats.num_samples must be >= 1, got {num_samples!r}")
        if histogram_every_n_epochs < 0:
            raise ConfigurationError(
                f"unit_stats.histogram_every_n_epochs must be >= 0, got {histogram_every_n_epochs}"
            )
        self.enabled = enabled
        self.num_samples = num_samples
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self._recorded: tuple[int, dict[str, _SiteStats]] | None = None
        self._warned = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if (
            self.enabled
            and stage == "fit"
            and not hasattr(trainer.datamodule, "train_eval_dataloader")
        ):
            rank_zero_warn(
                "unit_stats: the data module has no train_eval_dataloader(num_samples), so "
                "units/* are not logged; derive it from KFoldDataModule"
            )
            self.enabled = False

    @contextmanager
    def recording(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> Iterator[dict[str, _SiteStats]]:
        """Record the inputs of every activation call site of the forwards run inside (the
        first ``num_samples`` samples); :class:`~dsrelu_lightning.training.train_eval.TrainEval`
        runs its pass inside, so that one eval-mode forward of training samples serves both."""
        sites = activation_sites(pl_module) if self.enabled else {}
        every = self.histogram_every_n_epochs
        histograms = every > 0 and trainer.current_epoch % every == 0 and trainer.is_global_zero
        stats = {
            n: _SiteStats(unit_shape(m), self.num_samples, histograms) for n, m in sites.items()
        }

        def hook(name: str) -> Any:
            def record(module: nn.Module, args: tuple[Any, ...]) -> None:
                if args and isinstance(args[0], Tensor):
                    stats[name].update(args[0])

            return record

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in sites.items()]
        try:
            yield stats
        finally:
            for handle in handles:
                handle.remove()
        if any(s.samples for s in stats.values()):
            self._recorded = (trainer.current_epoch, stats)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        recorded_epoch, stats = self._recorded or (None, {})
        self._recorded = None
        if recorded_epoch != epoch:  # no train_eval pass this epoch: a probe pass of its own
            with (
                self.recording(trainer, pl_module) as stats,
                torch.no_grad(),
                _eval_mode(pl_module),
            ):
                forward = batch_forward(trainer, pl_module)
                for batch in trainer.datamodule.train_eval_dataloader(self.num_samples):  # type: ignore[union-attr]
                    forward(batch)
            self._recorded = None
        if trainer.world_size > 1:  # pool the ranks' probe inputs, then classify the units
            for s in (s for s in stats.values() if s.low is not None):
                s.low = trainer.strategy.all_gather(s.low).amin(0)
                s.high = trainer.strategy.all_gather(s.high).amax(0)
                if s.beyond is not None:
                    s.beyond = trainer.strategy.reduce(s.beyond, reduce_op="sum")
                count = torch.tensor(float(s.count), device=s.low.device)
                s.count = int(trainer.strategy.reduce(count, reduce_op="sum"))
        per_site = {name: s.kinds() for name, s in stats.items() if s.low is not None}
        if not per_site:
            if stats and not self._warned:
                self._warned = True
                rank_zero_warn(
                    "unit_stats: no activation call site saw an input in the probe pass (a "
                    "compiled network, --model.compile true, does not run forward hooks), so "
                    "units/* are not logged; --unit_stats.enabled false silences this"
                )
            return
        units = sum(kinds["dead"].numel() for kinds in per_site.values())
        totals = {
            f"units/{k}": sum(kinds[k].sum() for kinds in per_site.values()) / max(units, 1)
            for k in KINDS
        }
        pl_module.log_dict(
            {k: torch.as_tensor(v, dtype=torch.float) for k, v in totals.items()},
            on_step=False,
            on_epoch=True,
            sync_dist=False,
        )
        self._write_tensorboard(trainer, per_site, stats, epoch)

    def _write_tensorboard(
        self,
        trainer: pl.Trainer,
        per_site: dict[str, dict[str, Tensor]],
        samples: dict[str, _SiteStats],
        epoch: int,
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        writer = loggers[0].experiment
        for name, kinds in per_site.items():
            for kind, values in kinds.items():
                writer.add_scalar(f"units_site/{kind}/{name}", float(values.float().mean()), epoch)
        for name, site in samples.items():
            if site.sample is not None and site.sample.numel():
                writer.add_histogram(f"preact/{name}", site.sample, epoch)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode, each put back in its own mode afterwards."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training
