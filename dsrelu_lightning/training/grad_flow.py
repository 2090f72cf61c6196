"""GradientFlow: each stage's gradient norm per epoch, from the gradients the optimizer steps
with (no extra backward)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

__all__ = ["GradientFlow", "network_stages"]


def _is_leaf(module: nn.Module) -> bool:
    """A single layer (no child holding parameters), e.g. a stem's conv or a head's fc."""
    return not any(any(True for _ in c.parameters()) for c in module.children())


def network_stages(network: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The network's stages in order, each with its parameters: ``stem``, the top-level
    children (e.g. ResNet's ``layer1``..``layer4``), ``head``.

    The leading single layers (ResNet's conv1, bn1) form ``stem`` and the trailing ones (fc)
    ``head``; where they are containers (MobileNetV3's ``features``, ``classifier``) the first
    and last are. A network whose top level holds fewer than three such children is split
    at its first container's children instead (``features.0``, ``features.1``...).
    """
    children = [(n, c) for n, c in network.named_children() if any(True for _ in c.parameters())]
    if len(children) < 3:
        container = next((i for i, (_, c) in enumerate(children) if not _is_leaf(c)), None)
        if container is not None:
            name, module = children[container]
            inner = [(f"{name}.{n}", c) for n, c in module.named_children()]
            inner = [(n, c) for n, c in inner if any(True for _ in c.parameters())]
            children = children[:container] + inner + children[container + 1 :]
    if not children:
        return {}
    count = len(children)
    first = next((i for i, (_, c) in enumerate(children) if not _is_leaf(c)), count)
    last = max((i + 1 for i, (_, c) in enumerate(children) if not _is_leaf(c)), default=0)
    if first >= last:  # no container: the first layer is the stem, the last the head
        first, last = 1, count - 1
    first, last = max(first, 1), max(min(last, count - 1), 1)  # stem and head: one at least
    groups: dict[str, list[nn.Module]] = {"stem": [c for _, c in children[:first]]}
    groups.update({n: [c] for n, c in children[first:last]})
    groups["head"] = [c for _, c in children[last:]]
    return {
        name: [p for m in modules for p in m.parameters() if p.requires_grad]
        for name, modules in groups.items()
        if modules
    }


class GradientFlow(Callback):
    """Log each stage's gradient norm, ``grad/norm/<stage>``, ``grad/first_to_last`` and
    ``grad/zero_steps``.

    A stage's norm is the L2 norm of its parameters' gradients (the stages are those of
    ``network_stages``), averaged over the epoch's optimizer steps; first_to_last is the
    stem's over the head's (small: the gradient fades on its way back). Norms are taken in
    ``on_before_optimizer_step`` (gradients unscaled, before clipping) and summed on the
    device; the host reads them once per epoch. Lightning's ``grad_norm`` utility gives
    per-parameter norms and a total built on the host, so the stages' norms are computed
    here with the same definition.

    ``grad/zero_steps`` is the share of the epoch's steps whose gradient was exactly zero in
    every stage: the loss saturated (float32 cross-entropy is exactly 0 once the logits lie
    far enough apart, as a steep DSReLU slope makes them), and the step trained nothing. Such
    steps, like fp16's skipped ones (infinite norms), stay out of the averages; an epoch of
    nothing else logs NaN norms (0 / 0), and the first such step warns.

    Args:
        enabled: on by default (``--grad_flow.enabled false`` switches it off).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._stages: dict[str, list[nn.Parameter]] = {}
        self._sums: Tensor | None = None
        self._steps: Tensor | None = None  # per stage: the steps whose norm was finite
        self._zero_steps: Tensor | None = None
        self._all_steps = 0
        self._warned = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stages, self._sums, self._steps, self._zero_steps = {}, None, None, None
        self._all_steps = 0

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self.enabled:
            return
        if not self._stages:  # here, not at the epoch's start: a mid-epoch resume skips that
            self._stages = network_stages(getattr(pl_module, "model", pl_module))
        norms = torch.stack([_norm(params) for params in self._stages.values()])
        zero = (norms == 0).all()
        # A step fp16's scaler skips has inf gradients, a saturated loss none: not counted.
        counted = norms.isfinite() & ~zero
        norms = torch.where(counted, norms, 0.0)
        self._sums = norms if self._sums is None else self._sums + norms
        self._steps = counted.float() if self._steps is None else self._steps + counted
        self._zero_steps = zero.float() if self._zero_steps is None else self._zero_steps + zero
        self._all_steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sums is None or self._steps is None or self._zero_steps is None:
            return
        zero_share = self._zero_steps / self._all_steps
        # A stage without a counted step gets 0 / 0 = NaN: logged, so that the epoch's history
        # row does not repeat the last epoch's norms (callback_metrics keeps those).
        means = self._sums / self._steps
        values = {f"grad/norm/{n}": m for n, m in zip(self._stages, means, strict=True)}
        values["grad/first_to_last"] = means[0] / means[-1].clamp_min(torch.finfo(means.dtype).tiny)
        values["grad/zero_steps"] = zero_share
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)
        if not self._warned and float(zero_share) > 0:
            self._warned = True
            rank_zero_warn(
                f"grad_flow: {float(zero_share):.0%} of an epoch's optimizer steps had no "
                "gradient at all: the loss saturated (float32 cross-entropy is exactly 0 when "
                "the logits lie far apart, e.g. under a steep DSReLU slope), so those steps "
                "trained nothing; grad/zero_steps logs the share every epoch"
            )


def _norm(params: list[nn.Parameter]) -> Tensor:
    """The L2 norm of the parameters' gradients as one vector (zero where none has one)."""
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        device = params[0].device if params else None
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
