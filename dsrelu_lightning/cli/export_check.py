"""The export's work on the model: load the checkpoint's evaluation model, write its
deployment network, check the file against PyTorch, and say what it holds or why it failed.

The check runs the file as a deployment would (onnxruntime on CPU for ONNX,
``torch.export.load`` for ``.pt2``) on real inputs at several batch sizes and compares its
outputs with the checkpoint's own eval-mode model: the largest absolute difference, the same
relative to the largest reference output, and how often the arg-max class agrees. For scale
it also measures PyTorch's own float32 rounding: how far the model's outputs are from the
same network run in float64 (deep networks with a steep DSReLU amplify rounding; another
runtime's kernels round differently, by about as much).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import DSReLU, dsrelu_modules
from dsrelu_lightning.training.deployment import (
    EXPORT_EXTRA,
    INPUT_NAME,
    export_program,
    missing_onnx_packages,
    onnx_program,
    save_onnx,
)
from dsrelu_lightning.training.module import Classifier

__all__ = [
    "Comparison",
    "activation_record",
    "check_batch_sizes",
    "compare",
    "export_failure",
    "failed_operator",
    "load_exported",
    "load_model",
    "onnx_summary",
    "real_inputs",
    "require_onnx_packages",
    "verify",
    "write_exported",
]

STANDARD_DOMAINS = ("", "ai.onnx")
"""ONNX's own operator set: what every runtime implements."""


@dataclass(frozen=True)
class Comparison:
    """Exported versus PyTorch outputs on one batch of ``batch_size`` inputs."""

    batch_size: int
    max_abs_diff: float
    relative_diff: float
    """``max_abs_diff / max|reference|``."""
    argmax_agreement: int
    """Samples whose arg-max class is the same in both."""
    float32_noise: float | None = None
    """PyTorch's float32 outputs versus float64's, relative (as ``relative_diff``)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(exported: Tensor, reference: Tensor) -> Comparison:
    """The differences between ``exported`` and finite ``reference`` outputs (same shape);
    infinite where ``exported`` holds a NaN or an infinity.

    Raises:
        ValueError: ``reference`` is not finite (nothing to compare against).
    """
    exported, reference = exported.double(), reference.double()
    if exported.shape != reference.shape:
        raise RuntimeError(
            f"the exported model returned shape {tuple(exported.shape)}, PyTorch "
            f"{tuple(reference.shape)}"
        )
    if not bool(torch.isfinite(reference).all()):
        raise ValueError("the reference outputs hold NaN or infinite values")
    agree = int((exported.argmax(-1) == reference.argmax(-1)).sum())
    if not bool(torch.isfinite(exported).all()):
        return Comparison(len(reference), math.inf, math.inf, agree)
    max_abs = float((exported - reference).abs().max())
    scale = float(reference.abs().max())
    relative = max_abs / scale if scale > 0 else max_abs
    return Comparison(len(reference), max_abs, relative, agree)


def check_batch_sizes(size: int) -> list[int]:
    """The batch sizes a check runs: the whole batch, one sample, and one in between."""
    return sorted({size, 1, max(1, size // 3)}, reverse=True)


def load_exported(format_name: str, path: str | Path) -> Callable[[Tensor], Tensor]:
    """A function running the exported file on a CPU float32 batch, as a deployment would:
    onnxruntime's CPU provider for ONNX, ``torch.export.load(path).module()`` for pt2."""
    if format_name == "pt2":
        module = torch.export.load(str(path)).module()

        def run_program(x: Tensor) -> Tensor:
            with torch.no_grad():
                return module(x)

        return run_program
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigurationError(f"checking ONNX needs onnxruntime: {EXPORT_EXTRA}") from exc
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])


def verify(
    run_exported: Callable[[Tensor], Tensor],
    model: nn.Module,
    inputs: Tensor,
    exact: nn.Module | None = None,
) -> list[Comparison]:
    """Run ``run_exported`` and ``model`` (eval mode, no grad) on ``inputs`` and on slices of
    it of :func:`check_batch_sizes`; one comparison per batch size, the whole batch first.

    ``exact``, a float64 copy of the network, measures ``model``'s own float32 rounding.
    """
    results = []
    for size in check_batch_sizes(len(inputs)):
        batch = inputs[:size].contiguous()
        with torch.no_grad():
            reference = model(batch)
            float64 = None if exact is None else exact(batch.double())
        if not bool(torch.isfinite(reference).all()):
            raise ConfigurationError(
                "the checkpoint's model itself gives NaN or infinite outputs on these inputs in "
                "PyTorch: there is nothing to check an export against"
            )
        noise = None
        if float64 is not None and bool(torch.isfinite(float64).all()):
            noise = compare(reference, float64)
        result = compare(run_exported(batch), reference)
        if noise is not None:
            result = replace(result, float32_noise=noise.relative_diff)
        results.append(result)
    return results


