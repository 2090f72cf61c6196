"""What the command line tells the user: help, fit summary, evaluations beside the run."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning.fabric.plugins.environments.slurm as slurm_environment
import lightning.pytorch as pl
import pytest
import torch
from conftest import DIGITS_CONFIG, ROOT, TINY_BATCH_SIZE, TinyTrainer, run_main, subprocess_env
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from dsrelu_lightning import ACTIVATIONS, ResNetClassifier
from dsrelu_lightning.__main__ import COMMANDS
from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.cli.errors import silence_third_party_noise
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn.schedules import SCHEDULES
from dsrelu_lightning.training import default_callbacks

QUICK = [
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
    f"--data.init_args.batch_size={TINY_BATCH_SIZE}",
]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """One short fit shared by the tests below: (root, run folder, its stdout)."""
    root = tmp_path_factory.mktemp("fit")
    code, out, err, _ = run_main(
        "fit", "--config", DIGITS_CONFIG, "--trainer.max_epochs=2", *QUICK,
        f"--trainer.default_root_dir={root}",
    )  # fmt: skip
    assert code == 0, err
    (run,) = (root / "lightning_logs").iterdir()
    yield root, run, out
    for checkpoint in root.rglob("*.ckpt"):
        checkpoint.unlink()


def test_fit_summary_names_the_best_epoch_and_checkpoints_on_disk(
    fitted: tuple[Path, Path, str],
) -> None:
    root, run, out = fitted
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert Path(lines["Run folder"]) == run
    best_path = Path(lines["Best checkpoint"])
    assert best_path.is_file() and best_path.parent == run / "checkpoints"
    assert Path(lines["Last checkpoint"]) == run / "checkpoints" / "last.ckpt"
    rows = list(csv.DictReader((run / "epoch_metrics.csv").open()))
    best = min(rows, key=lambda r: float(r["val/loss"]))
    best_line = next(line for line in out.splitlines() if line.startswith("Best epoch"))
    assert best_line.startswith(f"Best epoch {best['epoch']} (lowest val/loss)")
    assert f"val/acc {float(best['val/acc']):.4f}" in best_line
    assert best_path.name == f"best-{int(best['epoch']):03d}.ckpt"
    assert "--ckpt_path last" in lines["Resume"] and str(run / "config.yaml") in lines["Resume"]
    assert lines["TensorBoard"] == f"tensorboard --logdir {root / 'lightning_logs'}"


def test_evaluating_a_checkpoint_writes_beside_its_run(fitted: tuple[Path, Path, str]) -> None:
    root, run, _ = fitted
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    before = sorted(p.name for p in (root / "lightning_logs").iterdir())
    for subcommand, prefix in (("test", "test"), ("validate", "val")):
        code, out, err, caught = run_main(
            subcommand, "--config", DIGITS_CONFIG, f"--ckpt_path={best}", *QUICK[1:],
            "--trainer.limit_test_batches=1", f"--trainer.default_root_dir={root}",
        )  # fmt: skip
        assert code == 0, err
        metrics = run / "eval" / best.stem / f"{subcommand}_metrics.json"
        assert f"Metrics written to {metrics}" in out
        record = json.loads(metrics.read_text())
        assert record["checkpoint"] == str(best) and record["data"]["init_args"]["fold_index"] == 0
        assert {f"{prefix}/{m}" for m in ("loss", "acc", "f1", "auroc")} == set(record["metrics"])
        assert not [w for w in caught if "dirpath has changed" in w]
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == before


def test_predict_writes_one_row_per_sample_matching_the_softmax(
    fitted: tuple[Path, Path, str],
) -> None:
    root, run, _ = fitted
    last = run / "checkpoints" / "last.ckpt"
    code, out, err, _ = run_main(
        "predict", "--config", DIGITS_CONFIG, f"--ckpt_path={last}",
        "--trainer.limit_predict_batches=2", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
    )  # fmt: skip
    assert code == 0, err
    path = run / "eval" / "last" / "predictions.csv"
    assert f"Predictions written to {path}" in out
    rows = list(csv.DictReader(path.open()))
    data = build_cli(["--config", DIGITS_CONFIG], run=False).datamodule
    data.setup("predict")
    inputs, labels = zip(
        *(data.predict_dataloader().dataset[i] for i in range(len(rows))), strict=True
    )
    model = ResNetClassifier.load_from_checkpoint(last, map_location="cpu").eval()
    with torch.no_grad():
        expected = model(torch.stack(inputs)).softmax(dim=-1)
    written = torch.tensor([[float(r[f"prob_{c}"]) for c in range(10)] for r in rows])
    assert len(rows) == 2 * data.batch_size
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    assert [int(r["label"]) for r in rows] == [int(y) for y in labels]
    assert [int(r["predicted"]) for r in rows] == expected.argmax(dim=-1).tolist()
    torch.testing.assert_close(written, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluation_without_a_checkpoint_is_refused(subcommand: str, tmp_path: Path) -> None:
    code, _, err, _ = run_main(
        subcommand, "--config", DIGITS_CONFIG, f"--trainer.default_root_dir={tmp_path}"
    )
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "--ckpt_path last" in err and "--ckpt_path untrained" in err
    assert not any(tmp_path.iterdir())


def test_fit_help_is_short_and_names_the_activations() -> None:
    code, out, _, _ = run_main("fit", "--help")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) < 270, len(lines)  # Lightning's Trainer options are most of it
    assert lines[0].startswith("usage: python -m dsrelu_lightning fit")
    start = next(i for i, line in enumerate(lines) if line.startswith("  --model.activation "))
    assert "(default: dsrelu)" in lines[start]
    block = " ".join(lines[start : start + 8])
    assert all(f" {name}," in block or f" {name} " in block for name in ACTIVATIONS)
    assert "initial_angle=85.0" in block and "final_angle=10.0" in block
    args = " ".join(lines[next(i for i, x in enumerate(lines) if "activation_args" in x) :][:5])
    assert all(name in args for name in SCHEDULES), args
    assert "torch.nn.modules" not in out and "``" not in out
    # What the page leaves out, it says where to find: every option stays accepted.
    assert "--trainer.callbacks.help CLASS" in out and "--print_config" in out
    assert "  --data.help" in out and "  --trainer CONFIG" not in out
    words = " ".join(out.split())
    assert "--early_stopping.verbose" not in out and "all of EarlyStopping's" in words


def test_top_level_help_lists_every_subcommand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dsrelu_lightning", "--help"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m dsrelu_lightning")
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert listed == [
        "fit",
        "validate",
        "test",
        "predict",
        "export",
        "benchmark",
        "cv",
        "report",
        "tune",
    ]
    assert set(listed) == set(COMMANDS)


_WITHOUT_TORCH = """
import sys
from dsrelu_lightning.__main__ import main
report = ["report", "--output=x", "--bogus"]
for args in (["--help"], ["fitt"], [], ["benchmark", "--help"], report, ["export", "--help"]):
    try:
        main(args)
    except SystemExit:
        pass
