"""MITBIHDataModule on WFDB records and Kaggle CSVs written by the test (and real record 100)."""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import wfdb
from conftest import SHARED, TinyTrainer
from fake_datasets import (
    assert_folds_partition,
    cli_error_line,
    data_fit_args,
    write_kaggle_csv,
    write_wfdb_record,
)

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.data import MITBIHDataModule
from dsrelu_lightning.data import kfold as kfold_module
from dsrelu_lightning.data import mitbih as mitbih_module
from dsrelu_lightning.data.mitbih_beats import (
    AAMI_SYMBOLS,
    BEAT_LENGTH,
    DS1,
    DS2,
    WINDOW_SECONDS,
    beat_windows,
    read_record_beats,
    subject_of,
)
from dsrelu_lightning.errors import ConfigurationError

# wfdb 4.x calls pandas with arguments that pandas 3 deprecates (wrsamp/wrann/rdann).
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

MITDB = SHARED / "data" / "mitdb"
RECORDS = ("100", "101", "103", "105", "201", "202", "203")


@pytest.fixture
def records_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mitdb"
    for name in RECORDS:
        write_wfdb_record(root, name)
    return root


def _beats_of(dm: MITBIHDataModule) -> torch.Tensor:
    return dm.train_dataset.dataset.tensors[0]


def test_known_beats_become_aami_labelled_kachuee_windows(tmp_path: Path) -> None:
    expected = write_wfdb_record(tmp_path, "100", num_beats=40)
    beats = read_record_beats(tmp_path / "100")
    assert beats is not None
    assert np.array_equal(np.bincount(beats.labels, minlength=5), expected)
    assert sum(expected) == 40  # the '+' and '~' annotations are dropped
    assert beats.beats.shape == (40, BEAT_LENGTH) and beats.beats.dtype == np.float32
    assert beats.beats.min() >= 0.0 and beats.beats.max() <= 1.0
    # Each window starts at its R peak (the maximum of the normalised signal) ...
    assert np.all(beats.beats[:, 0] > 0.8)
    # ... and lasts 1.2 R-R intervals (0.8 s at 125 Hz = 100 samples), then zeros.
    nonzero = (beats.beats > 0).sum(axis=1)
    assert np.all((nonzero > 100) & (nonzero <= 120))
    assert np.all(beats.beats[:, 121:] == 0)


def test_beat_windows_drop_beats_cut_by_the_end() -> None:
    signal = np.linspace(0.0, 1.0, 1000)
    windows, kept = beat_windows(signal, np.array([100, 200, 300, 950]), fs=125)
    assert kept.tolist() == [0, 1, 2] and windows.shape == (3, BEAT_LENGTH)
    assert np.all(windows[:, 120:] == 0) and np.all(windows[:, 1:120] > 0)


