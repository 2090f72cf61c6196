"""BNStalenessMonitor: how far BatchNorm's statistics are from what they normalise in EVAL
mode, the way validation, test and a deployed model see the network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from dsrelu_lightning.nn.probing import probing
from dsrelu_lightning.training.bn_stats import batch_norms, loader_batches, preserved_rng
from dsrelu_lightning.training.evaluable import batch_forward
from dsrelu_lightning.training.precise_bn import PreciseBN

__all__ = ["BNStalenessMonitor", "Staleness", "eval_mode_staleness"]

SETTLED_INITIAL_WEIGHT = 0.05
"""A layer is judged once its initial statistics weigh less than this in its running average."""


@dataclass(frozen=True)
class Staleness:
    """Per BatchNorm layer (by name), on one batch in eval mode, each a mean over channels:
    ``ratio`` = (running_var + eps) / (batch_var + eps), ``shift`` = |batch_mean -
    running_mean| / sqrt(batch_var + eps) in batch standard deviations."""

    ratio: dict[str, float]
    shift: dict[str, float]

    def worst(self) -> tuple[str, float, float]:
        """The layer furthest off (by ratio, either way, or by shift), its ratio and shift."""

        def badness(name: str) -> float:
            ratio = self.ratio[name]
            return max(ratio, 1 / ratio, 1 + self.shift[name])

        name = max(self.ratio, key=badness)
        return name, self.ratio[name], self.shift[name]


def eval_mode_staleness(
    module: torch.nn.Module, batch: Any, forward: Any, layers: dict[str, _BatchNorm]
) -> Staleness | None:
    """Run ``forward(batch)`` with ``module`` in eval mode (no grad, nothing updated) and
    compare each of ``layers``' statistics with those of the input it receives there."""
    measured: dict[str, tuple[Tensor, Tensor]] = {}

    def hook(name: str) -> Any:
        def read(layer: _BatchNorm, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float()
            dims = [d for d in range(x.dim()) if d != 1]
            batch_var = x.var(dim=dims, unbiased=True) + layer.eps
            ratio = (layer.running_var.float() + layer.eps) / batch_var
            shift = (x.mean(dim=dims) - layer.running_mean.float()).abs() / batch_var.sqrt()
            measured[name] = (ratio.mean(), shift.mean())

        return read

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        with probing(module), torch.no_grad():
            module.eval()
            forward(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not measured:
        return None
    values = torch.stack([torch.stack(pair) for pair in measured.values()]).tolist()
    names = list(measured)
    return Staleness(
        {n: v[0] for n, v in zip(names, values, strict=True)},
        {n: v[1] for n, v in zip(names, values, strict=True)},
    )


class BNStalenessMonitor(Callback):
    """Log ``bn/stale_ratio`` and ``bn/mean_shift`` at the end of each training epoch (after
    its validation): one training batch runs in EVAL mode through the statistics validation
    used (precise BN's when on, else the running averages) and, for every settled layer, its
    statistics are compared with those of the input it receives there (:class:`Staleness`).
    The logged values are the largest ratio and shift over layers; ~1 and ~0 mean the
    statistics fit. A ratio outside [1 / ``threshold``, ``threshold``] or a shift above
    ``shift_threshold`` warns once, naming the layer. A layer counts once its initial
    statistics weigh less than 5% of its running average (every layer, after precise BN).
    Random streams and the model are
    left as they were; a compiled network runs the probe eagerly, so nothing recompiles.

    Args:
        enabled: on by default (``--bn_staleness.enabled false`` switches it off).
        threshold: the variance ratio beyond which it warns.
        shift_threshold: the mean shift (in batch standard deviations) above which it warns.
    """

    def __init__(
        self, enabled: bool = True, threshold: float = 2.0, shift_threshold: float = 1.0
    ) -> None:
        self.enabled = enabled
        self.threshold = threshold
        self.shift_threshold = shift_threshold
        self._warned = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        precise = next((cb for cb in trainer.callbacks if isinstance(cb, PreciseBN)), None)
        recomputed = precise is not None and precise.recalibrated  # no initial values left
        layers = {k: m for k, m in batch_norms(pl_module).items() if recomputed or _settled(m)}
        loader = trainer.train_dataloader
        if not layers or loader is None:
            return
        with preserved_rng(pl_module.device, loader):
            batch = next(loader_batches(loader, 1), None)
            if batch is None:
                return
            staleness = eval_mode_staleness(
                pl_module, batch, batch_forward(trainer, pl_module), layers
            )
        if staleness is None:
            return
        name, ratio, shift = staleness.worst()
        for key, value in (("bn/stale_ratio", max(staleness.ratio.values())),
                           ("bn/mean_shift", max(staleness.shift.values()))):  # fmt: skip
            pl_module.log(key, value, on_epoch=True, reduce_fx="max", sync_dist=True)
        off = not 1 / self.threshold <= ratio <= self.threshold or shift > self.shift_threshold
        if off and not self._warned:
            self._warned = True
            rank_zero_warn(self._message(trainer, name, ratio, shift))

    def _message(self, trainer: pl.Trainer, name: str, ratio: float, shift: float) -> str:
        precise = next((cb for cb in trainer.callbacks if isinstance(cb, PreciseBN)), None)
        seen = (
            f"BatchNorm layer {name!r}, measured in eval mode at epoch {trainer.current_epoch}: "
            f"its variance is {ratio:.3g}x and its mean {shift:.3g} standard deviations off "
            "those of the input it normalises (bn/stale_ratio, bn/mean_shift), so validation "
            "and test can look far worse than the model is. "
        )
        if precise is None or not precise.enabled:
            return seen + "Recompute the statistics before each validation with " \
                "--precise_bn.enabled true"  # fmt: skip
        if not precise.eval_consistent:
            return (
                seen
                + "Make precise BN consistent with eval mode: --precise_bn.eval_consistent true"
            )
        return seen + (
            "Even statistics consistent with eval mode do not fit it: the network's per-sample "
            "signal there is tiny against the batch-to-batch spread; more "
            "--precise_bn.num_batches may help"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"warned": self._warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._warned = bool(state_dict.get("warned", False))


def _settled(layer: _BatchNorm) -> bool:
    """Whether the running statistics no longer carry much of their initial values."""
    tracked = int(layer.num_batches_tracked)
    if layer.momentum is None:  # cumulative average: the first batch replaces the init
        return tracked >= 1
    return (1.0 - layer.momentum) ** tracked < SETTLED_INITIAL_WEIGHT
