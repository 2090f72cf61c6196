"""The ``export`` command's work: resolve the checkpoint, load its evaluation model, export
its deployment network, check the file against PyTorch, write it and its sidecar."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import instantiate_class
from torch import Tensor

from dsrelu_lightning.atomic import atomic_path, atomic_write_json
from dsrelu_lightning.cli.app import parse_fit_config
from dsrelu_lightning.cli.checkpoints import export_checkpoint
from dsrelu_lightning.cli.config_compare import resolved, resolved_defaults
from dsrelu_lightning.cli.evaluation import run_dir
from dsrelu_lightning.cli.export import FORMATS
from dsrelu_lightning.cli.export_check import (
    Comparison,
    export_failure,
    load_exported,
    onnx_summary,
    verify,
)
from dsrelu_lightning.cli.export_sidecar import sidecar
from dsrelu_lightning.cli.preflight import (
    check_checkpoint,
    check_checkpoint_fits_data,
    check_output_dir,
)
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.training.deployment import (
    EXPORT_EXTRA,
    deployment_network,
    export_program,
    missing_onnx_packages,
    onnx_program,
    save_onnx,
)
from dsrelu_lightning.training.module import Classifier

__all__ = ["ExportResult", "output_path", "real_inputs", "run_export"]


@dataclass(frozen=True)
class ExportResult:
    """A finished export: the model file, its sidecar and what the sidecar holds."""

    path: Path
    sidecar_path: Path
    record: dict[str, Any]


def output_path(output: str | None, checkpoint: Path, format_name: str) -> Path:
    """The file to write: ``output``, a file named after the checkpoint inside ``output``
    where that is a folder, else ``<run>/export/<checkpoint stem>.<format>``."""
    name = checkpoint.stem + FORMATS[format_name]
    if output is None:
        return run_dir(checkpoint) / "export" / name
    path = Path(output).absolute()
    return path / name if path.is_dir() or output.endswith(("/", "\\")) else path


def real_inputs(data: Any) -> tuple[Tensor, str]:
    """One batch of inputs from the data module (its test split, else validation) as a
    contiguous CPU float32 tensor, and the split's name."""
    data.prepare_data()
    data.setup("test")
    split = "test" if getattr(data, "test_dataset", None) is not None else "val"
    batch = next(iter(getattr(data, f"{split}_dataloader")()))
    inputs = batch[0] if isinstance(batch, list | tuple) else batch
    return inputs.detach().to("cpu", torch.float32).contiguous(), split


def _require_onnx_packages() -> None:
    if missing := missing_onnx_packages(runtime=True):
        raise ConfigurationError(
            f"--format onnx needs {', '.join(missing)}, which are not installed: {EXPORT_EXTRA} "
            "(or export with --format pt2)"
        )


def _load(checkpoint: Path) -> Classifier:
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu")
    if not isinstance(model, Classifier):
        raise ConfigurationError(
            f"{str(checkpoint)!r} holds a {type(model).__name__}, not a Classifier: export "
            "writes a Classifier's network"
        )
    return model.float().eval()  # the file takes float32 inputs, whatever the fit's precision


def _write(format_name: str, network: torch.nn.Module, inputs: Tensor, path: Path) -> None:
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


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it, as fit prints."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _noise(results: list[Comparison]) -> float:
    return max(r.float32_noise or 0.0 for r in results)


def _check_line(results: list[Comparison], split: str, tolerance: float, runtime: str) -> str:
    whole, worst = results[0], max(r.relative_diff for r in results)
    sizes = ", ".join(str(r.batch_size) for r in results)
    agree = sum(r.argmax_agreement for r in results)
    total = sum(r.batch_size for r in results)
    return (
        f"Checked with {runtime} on {whole.batch_size} {split} inputs (batches of {sizes}): "
        f"max abs diff {max(r.max_abs_diff for r in results):.2e}, relative {worst:.2e} "
        f"(tolerance {tolerance:g}; PyTorch float32 vs float64: {_noise(results):.2e}), "
        f"argmax agreement {agree}/{total}"
    )


def run_export(
    config_file: str,
    ckpt_path: str | None,
    format_name: str,
    output: str | None,
    tolerance: float,
    overrides: Sequence[str] = (),
) -> ExportResult:
    """Export the checkpoint's evaluation model (see ``python -m dsrelu_lightning export
    --help``); print what was written and the check; return the sidecar.

    Raises:
        ConfigurationError: bad input, an export that fails (naming the operator), or
            outputs further from PyTorch's than ``tolerance`` (nothing is then written).
    """
    if format_name == "onnx":
        _require_onnx_packages()
    parser, config = parse_fit_config(["--config", config_file, *overrides])
    dump = lambda c: resolved(parser, c)  # noqa: E731
    defaults = resolved_defaults(parser, config)
    checkpoint = Path(export_checkpoint(ckpt_path, config, dump, defaults)).absolute()
    hparams = check_checkpoint(checkpoint)
    data = instantiate_class((), config.data.as_dict())
    check_checkpoint_fits_data(hparams, data)
    path = output_path(output, checkpoint, format_name)
    check_output_dir(path.parent)
    content = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    model = _load(checkpoint)
    inputs, split = real_inputs(data)
    start = time.perf_counter()
    graph = None
    with atomic_path(path) as temporary:
        _write(format_name, deployment_network(model.model), inputs, temporary)
        seconds = time.perf_counter() - start
        if format_name == "onnx":
            graph = onnx_summary(temporary)
        exact = deployment_network(model.model).double()
        results = verify(load_exported(format_name, temporary), model, inputs, exact)
        worst = max(r.relative_diff for r in results)
        if worst > tolerance:
            raise ConfigurationError(
                f"the exported model's outputs differ from PyTorch's by {worst:.3g} relative "
                f"(max abs {max(r.max_abs_diff for r in results):.3g}) on {split} inputs, above "
                f"--tolerance {tolerance:g}; PyTorch's own float32 outputs are "
                f"{_noise(results):.3g} from float64's there: raise --tolerance if that level "
                "is acceptable; nothing was written"
            )
    runtime = "onnxruntime (CPU)" if format_name == "onnx" else "torch.export.load"
    check = {
        "runtime": runtime,
        "split": split,
        "tolerance": tolerance,
        "relative_diff": "max|exported - pytorch| / max|pytorch| over the batch",
        "float32_noise": "the same for PyTorch float32 against the network in float64",
        "batches": [r.as_dict() for r in results],
    }
    record = sidecar(
        format_name=format_name, file=path, checkpoint=checkpoint, content=content,
        model=model, inputs=inputs, data=data, check=check, graph=graph, seconds=seconds,
    )  # fmt: skip
    sidecar_path = atomic_write_json(path.with_name(path.name + ".json"), record)
    activation = record["activation"]
    slope = activation.get("slope_at_export")
    frozen = f", DSReLU frozen at slope {slope:.4g}" if slope is not None else ""
    frozen = ", DSReLU frozen at each layer's slope" if "slopes_at_export" in activation else frozen
    what = "ONNX" if format_name == "onnx" else "a torch.export program"
    print(
        f"Exported {checkpoint.name} ({record['backbone']['name']}{frozen}) to {what} in "
        f"{seconds:.1f} s",
        flush=True,
    )
    print(_check_line(results, split, tolerance, runtime), flush=True)
    print(f"Model written to {_shown(path)}\nSidecar written to {_shown(sidecar_path)}", flush=True)
    return ExportResult(path, sidecar_path, record)
