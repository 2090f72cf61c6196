"""Classifier: the LightningModule that trains any network with a pluggable activation at
every call site; ResNetClassifier: the paper's ResNet-34."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activation_kinds import resolve_kinds
from dsrelu_lightning.nn.activations import activation_factory
from dsrelu_lightning.nn.backbones import DEFAULT_BACKBONE, BackboneSpec, Stem, build_backbone
from dsrelu_lightning.nn.input_fit import input_error
from dsrelu_lightning.nn.replace import convert_activations, warn_untraced
from dsrelu_lightning.training.deployment import (
    deployment_network,
    onnx_program,
    save_onnx,
    torchscript,
)
from dsrelu_lightning.training.evaluable import EvaluationOutput

if TYPE_CHECKING:
    from torch.onnx import ONNXProgram

__all__ = ["Classifier", "ResNetClassifier"]

# Checkpoints of the first release named the two sites of a ResNet block act1 and act2.
_OLD_SITE_NAMES = ((re.compile(r"^(model\.layer\d+\.\d+\.)act1\."), r"\1relu."),
                   (re.compile(r"^(model\.layer\d+\.\d+\.)act2\."), r"\1relu_1."))  # fmt: skip


def _stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """``<prefix>acc``, ``<prefix>f1`` and ``<prefix>auroc`` (macro one-vs-rest) for
    ``num_classes`` classes, accumulated over the epoch on the module's device."""
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


@functools.cache
def _fused_adam_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch has a fused Adam kernel for ``device`` and ``dtype``: one step of it on a
    one-element parameter (``fused=True`` checks the parameters at the first step)."""
    probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    try:
        torch.optim.Adam([probe], fused=True).step()
    except RuntimeError:
        return False
    return True


def _adam(params: list[Tensor], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with its fused kernel where torch has one for every parameter, else the default."""
    fused = bool(params) and all(
        _fused_adam_runs(*kind) for kind in {(p.device, p.dtype) for p in params}
    )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


