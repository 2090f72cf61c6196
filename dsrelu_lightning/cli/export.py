"""``python -m dsrelu_lightning export``: a checkpoint's evaluation model as ONNX or a
torch.export program, with a sidecar JSON, checked against PyTorch on real inputs.

This module only parses (no torch import: ``export --help`` answers at once); the work is
:func:`dsrelu_lightning.cli.exporting.run_export`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from dsrelu_lightning.cli import PROG
from dsrelu_lightning.cli.command_parser import CommandParser
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["DEFAULT_TOLERANCE", "FORMATS", "export_main", "export_parser", "output_format"]

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
    from dsrelu_lightning.cli.exporting import run_export

    run_export(args.config, args.ckpt_path, format_name, args.output, args.tolerance, overrides)
