"""The deployment network of a Classifier and the programs made from it: a torch.export
program, ONNX, TorchScript.

The deployment network is what evaluation runs: a copy of the classifier's network in eval
mode (its BatchNorm buffers as loaded, the recalibrated ones when precise BN was on) with
every DSReLU frozen at its slope into standard operators
(:func:`~dsrelu_lightning.nn.frozen.freeze_dsrelu`). None of the programs needs this package
to run.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch
from torch import Tensor, nn

from dsrelu_lightning.nn.frozen import freeze_dsrelu

if TYPE_CHECKING:
    from torch.export import ExportedProgram
    from torch.onnx import ONNXProgram

__all__ = [
    "EXPORT_EXTRA",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "deployment_network",
    "export_program",
    "missing_onnx_packages",
    "onnx_program",
    "require_onnx",
    "save_onnx",
    "torchscript",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORT_EXTRA = 'pip install "dsrelu_lightning[export]"'
"""What installs the ONNX exporter and runtime (onnx, onnxscript, onnxruntime)."""


def deployment_network(network: nn.Module) -> nn.Module:
    """A copy of ``network`` as evaluation runs it, with DSReLU frozen: eval mode, no
    gradients; ``network`` itself is left unchanged. (A Classifier's ``model`` is its plain
    network, compiled or not: the compiled call lives outside it.)"""
    frozen = freeze_dsrelu(copy.deepcopy(network)).eval()
    frozen.requires_grad_(False)
    return frozen


def _batch_example(example: Tensor) -> Tensor:
    """At least two samples: torch.export specialises a batch dimension of size 1."""
    return example if example.shape[0] >= 2 else example.expand(2, *example.shape[1:])


def export_program(network: nn.Module, example: Tensor) -> ExportedProgram:
    """``torch.export`` of ``network`` (a deployment network) on ``example``'s shape with a
    dynamic batch dimension (any size from 1); its forward's one input may have any name."""
    shapes = ({0: torch.export.Dim("batch", min=1)},)  # by position: any argument name
    with torch.no_grad():
        return torch.export.export(network, (_batch_example(example),), dynamic_shapes=shapes)


def missing_onnx_packages(runtime: bool = False) -> list[str]:
    """The ONNX exporter's packages (``onnx``, ``onnxscript``; with ``runtime`` also
    ``onnxruntime``) that cannot be imported."""
    names = ("onnx", "onnxscript", "onnxruntime") if runtime else ("onnx", "onnxscript")
    return [name for name in names if importlib.util.find_spec(name) is None]


def require_onnx() -> None:
    """Raise ModuleNotFoundError naming the extra unless the ONNX exporter's packages
    (``onnx``, ``onnxscript``) can be imported."""
    if missing := missing_onnx_packages():
        raise ModuleNotFoundError(
            f"ONNX export needs {' and '.join(missing)}, which are not installed: {EXPORT_EXTRA}"
        )


def onnx_program(
    network: nn.Module | ExportedProgram, example: Tensor, **kwargs: Any
) -> ONNXProgram:
    """``network`` (a deployment network, or its :func:`export_program`) as ONNX with
    standard operators only, input ``input`` with a dynamic batch, output ``logits``.

    ``kwargs`` go to ``torch.onnx.export`` (e.g. ``opset_version``); its deprecated
    TorchScript-based exporter (``dynamo=False``) is refused: this export is torch.export's.
    """
    require_onnx()
    if kwargs.pop("dynamo", True) is not True:
        raise ValueError("to_onnx exports through torch.export: dynamo=False is not supported")
    if isinstance(network, nn.Module) and not {"dynamic_shapes", "dynamic_axes"} & set(kwargs):
        network = export_program(network, example)
    kwargs.setdefault("input_names", [INPUT_NAME])
    kwargs.setdefault("output_names", [OUTPUT_NAME])
    kwargs.setdefault("verbose", False)
    program = torch.onnx.export(network, (_batch_example(example),), dynamo=True, **kwargs)
    assert program is not None  # dynamo=True always returns the program
    _name_batch_dimension(program)
    return program


def _name_batch_dimension(program: ONNXProgram) -> None:
    """Call the input's symbolic first dimension ``batch`` in the graph's inputs and outputs
    (from an ExportedProgram, torch.onnx names it after a symbol such as ``s34``)."""
    import onnx_ir

    graph = program.model.graph
    first = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
    if not isinstance(first, onnx_ir.SymbolicDim):
        return
    for value in (*graph.inputs, *graph.outputs):
        if value.shape is not None and len(value.shape) and value.shape[0] == first:
            value.shape = onnx_ir.Shape(["batch", *value.shape[1:]])


def torchscript(
    network: nn.Module, method: str | None = "script", example: Tensor | None = None, **kwargs: Any
) -> torch.jit.ScriptModule:
    """``network`` (a deployment network) scripted or traced; the result saves and loads
    with ``torch.jit.save``/``torch.jit.load`` (its DSReLU is plain operators).

    Raises:
        RuntimeError: a network TorchScript cannot script (one line, naming what to use
            instead: ``method="trace"`` or the ``export`` command).
    """
    if method == "script":
        try:
            return torch.jit.script(network, **kwargs)
        except Exception as error:  # TorchScript's frontend raises many kinds
            first = next((line for line in str(error).splitlines() if line.strip()), "")
            raise RuntimeError(
                f"torch.jit.script cannot compile this network ({type(error).__name__}: "
                f"{first.strip()}); use to_torchscript(method='trace'), or better "
                "`python -m dsrelu_lightning export` (ONNX or torch.export; TorchScript is "
                "deprecated in PyTorch)"
            ) from error
    if method == "trace":
        if example is None:
            raise ValueError("method='trace' needs example_inputs or example_input_array")
        with torch.no_grad():
            return torch.jit.trace(network, example, **kwargs)
    raise ValueError(f"method must be 'script' or 'trace', got {method!r}")


def save_onnx(program: ONNXProgram, destination: str | Path | BinaryIO) -> None:
    """Write ``program`` to a path or binary file as one self-contained ONNX model (its
    weights included, no external data file)."""
    if isinstance(destination, str | Path):
        program.save(str(destination), external_data=False)
    else:
        destination.write(program.model_proto.SerializeToString())
