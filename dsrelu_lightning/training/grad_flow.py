"""GradientFlow: each stage's gradient norm per epoch, from the gradients the optimizer steps
with (no extra backward)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
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
    """Log each stage's gradient norm, ``grad/norm/<stage>``, and ``grad/first_to_last``.

    A stage's norm is the L2 norm of its parameters' gradients (the stages are those of
    ``network_stages``), averaged over the epoch's optimizer steps; first_to_last is the
    stem's over the head's (small: the gradient fades on its way back). Norms are taken in
    ``on_before_optimizer_step`` (gradients unscaled, before clipping) and summed on the
    device; the host reads them once per epoch. Lightning's ``grad_norm`` utility gives
    per-parameter norms and a total built on the host, so the stages' norms are computed
    here with the same definition.

    Args:
        enabled: on by default (``--grad_flow.enabled false`` switches it off).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._stages: dict[str, list[nn.Parameter]] = {}
        self._sums: Tensor | None = None
        self._steps: Tensor | None = None  # per stage: the steps whose norm was finite

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stages, self._sums, self._steps = {}, None, None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self.enabled:
            return
        if not self._stages:  # here, not at the epoch's start: a mid-epoch resume skips that
            self._stages = network_stages(getattr(pl_module, "model", pl_module))
        norms = torch.stack([_norm(params) for params in self._stages.values()])
        finite = norms.isfinite()  # a step fp16's scaler skips has inf gradients: not counted
        norms = torch.where(finite, norms, 0.0)
        self._sums = norms if self._sums is None else self._sums + norms
        self._steps = finite.float() if self._steps is None else self._steps + finite

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sums is None or self._steps is None:
            return
        means = self._sums / self._steps.clamp_min(1.0)
        values = {f"grad/norm/{name}": mean for name, mean in zip(self._stages, means, strict=True)}
        values["grad/first_to_last"] = means[0] / means[-1].clamp_min(torch.finfo(means.dtype).tiny)
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)


def _norm(params: list[nn.Parameter]) -> Tensor:
    """The L2 norm of the parameters' gradients as one vector (zero where none has one)."""
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        device = params[0].device if params else None
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
