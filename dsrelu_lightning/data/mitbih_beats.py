"""MIT-BIH heartbeats: AAMI labels and Kachuee et al. (2018) beat windows from WFDB records,
and the Kaggle CSV version of the same beats."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import wfdb
from wfdb.processing import resample_singlechan

from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "AAMI_CLASSES",
    "AAMI_SYMBOLS",
    "BEAT_FS",
    "BEAT_LENGTH",
    "DS1",
    "DS2",
    "KAGGLE_COLUMNS",
    "LEAD",
    "MITDB_RECORDS",
    "WINDOW_SECONDS",
    "RecordBeats",
    "beat_windows",
    "read_kaggle_csv",
    "read_record_beats",
    "subject_of",
]

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
"""The five AAMI heartbeat classes, in label order 0..4."""

AAMI_SYMBOLS: dict[str, int] = {
    **dict.fromkeys("NLRej", 0),
    **dict.fromkeys("AaJS", 1),
    **dict.fromkeys("VE", 2),
    "F": 3,
    **dict.fromkeys("/fQ", 4),
}
"""WFDB beat symbol -> AAMI class; every other annotation (``+ ~ | " ! [ ] x`` ...) is dropped."""

# fmt: off
MITDB_RECORDS = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112",
    "113", "114", "115", "116", "117", "118", "119", "121", "122", "123", "124", "200",
    "201", "202", "203", "205", "207", "208", "209", "210", "212", "213", "214", "215",
    "217", "219", "220", "221", "222", "223", "228", "230", "231", "232", "233", "234",
)
"""The 48 records of PhysioNet's mitdb."""

DS1 = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
    "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)
"""de Chazal et al. (2004) training records (paced records 102 104 107 217 excluded)."""

DS2 = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
    "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
)
"""de Chazal et al. (2004) test records."""
# fmt: on

SAME_SUBJECT = {"202": "201"}
"""Records taken from one subject: record -> the subject's first record."""

LEAD = "MLII"
BEAT_FS = 125
"""Sampling rate of the beat windows (Hz), as in the Kaggle heartbeat set."""
BEAT_LENGTH = 187
"""Samples per beat window (1.5 s at 125 Hz), zero-padded after 1.2 median R-R intervals."""
WINDOW_SECONDS = 10
"""Length of the windows over which each beat is normalised and the R-R median taken."""
KAGGLE_COLUMNS = BEAT_LENGTH + 1


class RecordBeats(NamedTuple):
    """Beat windows ``(n, 187)`` float32 in [0, 1] and their AAMI labels ``(n,)`` int64."""

    beats: np.ndarray
    labels: np.ndarray


def subject_of(record: str) -> str:
    """The subject id of a record: records 201 and 202 come from one subject."""
    return SAME_SUBJECT.get(record, record)


