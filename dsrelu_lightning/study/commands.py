"""The grid commands' entry points: ``benchmark`` and ``cv`` (argparse, then the runner)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.cell import KEEP_CHECKPOINTS
from dsrelu_lightning.study.command_parser import CommandParser
from dsrelu_lightning.study.grid import (
    PAPER_ACTIVATIONS,
    Grid,
    Variant,
    cv_label,
    load_grid,
    parse_folds,
    parse_seeds,
    parse_shard,
    select_variants,
)
from dsrelu_lightning.study.runner import inspect_config, run_benchmark

__all__ = ["benchmark_main", "cv_main"]


def _grid_parser(prog: str, description: str, cv: bool) -> CommandParser:
    parser = CommandParser(prog=f"python -m dsrelu_lightning {prog}", description=description)
    parser.add_argument(
        "--config", required=cv, help="the dataset's LightningCLI config (its stem names it)"
    )
    if not cv:
        parser.add_argument("--grid", help="grid file: datasets, activations, variants, folds")
        parser.add_argument(
            "--activations",
            help="comma-separated activation names or grid labels "
            f"(default: the grid's labels, else {','.join(PAPER_ACTIVATIONS)})",
        )
        parser.add_argument("--reference", help="the report's reference label (default dsrelu)")
    parser.add_argument("--folds", help="comma-separated fold indices (default: every fold)")
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds of repeated k-fold, e.g. 42,43,44; each sets "
        "seed_everything and the fold assignment (default: the config's seed_everything)",
    )
    parser.add_argument("--output", required=True, help="the grid's folder (shared by shards)")
    parser.add_argument("--shard", default="0/1", help="run shard i of n (0-based), e.g. 1/4")
    parser.add_argument(
        "--keep_checkpoints",
        default="best",
        choices=KEEP_CHECKPOINTS,
        help="what a finished cell keeps: its best checkpoint (default), also last.ckpt "
        "(all), or none (each ResNet-34 checkpoint is about 250 MB)",
    )
    parser.epilog = "Any other argument is a LightningCLI override for every cell."
    return parser


def benchmark_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning benchmark``: the activations x folds grid."""
    parser = _grid_parser("benchmark", "Run a grid of activations x folds (x datasets).", False)
    args, overrides = parser.parse_known_args(list(argv))
    grid = load_grid(args.grid) if args.grid else Grid()
    if grid.datasets and args.config:
        raise ConfigurationError("give the datasets either in the --grid file or by --config")
    datasets = dict(grid.datasets) or ({Path(args.config).stem: args.config} if args.config else {})
    if not datasets:
        raise ConfigurationError("no dataset: give --config <dataset config> or a --grid file")
    names = args.activations.split(",") if args.activations else None
    labels = names or [v.label for v in grid.variants] or list(PAPER_ACTIVATIONS)
    run_benchmark(
        args.output,
        datasets,
        select_variants([n.strip() for n in labels], grid.variants),
        parse_folds(args.folds) if args.folds else grid.folds,
        overrides,
        parse_shard(args.shard),
        reference=args.reference,
        keep_checkpoints=args.keep_checkpoints,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
    )


def cv_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning cv``: every fold of the config's own activation."""
    parser = _grid_parser("cv", "Cross-validate the config's activation over its folds.", True)
    args, overrides = parser.parse_known_args(list(argv))
    info = inspect_config(args.config, overrides)
    label = cv_label(info.activation, info.activation_args)
    run_benchmark(
        args.output,
        {Path(args.config).stem: args.config},
        [Variant(label=label)],
        parse_folds(args.folds) if args.folds else None,
        overrides,
        parse_shard(args.shard),
        reference=label,
        keep_checkpoints=args.keep_checkpoints,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
    )