class Classifier(pl.LightningModule):
    """Any classification network with a pluggable activation at every activation call site.

    Args:
        num_classes: number of classes (linked from the data module by the CLI).
        backbone: a torchvision classification builder (``resnet18``, ``resnet34``,
            ``mobilenet_v3_small``, ``vit_b_16``...) or an import path to your own
            ``nn.Module`` class or factory (``mypkg.nets.SmallCNN``); from Python also the
            class or factory itself. Random init; never downloads weights.
        backbone_args: keyword arguments for the builder, e.g. ``{"width_mult": 0.5}``.
        activation: a registered name (``"dsrelu"``, ``"relu"``, ``"mish"``...), an
            ``nn.Module`` class or a zero-argument callable; each call site gets a new module.
        in_channels: input channels (linked from the data module by the CLI).
        stem: ``"imagenet"`` (the builder's own) or ``"cifar"`` for small images: the ResNet
            family's 3x3/1 stem without max-pool, other networks' first conv at stride 1.
        lr: Adam learning rate (the authors' code used 1e-3, the paper states 1e-4).
        weight_decay: Adam weight decay (the paper used none).
        activation_args: keyword arguments for the activation, e.g. DSReLU's
            ``{"initial_angle": 75, "schedule": "cosine"}`` (schedules: sigmoid, linear,
            cosine, exponential, step, constant, reverse_sigmoid, or a module.fn path).
        activation_targets: the kinds of call sites to replace, e.g. ``["ReLU", "GELU"]``
            (default: every hidden nonlinearity; never the Sigmoid/Hardsigmoid gates).
        compile: ``torch.compile`` the network (not the metrics) when a Trainer sets the
            module up; the weights keep their names, so checkpoints load either way.

    Adam uses its fused kernel wherever the parameters' device has one (CUDA, CPU...).
    :meth:`to_onnx` and :meth:`to_torchscript` export the network as evaluated, with every
    DSReLU frozen at its slope into standard operators; ``python -m dsrelu_lightning export``
    also checks the result against PyTorch.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: BackboneSpec = DEFAULT_BACKBONE,
        backbone_args: dict[str, Any] | None = None,
        activation: str | Callable[[], nn.Module] = "dsrelu",
        in_channels: int = 3,
        stem: Stem = "imagenet",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        activation_args: dict[str, Any] | None = None,
        activation_targets: list[str] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ConfigurationError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ConfigurationError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        self.num_classes, self.lr, self.weight_decay = num_classes, lr, weight_decay
        self.compile_network = compile
        make_activation = activation_factory(activation, **(activation_args or {}))
        built = build_backbone(backbone, num_classes, in_channels, stem, backbone_args)
        self.model, report = convert_activations(built.network, make_activation, activation_targets)
        if report.total == 0:
            kinds = ", ".join(kind.name for kind in resolve_kinds(activation_targets))
            raise ConfigurationError(
                f"no activation call site found in backbone {built.name} (looked for {kinds}); "
                "choose the kinds it uses with --model.activation_targets, e.g. '[Tanh]'"
            )
        warn_untraced(report)
        self.description = "; ".join([f"{built.name}: {report}", *built.notes])
        """What was built: the backbone, the sites replaced, what was adapted to the data."""
        self.train_metrics = _stage_metrics(num_classes, "train/")
        self.val_metrics = _stage_metrics(num_classes, "val/")
        self.test_metrics = _stage_metrics(num_classes, "test/")
        # torch.compile of self.model's call, kept outside the module tree: self.model stays
        # the plain network (state_dict, export, deep copies), and copies compile afresh.
        self._compiled_model: Callable[[Tensor], Any] | None = None

    @property
    def compiled(self) -> bool:
        """Whether the network runs through ``torch.compile`` (``compile=True``, once set up)."""
        return self._compiled_model is not None

    def configure_model(self) -> None:
        """Compile the network once (``compile=True``); Lightning calls this in every run."""
        if self.compile_network and self._compiled_model is None:
            self._compiled_model = torch.compile(self.model.__call__)

    def __getstate__(self) -> dict[str, Any]:
        # A copy (pickle, deepcopy) must not call the original's compiled network.
        return {**super().__getstate__(), "_compiled_model": None}

    def forward(self, x: Tensor) -> Tensor:
        try:
            output = (self._compiled_model or self.model)(x)
        except (RuntimeError, AssertionError, ValueError) as error:
            diagnosed = input_error(self.model, x, error)
            if diagnosed is error:
                raise
            raise diagnosed from error
        # A network with auxiliary heads returns (logits, aux...) while training.
        return output if isinstance(output, Tensor) else getattr(output, "logits", output[0])

    def evaluation_metrics(self, prefix: str) -> MetricCollection:
        """Accuracy, macro F1 and macro AUROC, named ``<prefix>acc`` etc., on this device."""
        return _stage_metrics(self.num_classes, prefix).to(self.device)

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
        return _adam(list(self.parameters()), self.lr, self.weight_decay)

    def on_fit_start(self) -> None:
        rank_zero_info(f"Network {self.description}")

    def _example(self, sample: Any) -> Tensor:
        """One input tensor on this module's device, from ``sample`` or example_input_array."""
        sample = self.example_input_array if sample is None else sample
        if sample is None:
            raise ValueError("pass an input sample or set example_input_array")
        if isinstance(sample, list | tuple) and len(sample) == 1:
            sample = sample[0]
        return self._apply_batch_transfer_handler(self._on_before_batch_transfer(sample))

    def to_onnx(
        self, file_path: str | Path | IO[bytes] | None = None, input_sample: Any = None,
        **kwargs: Any,
    ) -> ONNXProgram:  # fmt: skip
        """The network as evaluated (eval mode, DSReLU frozen at its slope) as ONNX with
        standard operators only and a dynamic batch, written to ``file_path`` if given.

        Needs ``pip install "dsrelu_lightning[export]"``; ``kwargs`` go to
        ``torch.onnx.export``. This module's own mode and slope are left unchanged.
        """
        example = self._example(input_sample)
        program = onnx_program(deployment_network(self.model), example, **kwargs)
        if file_path is not None:
            save_onnx(program, file_path)
        return program

    @torch.no_grad()
    def to_torchscript(
        self, file_path: str | Path | None = None, method: str | None = "script",
        example_inputs: Any = None, **kwargs: Any,
    ) -> torch.jit.ScriptModule:  # fmt: skip
        """The network as evaluated (eval mode, DSReLU frozen at its slope) scripted or
        traced; it saves and loads with ``torch.jit``. A network TorchScript cannot script
        (e.g. one whose forward replace_activations rewrote) raises a RuntimeError that
        points to ``method="trace"`` and the ``export`` command. TorchScript is deprecated in
        PyTorch: prefer ``python -m dsrelu_lightning export``.
        """
        example = self._example(example_inputs) if method == "trace" else None
        program = torchscript(deployment_network(self.model), method, example, **kwargs)
        if file_path is not None:
            torch.jit.save(program, str(file_path))
        return program

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read checkpoints of the first release, whose ResNet blocks named their sites
        act1/act2 (now relu/relu_1, the names of torchvision's own attribute)."""
        state = checkpoint.get("state_dict", {})
        for key in list(state):
            new = key
            for pattern, replacement in _OLD_SITE_NAMES:
                new = pattern.sub(replacement, new)
            if new != key:
                state[new] = state.pop(key)


class ResNetClassifier(Classifier):
    """:class:`Classifier` on torchvision's ResNet-34 (the paper's network), with the first
    release's arguments; its checkpoints, old and new, load into either class."""

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
        super().__init__(
            num_classes,
            DEFAULT_BACKBONE,
            activation=activation,
            in_channels=in_channels,
            stem=stem,
            lr=lr,
            weight_decay=weight_decay,
            activation_args=activation_args,
            compile=compile,
        )
        self.save_hyperparameters()  # its own arguments: what load_from_checkpoint passes
