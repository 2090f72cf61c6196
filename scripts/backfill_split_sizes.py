"""Add the measured split sizes to result.json files written before cells recorded them.

    python scripts/backfill_split_sizes.py docs/results/digits_precise_bn

Each cell's data module is rebuilt from the config its record holds (the same class, fold,
number of folds and seed: the splits are deterministic) and set up; the sizes of its
training fold, validation fold and held-out test split are written into the record
(atomically), which the report's corrected t-test needs. Records that have sizes are left
alone. Builds no model and trains nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from dsrelu_lightning.atomic import atomic_write_json
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.study.result_file import RESULT_FILE


def sizes(config: dict) -> dict[str, int | None]:
    parser = ArgumentParser()
    parser.add_subclass_arguments(KFoldDataModule, "data")
    data = parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data
    data.setup("fit")
    data.setup("test")
    return {
        "train": len(data.train_dataset),
        "val": len(data.val_dataset),
        "test": None if data.test_dataset is None else len(data.test_dataset),
    }


def main(folder: str) -> None:
    for path in sorted(Path(folder).glob(f"**/{RESULT_FILE}")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("split_sizes"):
            continue
        record["split_sizes"] = sizes(record["config"])
        atomic_write_json(path, record)
        print(f"{path}: {record['split_sizes']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
