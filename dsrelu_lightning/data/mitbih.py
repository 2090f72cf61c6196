"""MIT-BIH Arrhythmia heartbeats in the five AAMI classes, split by beat, record or patient."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import wfdb
from torch.utils.data import Dataset, TensorDataset

from dsrelu_lightning.data.cache import cache_key, file_fingerprint, load_arrays, save_arrays
from dsrelu_lightning.data.download import download_into
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.data.mitbih_beats import (
    AAMI_CLASSES,
    AAMI_SYMBOLS,
    BEAT_FS,
    BEAT_LENGTH,
    DS1,
    DS2,
    LEAD,
    MITDB_RECORDS,
    WINDOW_SECONDS,
    RecordBeats,
    read_kaggle_csv,
    read_record_beats,
    subject_of,
)
from dsrelu_lightning.data.splits import check_test_fraction, holdout_indices
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["MITBIHDataModule"]

Source = Literal["wfdb", "kaggle"]
Split = Literal["beat", "record", "interpatient"]

PREPROCESSING_VERSION = 2
"""Bump when the beat extraction changes: old caches are then ignored."""
RECORD_SUFFIXES = (".hea", ".dat", ".atr")
KAGGLE_FILES = {"pool": "mitbih_train.csv", "test": "mitbih_test.csv"}


class MITBIHDataModule(KFoldDataModule):
    """MIT-BIH heartbeats as ``(1, 1, 187)`` float32 inputs for a one-channel 2-D ResNet.

    Labels are the AAMI classes N, S, V, F, Q = 0..4. ``source="wfdb"`` reads the raw
    PhysioNet records (lead MLII; records without it are skipped with a warning) and
    caches each record's beats in ``data_dir/cache``; ``source="kaggle"`` reads
    ``mitbih_train.csv`` (the folds) and ``mitbih_test.csv`` (the test set), cached there
    as binary arrays after the first (slow) parse.

    Splits (``source="wfdb"``): ``"beat"`` holds out a stratified ``test_fraction`` of the
    beats and folds the rest by beat (the paper's protocol; a patient's beats land in
    train, validation and test alike); ``"record"`` does the same by subject (records 201
    and 202 are one subject), so no patient is in two splits; ``"interpatient"`` folds the
    DS1 records by subject and tests on DS2 (de Chazal et al. 2004).

    Args:
        data_dir: the folder of the mitdb records or the Kaggle CSVs; caches go below it.
        source: ``"wfdb"`` or ``"kaggle"`` (the latter only with ``split="beat"``).
        split: ``"beat"``, ``"record"`` or ``"interpatient"``.
        records: mitdb record names to use, e.g. ``[100, 101]``, in any order (they are
            de-duplicated and sorted, so the folds of a seed do not depend on it; default:
            every record in ``data_dir``, or with ``download=True`` all 48;
            ``"interpatient"`` keeps those in DS1 or DS2).
        test_fraction: share held out as the test set for ``"beat"`` and ``"record"``.
        **kwargs: the shared arguments of :class:`~dsrelu_lightning.data.kfold.KFoldDataModule`;
            ``download=True`` fetches missing records with ``wfdb.dl_database``
            (``source="wfdb"`` only: it is refused for the Kaggle CSVs).
    """

    def __init__(
        self,
        data_dir: str = "data/mitdb",
        *,
        source: Source = "wfdb",
        split: Split = "beat",
        records: list[str | int] | None = None,
        test_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        if source not in ("wfdb", "kaggle"):
            raise ConfigurationError(f"source must be 'wfdb' or 'kaggle', got {source!r}")
        if split not in ("beat", "record", "interpatient"):
            raise ConfigurationError(
                f"split must be 'beat', 'record' or 'interpatient', got {split!r}"
            )
        if source == "kaggle" and split != "beat":
            raise ConfigurationError(
                f"split={split!r} needs record ids, which the Kaggle CSVs lack: use "
                "--data.source wfdb or --data.split beat"
            )
        if source == "kaggle" and records is not None:
            raise ConfigurationError("records applies to source='wfdb' only")
        if source == "kaggle":
            self.refuse_download(
                "the Kaggle CSVs need a Kaggle account; put mitbih_train.csv and "
                f"mitbih_test.csv into {self.data_dir}, or use --data.source wfdb, which "
                "downloads PhysioNet's records"
            )
        check_test_fraction(test_fraction)
        self.source = source
        self.split = split
        # Sorted: the folds of a seed must not depend on the order the records are named in.
        self.records = None if records is None else sorted(set(map(str, records)))
        self.test_fraction = test_fraction
        self.num_classes = len(AAMI_CLASSES)
        self.in_channels = 1
        self.class_names = list(AAMI_CLASSES)
        self._data: dict[str, TensorDataset] = {}
        self._pool_records: np.ndarray | None = None
        self._test_records: np.ndarray | None = None

    # -- which records ---------------------------------------------------------------

    def _wanted_records(self) -> list[str]:
        """The records this configuration needs, before checking what is on disk."""
        root = Path(self.data_dir)
        if self.records is not None:
            names = list(self.records)
        elif self.download:
            names = list(MITDB_RECORDS)
        else:
            names = sorted(path.stem for path in root.glob("*.hea"))
        if self.split == "interpatient":
            if self.records is not None:
                stray = [name for name in names if name not in DS1 and name not in DS2]
                if stray:
                    raise ConfigurationError(
                        f"records {', '.join(stray)} are in neither DS1 nor DS2 of the "
                        "interpatient split; drop them or use --data.split record"
                    )
            names = [name for name in names if name in DS1 or name in DS2]
        return names

    def _missing(self, names: list[str]) -> list[str]:
        root = Path(self.data_dir)
        return [
            name
            for name in names
            if not all((root / name).with_suffix(suffix).is_file() for suffix in RECORD_SUFFIXES)
        ]

    def _available_records(self) -> list[str]:
        names = self._wanted_records()
        if not names:
            raise ConfigurationError(
                f"no MIT-BIH records (*.hea, *.dat, *.atr) in {self.data_dir}: pass "
                "--data.download true to fetch PhysioNet's mitdb (~100 MB) with wfdb, put the "
                "records there, or use --data.source kaggle with mitbih_train.csv and "
                "mitbih_test.csv"
            )
        missing = self._missing(names)
        if missing:
            raise ConfigurationError(
                f"MIT-BIH records {', '.join(missing)} are missing or incomplete in "
                f"{self.data_dir} (each needs .hea, .dat and .atr): pass --data.download true "
                "to fetch them from PhysioNet with wfdb, or copy them there"
            )
        return names

    # -- reading and caching -------------------------------------------------------------

    def _cache_path(self, name: str) -> Path:
        base = Path(self.data_dir) / name
        key = cache_key(
            version=PREPROCESSING_VERSION,
            lead=LEAD,
            fs=BEAT_FS,
            length=BEAT_LENGTH,
            window_seconds=WINDOW_SECONDS,
            symbols=AAMI_SYMBOLS,
            files=[file_fingerprint(base.with_suffix(suffix)) for suffix in RECORD_SUFFIXES],
        )
        return Path(self.data_dir) / "cache" / f"{name}-beats-{key}.npz"

    def _kaggle_part(self, file: str) -> RecordBeats:
        """One Kaggle CSV's beats from its cache, or parsed and cached."""
        csv_path = Path(self.data_dir) / file
        if not csv_path.is_file():
            return read_kaggle_csv(csv_path)  # raises the message saying where to get it
        key = cache_key(version=PREPROCESSING_VERSION, file=file_fingerprint(csv_path))
        path = Path(self.data_dir) / "cache" / f"{csv_path.stem}-{key}.npz"
        cached = load_arrays(path)
        if cached is not None:
            return RecordBeats(cached["beats"], cached["labels"])
        beats = read_kaggle_csv(csv_path)
        save_arrays(path, beats=beats.beats, labels=beats.labels)
        return beats

    def _record_beats(self, name: str) -> RecordBeats | None:
        """One record's beats from its cache, or read and cached; None without MLII."""
        path = self._cache_path(name)
        cached = load_arrays(path)
        if cached is not None:
            return RecordBeats(cached["beats"], cached["labels"]) if cached["has_lead"] else None
        beats = read_record_beats(Path(self.data_dir) / name)
        if beats is None:
            save_arrays(path, has_lead=np.array(False), beats=np.empty(0), labels=np.empty(0))
        else:
            save_arrays(path, has_lead=np.array(True), beats=beats.beats, labels=beats.labels)
        return beats

    def _read_records(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Beats, labels and record name of every beat of the usable records."""
        beats, labels, owners, skipped = [], [], [], []
        for name in self._available_records():
            record = self._record_beats(name)
            if record is None:
                skipped.append(name)
                continue
            beats.append(record.beats)
            labels.append(record.labels)
            owners.append(np.full(len(record.labels), name))
        if skipped:
            warnings.warn(
                f"MIT-BIH records without the {LEAD} lead skipped: {', '.join(skipped)}",
                UserWarning,
                stacklevel=2,
            )
        if not beats:
            raise ConfigurationError(f"no MIT-BIH record in {self.data_dir} has the {LEAD} lead")
        return np.concatenate(beats), np.concatenate(labels), np.concatenate(owners)

    # -- Lightning hooks -----------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download missing records (``download=True``) and cache the beats (rank 0 only)."""
        if self.source == "kaggle":
            for file in KAGGLE_FILES.values():
                self._kaggle_part(file)
            return
        if self.download:
            missing = self._missing(self._wanted_records())
            if missing:
                download_into(
                    self.data_dir,
                    lambda tmp: wfdb.dl_database("mitdb", str(tmp), missing, ["atr"]),
                    what="mitdb from PhysioNet",
                    manual=f"the records {_names(missing)} (.hea, .dat and .atr each)",
                )
        for name in self._available_records():
            self._record_beats(name)

    def _build(self) -> dict[str, TensorDataset]:
        if self._data:
            return self._data
        if self.source == "kaggle":
            self._data = {
                part: _as_dataset(self._kaggle_part(file)) for part, file in KAGGLE_FILES.items()
            }
            return self._data
        beats, labels, owners = self._read_records()
        subjects = np.asarray([subject_of(name) for name in owners])
        if self.split == "interpatient":
            pool, test = np.flatnonzero(np.isin(owners, DS1)), np.flatnonzero(np.isin(owners, DS2))
            for part, indices, group in (("training", pool, "DS1"), ("test", test, "DS2")):
                if len(indices) == 0:
                    raise ConfigurationError(
                        f"the interpatient split needs {group} records for its {part} part; "
                        f"none is in {self.data_dir}"
                    )
        else:
            groups = subjects if self.split == "record" else None
            pool, test = holdout_indices(labels, self.test_fraction, self.seed, groups)
        self._pool_records, self._test_records = owners[pool], owners[test]
        self._data = {
            "pool": _as_dataset(RecordBeats(beats[pool], labels[pool])),
            "test": _as_dataset(RecordBeats(beats[test], labels[test])),
        }
        return self._data

    def input_preprocessing(self) -> dict[str, Any]:
        """Beat windows after Kachuee et al. (2018): lead MLII at 125 Hz from the R peak,
        zero-padded to 187 samples, min-max scaled to [0, 1] (``mitbih_beats.beat_windows``)."""
        return {
            "formula": f"lead {LEAD} resampled to {BEAT_FS} Hz; from each R peak 1.2 median "
            f"R-R intervals (of its {WINDOW_SECONDS} s window), zero-padded to {BEAT_LENGTH} "
            "samples, min-max scaled to [0, 1]; shape (1, 1, 187)",
            "sampling_rate_hz": BEAT_FS,
            "samples": BEAT_LENGTH,
        }

    def load_pool(self) -> tuple[Dataset, np.ndarray]:
        pool = self._build()["pool"]
        return pool, pool.tensors[1].numpy()

    def load_test(self) -> Dataset:
        return self._build()["test"]

    def pool_groups(self) -> np.ndarray | None:
        if self.split == "beat":
            return None
        self._build()
        assert self._pool_records is not None
        return np.asarray([subject_of(name) for name in self._pool_records])

    def split_records(self) -> dict[str, list[str]]:
        """The records with beats in each split (``source="wfdb"``; empty for Kaggle)."""
        if self.source != "wfdb":
            return {}
        self.setup()
        assert self._pool_records is not None and self._test_records is not None
        pool = self._pool_records
        parts = {
            "train": pool[np.asarray(self.train_dataset.indices)],  # type: ignore[union-attr]
            "val": pool[np.asarray(self.val_dataset.indices)],  # type: ignore[union-attr]
            "test": self._test_records,
        }
        return {part: sorted(set(names.tolist())) for part, names in parts.items()}


def _names(records: list[str], most: int = 8) -> str:
    """``records`` comma-separated, the first ``most`` of them where there are more."""
    if len(records) <= most:
        return ", ".join(records)
    return f"{', '.join(records[:most])}, ... ({len(records)} in all)"


def _as_dataset(beats: RecordBeats) -> TensorDataset:
    inputs = torch.from_numpy(np.ascontiguousarray(beats.beats, dtype=np.float32))
    return TensorDataset(inputs.view(-1, 1, 1, BEAT_LENGTH), torch.from_numpy(beats.labels))
