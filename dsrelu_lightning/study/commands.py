"""The grid commands: ``benchmark`` and ``cv`` run a grid (study.run), then write its report
(study.report); ``report`` writes the report alone. Their parsers import no torch, so
``--help`` and argument errors answer at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dsrelu_lightning.cli import PROG
from dsrelu_lightning.cli.errors import CommandParser
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.run.keys import KEEP_CHECKPOINTS

__all__ = ["benchmark_main", "cv_main", "report_main"]


def _grid_parser(prog: str, description: str, cv: bool) -> CommandParser:
    parser = CommandParser(prog=f"{PROG} {prog}", description=description)
    parser.add_argument(
        "--config", required=cv, help="the dataset's LightningCLI config (its stem names it)"
    )
    if not cv:
        parser.add_argument("--grid", help="grid file: datasets, activations, variants, folds")
        parser.add_argument(
            "--activations",
            help="comma-separated activation names or grid labels (default: the grid's "
            "labels, else the paper's six: relu,leaky_relu,sigmoid,tanh,mish,dsrelu)",
        )
    parser.add_argument("--reference", help="the report's reference label (default dsrelu)")
    parser.add_argument("--folds", help="comma-separated fold indices (default: every fold)")
    parser.add_argument(
        "--backbones",
        help="comma-separated networks to compare, e.g. resnet18,resnet34,mobilenet_v3_small "
        "(torchvision names or import paths; default: the grid's, else the config's own)",
    )
    parser.add_argument(
        "--train_fractions",
        help="comma-separated shares of each fold's training part to train on, e.g. "
        "0.05,0.1,0.25,1.0 (stratified, nested; validation and test untouched): a learning "
        "curve (default: the grid's, else the config's whole training part)",
    )
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


def _report_after(output: str, busy: Sequence[str], reference: str | None) -> None:
    """Write the grid's report, unless cells are still running in another process."""
    if busy:
        shown = ", ".join(busy[:3]) + (", ..." if len(busy) > 3 else "")
        print(
            f"report: not written: {len(busy)} cell(s) still running in another process "
            f"({shown}); rerun this command when they have finished",
            flush=True,
        )
        return
    from dsrelu_lightning.study.report.summary import write_report

    print(f"report: {write_report(output, reference=reference)}", flush=True)


def _fractions(text: str | None, default: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """``--train_fractions`` parsed, else the grid file's."""
    from dsrelu_lightning.study.run.grid import parse_train_fractions

    return parse_train_fractions(text) if text else default


def benchmark_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning benchmark``: the activations x folds grid, then its report."""
    parser = _grid_parser("benchmark", "Run a grid of activations x folds (x datasets).", False)
    args, overrides = parser.parse_known_args(list(argv))
    from dsrelu_lightning.nn.activations import PAPER_ACTIVATIONS
    from dsrelu_lightning.study.run import grid as grids
    from dsrelu_lightning.study.run.runner import run_benchmark
    from dsrelu_lightning.study.run.variants import select_variants

    grid = grids.load_grid(args.grid) if args.grid else grids.Grid()
    if grid.datasets and args.config:
        raise ConfigurationError("give the datasets either in the --grid file or by --config")
    datasets = dict(grid.datasets) or ({Path(args.config).stem: args.config} if args.config else {})
    if not datasets:
        raise ConfigurationError("no dataset: give --config <dataset config> or a --grid file")
    names = args.activations.split(",") if args.activations else None
    labels = names or [v.label for v in grid.variants] or list(PAPER_ACTIVATIONS)
    run = run_benchmark(
        args.output,
        datasets,
        select_variants([n.strip() for n in labels], grid.variants),
        grids.parse_folds(args.folds) if args.folds else grid.folds,
        overrides,
        grids.parse_shard(args.shard),
        keep_checkpoints=args.keep_checkpoints,
        seeds=grids.parse_seeds(args.seeds) if args.seeds is not None else None,
        backbones=grids.parse_backbones(args.backbones) if args.backbones else grid.backbones,
        train_fractions=_fractions(args.train_fractions, grid.train_fractions),
    )
    _report_after(args.output, run.busy, args.reference)


def cv_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning cv``: every fold of the config's own activation, then
    the report."""
    parser = _grid_parser("cv", "Cross-validate the config's activation over its folds.", True)
    args, overrides = parser.parse_known_args(list(argv))
    from dsrelu_lightning.study.run import grid as grids
    from dsrelu_lightning.study.run.runner import inspect_config, run_benchmark
    from dsrelu_lightning.study.run.variants import Variant, cv_label

    info = inspect_config(args.config, overrides)
    label = cv_label(info.activation, info.activation_args)
    run = run_benchmark(
        args.output,
        {Path(args.config).stem: args.config},
        [Variant(label=label)],
        grids.parse_folds(args.folds) if args.folds else None,
        overrides,
        grids.parse_shard(args.shard),
        keep_checkpoints=args.keep_checkpoints,
        seeds=grids.parse_seeds(args.seeds) if args.seeds is not None else None,
        backbones=grids.parse_backbones(args.backbones) if args.backbones else None,
        train_fractions=_fractions(args.train_fractions, None),
    )
    _report_after(args.output, run.busy, args.reference or label)


def report_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning report``: the report of a benchmark's output folder."""
    parser = CommandParser(
        prog=f"{PROG} report",
        description="Merge a benchmark's result.json files into summary.csv, "
        "summary_tests.csv, summary.md, figures/.",
    )
    parser.add_argument("--output", required=True, help="the benchmark's output folder")
    parser.add_argument("--reference", help="label the paired tests compare against (dsrelu)")
    parser.add_argument(
        "--all-pairs",
        action="store_true",
        help="also test every pair of labels, not only vs --reference",
    )
    args = parser.parse_args(list(argv))
    from dsrelu_lightning.study.report.summary import write_report

    print(f"report: {write_report(args.output, args.reference, args.all_pairs)}")