print(sorted(m for m in ("torch", "lightning") if m in sys.modules))
"""


def test_help_and_command_errors_answer_without_importing_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    errors = [line for line in done.stderr.splitlines() if line.startswith("dsrelu-lightning:")]
    assert errors[0].startswith(
        "dsrelu-lightning: error: unknown command 'fitt' (did you mean fit?)"
    )
    assert errors[1].startswith("dsrelu-lightning: error: no command given")
    assert "unrecognized arguments: --bogus" in errors[2]


def test_a_misspelt_key_suggests_the_closest_one() -> None:
    code, _, err, _ = run_main("fit", "--config", DIGITS_CONFIG, "--model.activaton", "mish")
    assert code == 2
    assert "did you mean --model.activation?" in err.strip().splitlines()[-1]


def test_noise_filters_drop_third_party_messages_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        logging.getLogger("torch.utils.cpp_extension").warning(
            "No CUDA runtime is found, using CUDA_HOME='/usr/local'"
        )
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(
            "💡 Tip: For seamless cloud logging and experiment tracking, try litlogger"
        )
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("Seed set to 42")
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1
        )
        warnings.warn(
            "the model has 33 DSReLU layers but no SlopeScheduler", UserWarning, stacklevel=1
        )
    assert [r.getMessage() for r in caplog.records] == ["Seed set to 42"]
    assert [str(w.message) for w in caught] == [
        "the model has 33 DSReLU layers but no SlopeScheduler"
    ]


@pytest.mark.parametrize(
    ("env", "hints"),
    [
        ({}, 1),  # not in a SLURM job: Lightning's advice stays
        ({"SLURM_JOB_ID": "7"}, 0),  # a batch script's own process (an array task): dropped
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, 0),  # under srun Lightning gives none
    ],
)
def test_the_srun_hint_is_dropped_only_in_an_srun_less_slurm_job(
    env: dict[str, str], hints: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Lightning's own check, on a machine where srun exists.
    monkeypatch.setattr(slurm_environment.shutil, "which", lambda name: f"/usr/bin/{name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        slurm_environment.SLURMEnvironment._validate_srun_used()
    assert len([w for w in caught if "`srun` command is available" in str(w.message)]) == hints


def test_default_callbacks_match_the_cli_and_write_epoch_metrics(
    tmp_path: Path, tiny: TinyTrainer
) -> None:
    cli = build_cli(["--config", DIGITS_CONFIG], run=False)
    callbacks = default_callbacks()
    python = pl.Trainer(callbacks=callbacks, logger=False, enable_progress_bar=True)
    # The same callbacks as the CLI adds (Lightning orders checkpoints last in both).
    cli_types = [type(cb) for cb in cli.trainer.callbacks if not isinstance(cb, SaveConfigCallback)]
    assert cli_types == [type(cb) for cb in python.callbacks]
    for kind in (EarlyStopping, ModelCheckpoint):
        ours = next(cb for cb in callbacks if type(cb) is kind)
        theirs = next(cb for cb in cli.trainer.callbacks if type(cb) is kind)
        for name in ("monitor", "patience", "filename", "save_last", "auto_insert_metric_name"):
            assert getattr(ours, name, None) == getattr(theirs, name, None), name

    kwargs = {**tiny.kwargs(), "max_epochs": 1, "enable_checkpointing": True}
    trainer = pl.Trainer(**kwargs, callbacks=default_callbacks())
    model = ResNetClassifier(num_classes=10, in_channels=1, stem="cifar")
    trainer.fit(model, datamodule=DigitsDataModule(data_dir=str(tmp_path / "data"), batch_size=32))
    # The progress bar's postfix: the training loss and the last validation accuracy.
    assert {"train/loss", "val/acc"} <= set(trainer.progress_bar_metrics)
    assert "val/f1" not in trainer.progress_bar_metrics
    rows = list(csv.DictReader((tmp_path / "epoch_metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0"] and "val/loss" in rows[0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best-000.ckpt",
        "last.ckpt",
    ]
