"""``python -m dsrelu_lightning export``: a checkpoint's evaluation model as ONNX or a
torch.export program, with a sidecar JSON, checked against PyTorch on real inputs.

This module imports no torch until the arguments parse (``export --help`` answers at once);
the work on the model is in :mod:`dsrelu_lightning.cli.export_check`.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsrelu_lightning.cli import PROG
from dsrelu_lightning.cli.errors import CommandParser
from dsrelu_lightning.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import Tensor

    from dsrelu_lightning.cli.export_check import Comparison
    from dsrelu_lightning.training.module import Classifier

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "ExportResult",
    "export_main",
    "export_parser",
    "output_format",
    "output_path",
    "package_versions",
    "run_export",
    "sidecar",
]

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
"""Export formats and their file suffixes: ONNX (default) and a torch.export program."""

DEFAULT_TOLERANCE = 1e-4
"""Largest relative difference max|exported - PyTorch| / max|PyTorch| of the outputs."""


def export_parser() -> CommandParser:
    """The ``export`` command's own options; every other argument overrides the config."""
    parser = CommandParser(
        prog=f"{PROG} export",
        description="Export a checkpoint's evaluation model (eval mode, its BatchNorm "
        "statistics, DSReLU frozen at its slope, standard operators only, dynamic batch) as "
        "ONNX or a torch.export program, with a sidecar JSON, and check it against PyTorch on "
        "a batch of the config's data.",
    )
    parser.add_argument(
        "-c", "--config", required=True, help="the config the checkpoint was fit with"
    )
    parser.add_argument(
        "--ckpt_path",
        metavar="FILE|last|best",
        help="a .ckpt file, 'last' (the newest last.ckpt of a run of this config under "
        "trainer.default_root_dir) or 'best' (the checkpoint that run kept as best)",
    )
    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        help="onnx (default; runs in onnxruntime) or pt2 (torch.export.load); default: "
        "the suffix of --output, else onnx",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="the file to write, or a folder for it (default: <run>/export/<checkpoint>"
        ".<format>); the sidecar goes beside it as <file>.json",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="REL",
        default=DEFAULT_TOLERANCE,
        help="largest accepted max|exported - PyTorch| / max|PyTorch| of the outputs on the "
        f"check batch (default {DEFAULT_TOLERANCE:g}); above it nothing is written, exit 2",
    )
    parser.epilog = (
        "Any other argument is a LightningCLI override of the config, e.g. "
        "--trainer.default_root_dir (where 'last' and 'best' look) or "
        "--data.init_args.batch_size (the size of the check batch)."
    )
    return parser


def output_format(format_name: str | None, output: str | None) -> str:
    """The format to write: ``format_name``, else the suffix of ``output``, else onnx.

    Raises:
        ConfigurationError: ``output`` has the other format's suffix.
    """
    suffix = Path(output).suffix.lower() if output else ""
    by_suffix = next((name for name, ext in FORMATS.items() if ext == suffix), None)
    if format_name is None:
        return by_suffix or "onnx"
    if by_suffix is not None and by_suffix != format_name:
        raise ConfigurationError(
            f"--output {output} has the suffix of {by_suffix} but --format is {format_name}; "
            f"name the file {Path(output or '').stem}{FORMATS[format_name]} or drop --format"
        )
    return format_name


