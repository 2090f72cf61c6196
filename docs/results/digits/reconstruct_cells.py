"""Rebuild this grid's cell records from its committed summary.csv, so that today's report
(each cell's model selected on val, scored on the held-out test split) can run on it.

    python docs/results/digits/reconstruct_cells.py      # then:
    python -m dsrelu_lightning report --output docs/results/digits/rereport

The original cell folders were not kept. summary.csv holds every number the report's tables
and tests use (each cell's train/val/test metrics at its selected epoch, epochs, times); the
split sizes are measured again (the splits are deterministic for a fold and seed); the
config holds the settings the README states (the protocol of commit 18c96bf, no precise BN).
No epoch histories: the report's curves and BatchNorm section stay empty for this grid.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.study.result_file import CellRecord

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "rereport"


def split_sizes(fold: int) -> dict[str, int]:
    data = DigitsDataModule(fold_index=fold, num_folds=5, seed=42)
    data.setup("fit")
    data.setup("test")
    return {"train": len(data.train_dataset), "val": len(data.val_dataset),
            "test": len(data.test_dataset)}  # fmt: skip


def config(fold: int) -> dict:
    return {
        "seed_everything": 42,
        "trainer": {"max_epochs": 15},
        "model": {"backbone": "resnet34", "stem": "cifar", "lr": 0.001, "weight_decay": 0.0},
        "data": {
            "class_path": "dsrelu_lightning.data.DigitsDataModule",
            "init_args": {"num_folds": 5, "fold_index": fold, "seed": 42, "batch_size": 64},
        },
        "early_stopping": {"patience": 15},
        "slope_scheduler": {"granularity": "epoch", "schedule": "paper"},
        "precise_bn": {"enabled": False},
    }


def main() -> None:
    sizes = {fold: split_sizes(fold) for fold in range(5)}
    with (HERE / "summary.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            fold = int(row["fold"])
            stages = {
                stage: {m: float(row[f"{stage}_{m}"]) for m in ("acc", "f1", "auroc", "loss")}
                for stage in ("train", "val", "test")
            }
            record = CellRecord(
                dataset=row["dataset"],
                label=row["label"],
                fold=fold,
                seed=42,
                backbone="resnet34",
                activation=row["activation"],
                activation_args=json.loads(row["activation_args"]),
                num_folds=5,
                split_sizes=sizes[fold],
                status=row["status"],
                stop_reason=row["stop_reason"],
                best_epoch=int(row["best_epoch"]),
                epochs_run=int(row["epochs_run"]),
                stages=stages,
                mean_epoch_time_s=float(row["mean_epoch_time_s"]),
                wall_time_s=float(row["wall_time_s"]),
                command="reconstructed from summary.csv (docs/results/digits/reconstruct_cells.py)",
                config=config(fold),
            )
            record.write(OUTPUT / row["dataset"] / row["label"] / "seed42" / f"fold{fold}")


if __name__ == "__main__":
    main()