def _window_ranges(signal: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of each consecutive ``window`` samples (the last may be shorter)."""
    padded = np.full(-(-len(signal) // window) * window, np.nan)
    padded[: len(signal)] = signal
    rows = padded.reshape(-1, window)
    return np.nanmin(rows, axis=1), np.nanmax(rows, axis=1)


def _beat_lengths(peaks: np.ndarray, window: int) -> np.ndarray:
    """1.2 x the median R-R interval of each beat's window (record median where too few)."""
    intervals = np.diff(peaks)
    fallback = float(np.median(intervals)) if len(intervals) else BEAT_LENGTH / 1.2
    period = np.full(len(peaks), fallback)
    window_of = peaks // window
    for index in np.unique(window_of):
        members = np.flatnonzero(window_of == index)
        if len(members) > 1:
            period[members] = np.median(np.diff(peaks[members]))
    return np.minimum(np.round(1.2 * period).astype(np.int64), BEAT_LENGTH)


def beat_windows(signal: np.ndarray, peaks: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Beat windows after Kachuee et al. (2018) from a signal sampled at ``fs``.

    Each beat is the signal from its R peak for 1.2 median R-R intervals of its 10 s
    window, zero-padded to 187 samples, and min-max normalised to [0, 1] with one
    scaling: the minimum and maximum over its R peak's 10 s window together with the
    beat's own span. (Kachuee normalises each 10 s window on its own; a beat crossing
    into the next window would then mix two scalings, with a jump at the boundary.)
    Beats whose window would run past the end of the signal are dropped.

    Returns:
        The ``(n, 187)`` float32 windows and the indices (into ``peaks``) of the beats kept.
    """
    window = round(WINDOW_SECONDS * fs)
    signal = np.asarray(signal, dtype=np.float64)
    peaks = np.asarray(peaks, dtype=np.int64)
    lengths = _beat_lengths(peaks, window)
    kept = np.flatnonzero((peaks >= 0) & (peaks + lengths <= len(signal)))
    offsets = np.arange(BEAT_LENGTH)
    positions = np.minimum(peaks[kept, None] + offsets, len(signal) - 1)
    inside = offsets < lengths[kept, None]
    values = signal[positions]
    if len(signal):
        window_low, window_high = _window_ranges(signal, window)
        block = peaks[kept] // window
        low = np.minimum(window_low[block], np.where(inside, values, np.inf).min(axis=1))
        high = np.maximum(window_high[block], np.where(inside, values, -np.inf).max(axis=1))
    else:  # no beat is kept
        low = high = np.zeros(0)
    span = high - low
    normalised = (values - low[:, None]) / np.where(span > 0, span, 1.0)[:, None]
    beats = np.where(inside, normalised, 0.0).astype(np.float32)
    return beats, kept


def _corrupt(path: Path, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"MIT-BIH record {path.name} in {path.parent} is corrupt or incomplete "
        f"({type(exc).__name__}: {exc}); delete its files and download it again"
    )


def _check_annotation_file(path: Path) -> None:
    """Raise ValueError where the ``.atr`` file lacks WFDB's end-of-file marker ``00 00``.

    rdann reads a truncated or empty annotation file without complaint (its beats just
    stop early), so the marker that every complete file ends with is checked first.
    """
    atr = Path(f"{path}.atr")
    with atr.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size >= 2:
            handle.seek(-2, os.SEEK_END)
        end = handle.read(2)
    if size < 2 or end != b"\x00\x00":
        raise ValueError(
            f"{atr.name} ({size} bytes) does not end with the WFDB end-of-file marker 00 00: "
            "the annotation file is truncated"
        )


def read_record_beats(path: str | os.PathLike[str]) -> RecordBeats | None:
    """The AAMI-labelled beat windows of a WFDB record's MLII lead (``path`` without suffix).

    The lead is resampled to 125 Hz together with the reference (``atr``) beat positions,
    which serve as the R peaks; annotations outside the AAMI map are dropped. An
    annotation file without WFDB's end-of-file marker (truncated) counts as corrupt.

    Returns:
        The beats, or None where the record has no MLII lead.

    Raises:
        ConfigurationError: naming the record, where its files cannot be read or are
            truncated.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # wfdb 4.x calls pandas with arguments that pandas 3 deprecates: not ours to fix.
            warnings.filterwarnings("ignore", message="The inplace keyword")
            record = wfdb.rdrecord(str(path), channel_names=[LEAD])
            if record.n_sig == 0:  # wfdb returns an empty record when the lead is missing
                return None
            _check_annotation_file(path)
            annotation = wfdb.rdann(str(path), "atr")
        signal = np.asarray(record.p_signal[:, 0], dtype=np.float64)
        if not np.all(np.isfinite(signal)):
            raise ValueError("the MLII signal holds NaN or infinite samples")
        resampled, beats_at = resample_singlechan(signal, annotation, record.fs, BEAT_FS)
    except (OSError, ValueError, IndexError, KeyError, EOFError) as exc:
        raise _corrupt(path, exc) from exc
    symbols = np.asarray(beats_at.symbol)
    is_beat = np.isin(symbols, list(AAMI_SYMBOLS))
    peaks = np.asarray(beats_at.sample)[is_beat]
    labels = np.asarray([AAMI_SYMBOLS[s] for s in symbols[is_beat]], dtype=np.int64)
    windows, kept = beat_windows(resampled, peaks, BEAT_FS)
    return RecordBeats(windows, labels[kept])


def read_kaggle_csv(path: str | os.PathLike[str]) -> RecordBeats:
    """Beats of a Kaggle heartbeat CSV (mitbih_train.csv / mitbih_test.csv).

    Each row holds 187 samples and the label 0..4, comma-separated, without a header.

    Raises:
        ConfigurationError: naming the file, where it is missing or not in that format.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(
            f"{path} not found: download the Kaggle 'ECG Heartbeat Categorization Dataset' "
            f"(mitbih_train.csv, mitbih_test.csv) into {path.parent}, or use --data.source wfdb"
        )
    with path.open() as handle:
        first = handle.readline()
    columns = len(first.split(","))
    if columns != KAGGLE_COLUMNS:
        raise ConfigurationError(
            f"{path} has {columns} columns, expected {KAGGLE_COLUMNS} "
            f"({BEAT_LENGTH} samples + the label) per row"
        )
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise ConfigurationError(
            f"{path} is not a Kaggle heartbeat CSV ({exc}); expected {KAGGLE_COLUMNS} numeric "
            "columns per row"
        ) from exc
    labels = table[:, -1]
    if not np.all(np.isin(labels, np.arange(len(AAMI_CLASSES)))):
        raise ConfigurationError(
            f"{path}: the last column must be a class label 0..{len(AAMI_CLASSES) - 1}"
        )
    return RecordBeats(np.ascontiguousarray(table[:, :-1]), labels.astype(np.int64))