def _boundary_record(fs: int = 125) -> tuple[np.ndarray, np.ndarray]:
    """A 30 s signal whose three 10 s windows have very different amplitudes.

    A 1 Hz sine of amplitude 0.1 (zero at every window boundary, so the signal itself is
    continuous there) runs throughout; window 1 adds R waves of 5, window 2 of 0.5. Beats
    every 0.8 s from 0.24 s on: the beats at 9.84 s and 19.44 s cross a boundary.
    """
    t = np.arange(3 * WINDOW_SECONDS * fs)
    signal = 0.1 * np.sin(2 * np.pi * t / fs)
    peaks = np.arange(30, len(t), 100)
    for peak in peaks:
        height = (0.0, 5.0, 0.5)[peak // (WINDOW_SECONDS * fs)]
        signal += height * np.exp(-0.5 * ((t - peak) / 4.0) ** 2)
    return signal, peaks


def test_beats_keep_one_scaling_across_window_boundaries() -> None:
    fs = 125
    window = WINDOW_SECONDS * fs
    signal, peaks = _boundary_record(fs)
    beats, kept = beat_windows(signal, peaks, fs=fs)
    assert beats.min() >= 0.0 and beats.max() <= 1.0
    crossing = 0
    for beat, peak in zip(beats, peaks[kept], strict=True):
        length = int(np.count_nonzero(beat))
        boundary = -peak % window  # offset of the next window boundary within the beat
        if not 2 <= boundary < length - 1:
            continue
        crossing += 1
        steps = np.abs(np.diff(beat[:length].astype(np.float64)))
        jump = steps[boundary - 1]  # from the last sample of one window to the next
        own = max(steps[boundary - 2], steps[boundary])  # the signal's step either side
        assert jump <= 1.5 * own + 1e-6, (peak, jump, own)
    assert crossing == 2


def test_aami_map_matches_the_design() -> None:
    groups: dict[int, set[str]] = {}
    for symbol, label in AAMI_SYMBOLS.items():
        groups.setdefault(label, set()).add(symbol)
    assert groups == {0: set("NLRej"), 1: set("AaJS"), 2: set("VE"), 3: {"F"}, 4: set("/fQ")}
    assert subject_of("202") == subject_of("201") and subject_of("100") == "100"


@pytest.mark.skipif(not (MITDB / "100.hea").is_file(), reason="mitdb record 100 not present")
def test_real_record_100_matches_its_reference_counts(tmp_path: Path) -> None:
    for suffix in (".hea", ".dat", ".atr"):
        shutil.copy(MITDB / f"100{suffix}", tmp_path / f"100{suffix}")
    beats = read_record_beats(tmp_path / "100")
    assert beats is not None
    n, s, v, f, q = np.bincount(beats.labels, minlength=5)
    # Reference: N 2,239, S 33 (all 'A'), V 1; the last two N beats run past the record's end.
    assert (n, s, v, f, q) == (2237, 33, 1, 0, 0)
    assert beats.beats.shape == (n + s + v, BEAT_LENGTH)
    assert beats.beats.min() >= 0.0 and beats.beats.max() <= 1.0

    # The same record with its annotations cut in half is refused, not read as 1,122 beats.
    atr = (tmp_path / "100.atr").read_bytes()
    (tmp_path / "100.atr").write_bytes(atr[: len(atr) // 4 * 2])  # at a word boundary
    with pytest.raises(ConfigurationError, match=r"record 100 .*corrupt.*100\.atr"):
        read_record_beats(tmp_path / "100")


def test_module_shapes_summary_and_single_log(
    records_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    monkeypatch.setattr(kfold_module, "rank_zero_info", logged.append)
    dm = MITBIHDataModule(data_dir=str(records_dir), batch_size=16)
    assert (dm.num_classes, dm.in_channels) == (5, 1)
    dm.setup("fit")
    dm.setup("test")
    counts = dm.summary()
    total = np.sum([counts[part] for part in ("train", "val", "test")], axis=0)
    assert total.tolist() == [14 * 7, 6 * 7, 4 * 7, 2 * 7, 6 * 7]
    assert sum(counts["test"]) == pytest.approx(0.2 * total.sum(), abs=5)
    assert len(logged) == 1
    assert re.search(r"test +\d+: N \d+ \(\d+\.\d%\), S \d+", logged[0]), logged[0]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 1, BEAT_LENGTH) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y.max()) < 5


def test_beat_folds_are_disjoint_and_cover_the_pool(records_dir: Path) -> None:
    assert_folds_partition(
        lambda fold: MITBIHDataModule(data_dir=str(records_dir), fold_index=fold), num_folds=5
    )


def test_record_split_keeps_each_subject_in_one_split(records_dir: Path) -> None:
    def make(fold: int) -> MITBIHDataModule:
        return MITBIHDataModule(
            data_dir=str(records_dir), split="record", num_folds=3, fold_index=fold
        )

    assert_folds_partition(make, num_folds=3)
    for fold in range(3):
        parts = make(fold).split_records()
        subjects = {part: {subject_of(name) for name in names} for part, names in parts.items()}
        assert subjects["train"].isdisjoint(subjects["val"])
        assert subjects["test"].isdisjoint(subjects["train"] | subjects["val"])
        assert set().union(*parts.values()) == set(RECORDS)
        together = [part for part, names in parts.items() if {"201", "202"} & set(names)]
        assert len(together) == 1  # one subject: both records on the same side


def test_interpatient_split_folds_ds1_and_tests_on_ds2(records_dir: Path) -> None:
    for name in ("106", "108"):  # more DS1 subjects for the folds
        write_wfdb_record(records_dir, name)
    for fold in range(2):
        dm = MITBIHDataModule(
            data_dir=str(records_dir), split="interpatient", num_folds=2, fold_index=fold
        )
        parts = dm.split_records()
        assert set(parts["train"]) | set(parts["val"]) <= set(DS1)
        assert set(parts["test"]) == {"100", "103", "105", "202"} and set(parts["test"]) <= set(DS2)
        assert set(parts["train"]).isdisjoint(parts["val"])
    with pytest.raises(ConfigurationError, match="neither DS1 nor DS2"):
        MITBIHDataModule(
            data_dir=str(records_dir), split="interpatient", records=["100", "102"]
        ).setup()


def test_beats_are_cached_and_rebuilt_when_a_record_changes(
    records_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = MITBIHDataModule(data_dir=str(records_dir), records=["100", "101"])
    first.prepare_data()
    caches = sorted((records_dir / "cache").glob("*.npz"))
    assert [path.name.split("-")[0] for path in caches] == ["100", "101"]

    def not_again(path: object) -> None:
        raise AssertionError(f"read {path} again although cached")

    monkeypatch.setattr(mitbih_module, "read_record_beats", not_again)
    second = MITBIHDataModule(data_dir=str(records_dir), records=["100", "101"])
    second.setup("fit")
    first.setup("fit")
    assert torch.equal(_beats_of(second), _beats_of(first))
    assert len(_beats_of(first)) + len(first.test_dataset) == 64

    write_wfdb_record(records_dir, "101", num_beats=48)  # new data -> new cache key
    with pytest.raises(AssertionError, match="101"):
        MITBIHDataModule(data_dir=str(records_dir), records=["100", "101"]).setup("fit")


def test_record_without_mlii_is_skipped_with_a_warning(records_dir: Path) -> None:
    write_wfdb_record(records_dir, "102", leads=("V5", "V2"))
    assert wfdb.rdrecord(str(records_dir / "102"), channel_names=["MLII"]).n_sig == 0
    dm = MITBIHDataModule(data_dir=str(records_dir), split="record", num_folds=3)
    with pytest.warns(UserWarning, match="without the MLII lead skipped: 102"):
        dm.setup("fit")
    assert "102" not in set().union(*dm.split_records().values())


def test_corrupt_record_is_named_and_leaves_no_partial_files(records_dir: Path) -> None:
    data = (records_dir / "103.dat").read_bytes()
    (records_dir / "103.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigurationError, match="record 103 .*corrupt"):
        MITBIHDataModule(data_dir=str(records_dir)).setup("fit")
    leftovers = [p.name for p in records_dir.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert not list((records_dir / "cache").glob("103-*"))


@pytest.mark.parametrize("cut", ["empty", "one byte", "half", "no end marker"])
def test_truncated_annotation_file_is_a_corrupt_record(records_dir: Path, cut: str) -> None:
    atr = records_dir / "103.atr"
    data = atr.read_bytes()
    assert data.endswith(b"\x00\x00")  # wrann ends the file with WFDB's end marker
    # "half" cuts at a 2-byte word boundary: rdann then reads the first half's beats.
    size = {"empty": 0, "one byte": 1, "half": len(data) // 4 * 2, "no end marker": -2}[cut]
    atr.write_bytes(data[:size])
    with pytest.raises(ConfigurationError, match=r"record 103 .*corrupt.*103\.atr") as info:
        read_record_beats(records_dir / "103")
    assert "end-of-file marker" in str(info.value)
    with pytest.raises(ConfigurationError, match="record 103"):
        MITBIHDataModule(data_dir=str(records_dir)).prepare_data()
    assert not list((records_dir / "cache").glob("103-*"))  # nothing cached for it


def test_folds_do_not_depend_on_the_order_records_are_named_in(records_dir: Path) -> None:
    def val_beats(records: list[str]) -> tuple[list[str], torch.Tensor]:
        dm = MITBIHDataModule(data_dir=str(records_dir), records=records, seed=7)
        dm.setup("fit")
        return dm.records, dm.val_dataset.dataset.tensors[0][dm.val_dataset.indices]

    names, forward = val_beats(["100", "101", "103"])
    reversed_names, backward = val_beats(["103", "101", "100", "103"])
    assert names == reversed_names == ["100", "101", "103"]
    assert torch.equal(forward, backward)


def test_too_few_beats_to_stratify_is_a_clear_error(tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "100", num_beats=8)  # a single S, V and F beat
    with pytest.raises(ConfigurationError, match="cannot hold out a stratified test_fraction"):
        MITBIHDataModule(data_dir=str(tmp_path), num_folds=2).setup("fit")


def test_missing_records_get_one_clear_message(tmp_path: Path, records_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="--data.download true"):
        MITBIHDataModule(data_dir=str(tmp_path / "empty")).setup("fit")
    with pytest.raises(ConfigurationError, match="records 999 are missing"):
        MITBIHDataModule(data_dir=str(records_dir), records=["100", "999"]).setup("fit")


def test_download_fetches_only_missing_records_atomically(
    records_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_dl_database(db: str, dl_dir: str, records: list[str], annotators: list) -> None:
        assert db == "mitdb" and annotators == ["atr"]
        calls.append(list(records))
        for name in records:
            write_wfdb_record(Path(dl_dir), name)

    monkeypatch.setattr(mitbih_module.wfdb, "dl_database", fake_dl_database)
    wanted = [*RECORDS, "106", "108"]
    dm = MITBIHDataModule(data_dir=str(records_dir), records=wanted, download=True)
    dm.prepare_data()
    assert calls == [["106", "108"]]
    dm.setup("fit")
    assert {"106", "108"} <= set().union(*dm.split_records().values())

    def failing(db: str, dl_dir: str, records: list[str], annotators: list) -> None:
        (Path(dl_dir) / "109.dat").write_bytes(b"partial")
        raise ConnectionError("network down")

    monkeypatch.setattr(mitbih_module.wfdb, "dl_database", failing)
    with pytest.raises(ConfigurationError, match="could not download mitdb"):
        MITBIHDataModule(data_dir=str(records_dir), records=["109"], download=True).prepare_data()
    assert not list(records_dir.glob("109*")) and not list(records_dir.glob(".*"))


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("network down"),
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        requests.exceptions.ConnectionError("Max retries exceeded"),
        TimeoutError("timed out"),
    ],
    ids=["ConnectionError", "URLError", "requests", "TimeoutError"],
)
def test_network_failure_is_one_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def offline(db: str, dl_dir: str, records: list[str], annotators: list) -> None:
        raise error

    monkeypatch.setattr(mitbih_module.wfdb, "dl_database", offline)
    target = tmp_path / "mitdb"
    with pytest.raises(ConfigurationError) as info:
        MITBIHDataModule(data_dir=str(target), records=["100"], download=True).prepare_data()
    message = str(info.value)
    assert message.startswith(f"could not download mitdb from PhysioNet ({type(error).__name__}")
    assert str(error) in message and "check the network" in message
    assert f"put the records 100 (.hea, .dat and .atr each) into {target}" in message
    assert info.value.__cause__ is error
    assert list(target.iterdir()) == []


def test_cli_reports_a_failed_download_in_one_line(
    tiny: TinyTrainer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def offline(db: str, dl_dir: str, records: list[str], annotators: list) -> None:
        raise ConnectionError("network down")

    monkeypatch.setattr(mitbih_module.wfdb, "dl_database", offline)
    args = data_fit_args(tiny, "mitbih.yaml", tmp_path / "mitdb")
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data.download", "true", "--data.records", "[100]"])
    assert exit_info.value.code == 2
    line = cli_error_line(capsys.readouterr().err)
    assert "could not download mitdb from PhysioNet (ConnectionError: network down)" in line


def test_kaggle_csvs_are_read_cached_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = np.tile(np.arange(5), 12)
    values = write_kaggle_csv(tmp_path / "mitbih_train.csv", labels)
    write_kaggle_csv(tmp_path / "mitbih_test.csv", np.arange(5))
    dm = MITBIHDataModule(data_dir=str(tmp_path), source="kaggle")
    dm.setup("fit")
    counts = dm.summary()
    assert np.add(counts["train"], counts["val"]).tolist() == [12] * 5
    assert sum(counts["val"]) == 12 and counts["test"] == [1] * 5
    pool = dm.train_dataset.dataset.tensors
    assert pool[0].shape == (60, 1, 1, BEAT_LENGTH)
    assert np.allclose(pool[0][:, 0, 0].numpy(), values) and np.array_equal(pool[1], labels)

    assert len(list((tmp_path / "cache").glob("mitbih_*.npz"))) == 2

    def no_parsing(path: object) -> None:
        raise AssertionError("parsed again although cached")

    monkeypatch.setattr(mitbih_module, "read_kaggle_csv", no_parsing)
    again = MITBIHDataModule(data_dir=str(tmp_path), source="kaggle")
    again.setup("fit")
    assert torch.equal(again.train_dataset.dataset.tensors[0], pool[0])
    monkeypatch.undo()

    write_kaggle_csv(tmp_path / "bad" / "mitbih_train.csv", [0, 1], columns=150)
    write_kaggle_csv(tmp_path / "bad" / "mitbih_test.csv", [0, 1])
    with pytest.raises(
        ConfigurationError, match=r"mitbih_train\.csv has 150 columns, expected 188"
    ):
        MITBIHDataModule(data_dir=str(tmp_path / "bad"), source="kaggle").setup("fit")


def test_kaggle_cache_sees_a_same_size_edit(tmp_path: Path) -> None:
    labels = np.tile(np.arange(5), 12)
    write_kaggle_csv(tmp_path / "mitbih_train.csv", labels)
    write_kaggle_csv(tmp_path / "mitbih_test.csv", np.arange(5))
    first = MITBIHDataModule(data_dir=str(tmp_path), source="kaggle")
    first.setup("fit")
    assert first.summary()["test"] == [1] * 5

    # Relabel one row of the test file: same size, different data.
    test_csv = tmp_path / "mitbih_test.csv"
    before = test_csv.stat()
    rows = test_csv.read_text().splitlines()
    assert rows[0].endswith(",0.000000000000000000e+00")
    rows[0] = rows[0][: -len("0.000000000000000000e+00")] + "4.000000000000000000e+00"
    test_csv.write_text("\n".join(rows) + "\n")
    # A later edit has a later time, even where the clock is coarser than these steps.
    os.utime(test_csv, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert test_csv.stat().st_size == before.st_size

    again = MITBIHDataModule(data_dir=str(tmp_path), source="kaggle")
    again.setup("fit")
    assert again.summary()["test"] == [0, 1, 1, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "kaggle", "split": "record"}, "record ids"),
        ({"source": "kaggle", "records": ["100"]}, "records applies"),
        ({"split": "patient"}, "split must be"),
        ({"source": "csv"}, "source must be"),
        ({"test_fraction": 0.0}, "test_fraction"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        MITBIHDataModule(**kwargs)


def test_config_runs_fast_dev_run(tiny: TinyTrainer, records_dir: Path, tmp_path: Path) -> None:
    cli = build_cli(data_fit_args(tiny, "mitbih.yaml", records_dir))
    assert cli.trainer.state.finished
    assert cli.model.hparams.in_channels == 1 and cli.model.hparams.num_classes == 5
    assert cli.datamodule.split == "beat" and cli.datamodule.source == "wfdb"
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_cli_accepts_record_numbers(tiny: TinyTrainer, records_dir: Path, tmp_path: Path) -> None:
    args = data_fit_args(tiny, "mitbih.yaml", records_dir)[1:]  # no "fit"
    cli = build_cli([*args, "--data.records", "[100, 101, 103, 105, 201]"], run=False)
    assert cli.datamodule.records == ["100", "101", "103", "105", "201"]


def test_cli_reports_missing_records_in_one_line(
    tiny: TinyTrainer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(data_fit_args(tiny, "mitbih.yaml", tmp_path / "none"))
    line = cli_error_line(capsys.readouterr().err)
    assert "no MIT-BIH records" in line and "--data.download true" in line


def test_download_is_refused_for_the_kaggle_csvs_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        MITBIHDataModule(data_dir=str(tmp_path), source="kaggle", download=True)
    assert str(info.value) == (
        "MITBIHDataModule cannot download: the Kaggle CSVs need a Kaggle account; put "
        f"mitbih_train.csv and mitbih_test.csv into {tmp_path}, or use --data.source wfdb, "
        "which downloads PhysioNet's records"
    )
    assert MITBIHDataModule(data_dir=str(tmp_path), download=True).download  # wfdb can
