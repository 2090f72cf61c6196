"""Small, format-faithful stand-ins for the real datasets, written by the tests themselves."""

from __future__ import annotations

import csv
import hashlib
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import wfdb
from conftest import TinyTrainer
from PIL import Image
from torchvision.datasets import CIFAR100

from dsrelu_lightning.data.kfold import KFoldDataModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def data_fit_args(tiny: TinyTrainer, config: str, data_dir: Path, *extra: str) -> list[str]:
    """``fit`` arguments for ``configs/<config>`` on ``data_dir`` with the tiny trainer,
    as one fast_dev_run step at the config's batch size (no checkpoint or logs: these tests
    check the data's path).

    Loader workers are off: forking them costs more than these tiny batches.
    """
    return [
        "fit",
        "--config",
        str(CONFIGS / config),
        *tiny.args(batch_size=None, fast_dev_run=True),  # the config's batch is checked
        "--data.data_dir",
        str(data_dir),
        "--data.num_workers",
        "0",
        *extra,
    ]


def cli_error_line(err: str) -> str:
    """The single error line the CLI printed (stderr may hold warnings too)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("dsrelu-lightning: error:")]
    assert len(errors) == 1, err
    return errors[0]


def assert_folds_partition(make: Callable[[int], KFoldDataModule], num_folds: int) -> None:
    """Validation parts of all folds are disjoint, cover the pool, and never meet train."""
    seen: list[np.ndarray] = []
    pool_size = None
    for fold in range(num_folds):
        dm = make(fold)
        dm.setup("fit")
        train = np.asarray(dm.train_dataset.indices)
        val = np.asarray(dm.val_dataset.indices)
        assert set(train.tolist()).isdisjoint(val.tolist())
        pool_size = len(train) + len(val)
        seen.append(val)
    merged = np.concatenate(seen)
    assert len(merged) == pool_size and set(merged.tolist()) == set(range(pool_size))


# -- CIFAR-100 ---------------------------------------------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar100(root: Path, train_per_class: int = 5, test_per_class: int = 1) -> dict:
    """torchvision's ``cifar-100-python`` folder (pickled dicts) with tiny splits.

    Each image's first red pixel holds its fine label, so tests can check the decoding.
    Returns the md5 of each written file.
    """
    folder = root / CIFAR100.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class))
        data = rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8)
        data[:, 0] = labels
        entry = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{name} batch",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": data,
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {
        "fine_label_names": [f"class_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"super_{i:02d}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {name: _md5(folder / name) for name in ("train", "test", "meta")}


def trust_cifar100_files(monkeypatch: pytest.MonkeyPatch, md5s: dict) -> None:
    """Make torchvision's md5 integrity check expect the files written by write_cifar100."""
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5s["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5s["test"]]])
    meta = {"filename": "meta", "key": "fine_label_names", "md5": md5s["meta"]}
    monkeypatch.setattr(CIFAR100, "meta", meta)


# -- Mini-ImageNet -----------------------------------------------------------------------

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
WNIDS = ["n01532829", "n01558993", "n01704323", "n01749939"]


def _write_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)


def write_image_folder(root: Path, per_class: int = 8) -> None:
    """ImageFolder layout: ``root/<wnid>/<file>.jpg``, one solid colour per class."""
    for wnid, colour in zip(WNIDS, COLOURS, strict=True):
        for i in range(per_class):
            _write_jpeg(root / wnid / f"{wnid}_{i:04d}.jpg", colour, (40 + 3 * i, 30 + 2 * i))


def write_csv_layout(root: Path, per_class: int = 8) -> None:
    """The ``images/`` + train/val/test.csv layout with disjoint classes per CSV."""
    splits = {"train.csv": WNIDS[:2], "val.csv": WNIDS[2:3], "test.csv": WNIDS[3:]}
    for table, wnids in splits.items():
        rows = []
        for wnid in wnids:
            colour = COLOURS[WNIDS.index(wnid)]
            for i in range(per_class):
                name = f"{wnid}{i:08d}.jpg"
                _write_jpeg(root / "images" / name, colour, (50, 40))
                rows.append({"filename": name, "label": wnid})
        with (root / table).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["filename", "label"])
            writer.writeheader()
            writer.writerows(rows)


# -- MIT-BIH -----------------------------------------------------------------------------

# One symbol per beat, cycled: every AAMI class appears in every record.
BEAT_PATTERN = ("N", "L", "N", "A", "R", "V", "N", "F", "e", "/", "j", "E", "a", "f", "J", "Q")


def write_wfdb_record(
    folder: Path,
    name: str,
    num_beats: int = 32,
    leads: Sequence[str] = ("MLII", "V5"),
    fs: int = 360,
    rr_seconds: float = 0.8,
) -> np.ndarray:
    """A WFDB record with a Gaussian R wave at every beat and non-beat annotations between.

    Beats follow BEAT_PATTERN; '+' (rhythm) and '~' (noise) annotations sit between
    beats and must be dropped. Leaves one second free at each end, so no beat is lost
    at the edges. Returns the AAMI class counts the beats should yield.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rr = int(rr_seconds * fs)
    beats_at = fs + rr * np.arange(num_beats)
    length = int(beats_at[-1] + 2 * fs)
    t = np.arange(length)
    rng = np.random.default_rng(int(name) if name.isdigit() else 0)
    ecg = 0.05 * rng.standard_normal(length)
    for position in beats_at:
        ecg += 1.5 * np.exp(-0.5 * ((t - position) / (0.02 * fs)) ** 2)
    signal = np.stack([ecg, 0.5 * ecg], axis=1)
    symbols = [BEAT_PATTERN[i % len(BEAT_PATTERN)] for i in range(num_beats)]
    samples = list(beats_at)
    extra = {int(beats_at[1] + rr // 2): "+", int(beats_at[4] + rr // 2): "~"}
    samples += list(extra)
    symbols += list(extra.values())
    order = np.argsort(samples, kind="stable")
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV", "mV"],
        sig_name=list(leads),
        p_signal=signal,
        fmt=["212", "212"],
        write_dir=str(folder),
    )
    wfdb.wrann(
        name,
        "atr",
        np.asarray(samples, dtype=np.int64)[order],
        symbol=[symbols[i] for i in order],
        write_dir=str(folder),
    )
    aami = {"N": 0, "L": 0, "R": 0, "e": 0, "j": 0, "A": 1, "a": 1, "J": 1, "S": 1}
    aami |= {"V": 2, "E": 2, "F": 3, "/": 4, "f": 4, "Q": 4}
    return np.bincount([aami[s] for s in symbols if s in aami], minlength=5)


def write_kaggle_csv(path: Path, labels: Sequence[int], columns: int = 188) -> np.ndarray:
    """Kaggle heartbeat rows: ``columns - 1`` samples in [0, 1] and the label; no header."""
    rng = np.random.default_rng(len(labels))
    values = rng.random((len(labels), columns - 1)).astype(np.float32)
    table = np.column_stack([values, np.asarray(labels, dtype=np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, table, delimiter=",", fmt="%.18e")
    return values