def export_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning export``: parse, then export (see the module docstring)."""
    args, overrides = export_parser().parse_known_args(list(argv))
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise ConfigurationError(f"--tolerance must be a number >= 0, got {args.tolerance}")
    format_name = output_format(args.format, args.output)
    run_export(args.config, args.ckpt_path, format_name, args.output, args.tolerance, overrides)


@dataclass(frozen=True)
class ExportResult:
    """A finished export: the model file, its sidecar and what the sidecar holds."""

    path: Path
    sidecar_path: Path
    record: dict[str, Any]


def output_path(output: str | None, checkpoint: Path, format_name: str) -> Path:
    """The file to write: ``output``, a file named after the checkpoint inside ``output``
    where that is a folder, else ``<run>/export/<checkpoint stem>.<format>``."""
    from dsrelu_lightning.cli.evaluation import run_dir

    name = checkpoint.stem + FORMATS[format_name]
    if output is None:
        return run_dir(checkpoint) / "export" / name
    path = Path(output).absolute()
    return path / name if path.is_dir() or output.endswith(("/", "\\")) else path


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
    # torch and Lightning load here, once the arguments have parsed.
    from lightning.pytorch.cli import instantiate_class

    from dsrelu_lightning.atomic import atomic_path, atomic_write_json
    from dsrelu_lightning.cli import export_check as work
    from dsrelu_lightning.cli.app import parse_config
    from dsrelu_lightning.cli.checkpoints import (
        check_checkpoint_fits_data,
        check_output_dir,
        read_checkpoint,
        resolve_checkpoint,
    )
    from dsrelu_lightning.cli.evaluation import checkpoint_metrics
    from dsrelu_lightning.cli.summaries import resolved, resolved_defaults, run_config
    from dsrelu_lightning.training.deployment import deployment_network

    if format_name == "onnx":
        work.require_onnx_packages()
    parser, config = parse_config(["--config", config_file, *overrides], subcommand="fit")
    dump = lambda c: resolved(parser, c)  # noqa: E731
    found = resolve_checkpoint("export", ckpt_path, config, dump, resolved_defaults(parser, config))
    checkpoint = read_checkpoint(Path(str(found)).absolute())
    data = instantiate_class((), config.data.as_dict())
    check_checkpoint_fits_data(checkpoint.hparams, data)
    path = output_path(output, checkpoint.path, format_name)
    check_output_dir(path.parent)
    model = work.load_model(checkpoint.path)
    inputs, split = work.real_inputs(data)
    start = time.perf_counter()
    graph = None
    with atomic_path(path) as temporary:
        work.write_exported(format_name, deployment_network(model.model), inputs, temporary)
        seconds = time.perf_counter() - start
        if format_name == "onnx":
            graph = work.onnx_summary(temporary)
        exact = deployment_network(model.model).double()
        results = work.verify(work.load_exported(format_name, temporary), model, inputs, exact)
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
        format_name=format_name, file=path, model=model, inputs=inputs, data=data,
        activation=work.activation_record(model), saved=run_config(checkpoint.path) or {},
        checkpoint={"path": str(checkpoint.path), **checkpoint_metrics(checkpoint)},
        check=check, graph=graph, seconds=seconds,
    )  # fmt: skip
    sidecar_path = atomic_write_json(path.with_name(path.name + ".json"), record)
    activation = record["activation"]
    slope = activation.get("slope_at_export")
    frozen = f", DSReLU frozen at slope {slope:.4g}" if slope is not None else ""
    frozen = ", DSReLU frozen at each layer's slope" if "slopes_at_export" in activation else frozen
    what = "ONNX" if format_name == "onnx" else "a torch.export program"
    print(
        f"Exported {checkpoint.path.name} ({record['backbone']['name']}{frozen}) to {what} in "
        f"{seconds:.1f} s",
        flush=True,
    )
    print(_check_line(results, split, tolerance, runtime), flush=True)
    print(f"Model written to {_shown(path)}\nSidecar written to {_shown(sidecar_path)}", flush=True)
    return ExportResult(path, sidecar_path, record)


PACKAGES = ("dsrelu_lightning", "torch", "torchvision", "lightning")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def package_versions(format_name: str) -> dict[str, str | None]:
    """Python's and the installed versions of the packages that made the file (None where
    one is not installed)."""
    names = PACKAGES + (ONNX_PACKAGES if format_name == "onnx" else ())
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sidecar(
    *,
    format_name: str,
    file: Path,
    model: Classifier,
    inputs: Tensor,
    data: Any,
    activation: dict[str, Any],
    saved: dict[str, Any],
    checkpoint: dict[str, Any],
    check: dict[str, Any],
    graph: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    """Everything the sidecar JSON holds, as a JSON-ready mapping: what a deployment needs to
    feed the file and read it, and where it came from (``saved``: the run's config.yaml)."""
    hparams = model.hparams
    precise_bn = (saved.get("precise_bn") or {}).get("enabled")
    classes = list(getattr(data, "class_names", None) or range(model.num_classes))
    describe = getattr(data, "input_preprocessing", None)
    preprocessing = describe() if describe is not None else {"formula": "not described"}
    return {
        "format": format_name,
        "file": file.name,
        "input": {
            "name": "input" if format_name == "onnx" else None,
            "shape": [None, *inputs.shape[1:]],
            "dtype": "float32",
            "batch": "dynamic (any size from 1)",
            "preprocessing": preprocessing,
        },
        "output": {
            "name": "logits" if format_name == "onnx" else None,
            "shape": [None, model.num_classes],
            "meaning": "class logits; softmax gives the probabilities",
        },
        "classes": [str(c) for c in classes],
        "backbone": {
            "name": hparams.get("backbone", "resnet34"),
            "args": hparams.get("backbone_args") or {},
            "stem": hparams.get("stem"),
            "in_channels": hparams.get("in_channels"),
            "description": model.description,
        },
        "activation": activation,
        "batchnorm_statistics": {
            True: "recalibrated (precise BN on)",
            False: "running averages (precise BN off)",
        }.get(precise_bn, "as saved (the run's config.yaml not found)"),
        "checkpoint": checkpoint,
        "data": {
            "class_path": f"{type(data).__module__}.{type(data).__qualname__}",
            "fold_index": getattr(data, "fold_index", None),
        },
        "check": check,
        "onnx": graph,
        "export_seconds": round(seconds, 3),
        "versions": package_versions(format_name),
    }