def onnx_summary(path: str | Path) -> dict[str, Any]:
    """The opset, operator types and domains of an ONNX file.

    Raises:
        ConfigurationError: an operator outside ONNX's own domain (a runtime would need
            custom code), naming it.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes = model.graph.node
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})
    if custom or model.functions:
        names = custom or [f"{f.domain}::{f.name}" for f in model.functions]
        raise ConfigurationError(
            f"the ONNX graph uses operators outside ONNX's own domain ({', '.join(names)}); "
            "a runtime would need custom code for them"
        )
    opset = next(o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS)
    return {"opset": opset, "operators": sorted({node.op_type for node in model.graph.node})}


_OVERLOAD = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)")
_TARGET = re.compile(r"target=torch\.ops\.(\w+)\.(\w+)\.(\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def failed_operator(error: BaseException) -> str | None:
    """The operator an export error names (``aten::cummax``), if it names one."""
    text = "\n".join(str(e) for e in _chain(error))
    if match := _OVERLOAD.search(text):
        namespace, _, name = match[1].partition(".")
        overload = "" if match[2] == "default" else f".{match[2]}"
        return f"{namespace}::{name}{overload}"
    if match := _TARGET.search(text):
        overload = "" if match[3] == "default" else f".{match[3]}"
        return f"{match[1]}::{match[2]}{overload}"
    return None


def export_failure(error: BaseException, format_name: str) -> ConfigurationError:
    """One line for an export that failed: the operator that could not be expressed where
    the error names one, else the innermost error's first line."""
    what = "ONNX" if format_name == "onnx" else "torch.export"
    operator = failed_operator(error)
    if operator is not None:
        reason = f"operator {operator} cannot be expressed in {what}"
    else:
        innermost = _chain(error)[-1]
        lines = [line.strip() for line in _ANSI.sub("", str(innermost)).splitlines()]
        reason = f"{type(innermost).__name__}: {next((x for x in lines if x), '')[:200]}"
    hint = "try --format pt2" if format_name == "onnx" else "docs/deploy.md lists what exports"
    return ConfigurationError(f"cannot export this network to {what}: {reason}; {hint}")


def require_onnx_packages() -> None:
    """Refuse ``--format onnx`` where its packages are missing, before any work."""
    if missing := missing_onnx_packages(runtime=True):
        raise ConfigurationError(
            f"--format onnx needs {', '.join(missing)}, which are not installed: {EXPORT_EXTRA} "
            "(or export with --format pt2)"
        )


def load_model(checkpoint: Path) -> Classifier:
    """The checkpoint's Classifier in eval mode and float32 (the file takes float32 inputs,
    whatever the fit's precision)."""
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu")
    if not isinstance(model, Classifier):
        raise ConfigurationError(
            f"{str(checkpoint)!r} holds a {type(model).__name__}, not a Classifier: export "
            "writes a Classifier's network"
        )
    return model.float().eval()


def real_inputs(data: Any) -> tuple[Tensor, str]:
    """One batch of inputs from the data module (its test split, else validation) as a
    contiguous CPU float32 tensor, and the split's name."""
    data.prepare_data()
    data.setup("test")
    split = "test" if getattr(data, "test_dataset", None) is not None else "val"
    batch = next(iter(getattr(data, f"{split}_dataloader")()))
    inputs = batch[0] if isinstance(batch, list | tuple) else batch
    return inputs.detach().to("cpu", torch.float32).contiguous(), split


def write_exported(format_name: str, network: nn.Module, inputs: Tensor, path: Path) -> None:
    """Write ``network`` as ``format_name`` to ``path``; an export error becomes one line."""
    try:
        program = export_program(network, inputs)
        if format_name == "pt2":
            torch.export.save(program, str(path))
        else:
            save_onnx(onnx_program(program, inputs), path)
    except ConfigurationError:
        raise
    except Exception as error:  # torch.export's and the ONNX exporter's many error types
        raise export_failure(error, format_name) from error


def activation_record(model: Classifier) -> dict[str, Any]:
    """The activation as trained and, for DSReLU, its slope at export (one value, or one per
    layer where a schedule gave them different slopes)."""
    hparams = model.hparams
    record: dict[str, Any] = {
        "name": hparams.get("activation", "dsrelu"),
        "args": hparams.get("activation_args") or {},
    }
    layers = dsrelu_modules(model)
    if not layers:
        return record
    first: DSReLU = layers[0]
    slopes = {
        name: module.applied_slopes
        for name, module in model.model.named_modules()
        if isinstance(module, DSReLU)
    }
    progress = {float(module.progress) for module in layers}
    record |= {
        "layers": len(layers),
        "initial_angle": first.initial_angle,
        "final_angle": first.final_angle,
        "steepness": first.steepness,
        "negative_slope": first.negative_slope,
        "schedule": first.schedule,
        "equivalent_leaky": first.equivalent_leaky,
        "progress": progress.pop() if len(progress) == 1 else None,
    }
    if len(set(slopes.values())) == 1:
        record["slope_at_export"], record["negative_slope_at_export"] = first.applied_slopes
    else:
        record["slopes_at_export"] = {name: list(pair) for name, pair in slopes.items()}
    return record
