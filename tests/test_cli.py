"""The command line end to end, and its handling of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DIGITS_CONFIG, TinyTrainer, run_main, subprocess_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dsrelu_lightning.__main__ import main


@pytest.mark.slow
def test_fast_dev_run_as_a_user_types_it(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dsrelu_lightning", "fit", "--config", DIGITS_CONFIG]
    cmd += ["--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)]
    # save_top_k 0 makes the project warn (last.ckpt only at the end): its warnings stay.
    cmd += ["--checkpoint.save_top_k", "0"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=subprocess_env()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "--checkpoint.save_top_k 0: Lightning then writes last.ckpt" in done.stderr
    noise = ["litlogger", "isinstance(treespec, LeafSpec)", "No CUDA runtime is found"]
    noise.append("LightningCLI's args parameter")
    assert not [n for n in noise if n in done.stderr], done.stderr[-2000:]


def test_fit_logs_metrics_slope_and_time_to_tensorboard(tiny: TinyTrainer, tmp_path: Path) -> None:
    code, _, err, _ = run_main("fit", "--config", DIGITS_CONFIG, *tiny.args(max_epochs=2))
    assert code == 0, err
    (run_dir,) = (tmp_path / "lightning_logs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {f"{s}/{m}" for s in ("train", "val") for m in ("loss", "acc", "f1", "auroc")}
    assert expected | {"dsrelu/slope", "time/epoch_s"} <= tags
    slopes = [e.value for e in events.Scalars("dsrelu/slope")]
    assert len(slopes) == 2 and slopes[0] > slopes[1]
    assert (run_dir / "epoch_metrics.csv").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()

    # validate from the checkpoint runs from the CLI (its slope: tests/test_faults.py).
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    evaluation_root = tmp_path / "validate"
    code, _, err, _ = run_main(
        "validate",
        "--config",
        DIGITS_CONFIG,
        f"--ckpt_path={ckpt}",
        *tiny.args(default_root_dir=evaluation_root),
    )
    assert code == 0, err
    # The evaluation writes beside the checkpoint's run, not under its own root.
    assert (run_dir / "eval" / "last" / "validate_metrics.json").is_file()
    assert not (evaluation_root / "lightning_logs").exists()
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == [run_dir.name]


def test_overrides_reach_the_model_and_data() -> None:
    from dsrelu_lightning.cli.app import build_cli

    cli = build_cli(
        [
            "--config",
            DIGITS_CONFIG,
            "--model.activation=mish",
            "--data.fold_index=3",
            "--model.lr=0.0001",
        ],
        run=False,
    )
    assert cli.model.hparams.activation == "mish" and cli.model.hparams.lr == 1e-4
    assert cli.datamodule.fold_index == 3
    assert (cli.model.hparams.num_classes, cli.model.hparams.in_channels) == (10, 1)
    names = {type(cb).__name__ for cb in cli.trainer.callbacks}
    required = {"SlopeScheduler", "EarlyStopping", "ModelCheckpoint", "EpochTimer"}
    assert required | {"MetricsHistory"} <= names
    stopper = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "EarlyStopping")
    assert (stopper.monitor, stopper.patience) == ("val/loss", 15)


def test_dsrelu_angles_are_settable_from_the_command_line() -> None:
    from dsrelu_lightning import DSReLU
    from dsrelu_lightning.cli.app import build_cli

    args = '--model.activation_args={"initial_angle": 75, "final_angle": 30, "steepness": 10}'
    cli = build_cli(["--config", DIGITS_CONFIG, args], run=False)
    layers = [m for m in cli.model.modules() if isinstance(m, DSReLU)]
    assert len(layers) == 33
    assert {(m.initial_angle, m.final_angle, m.steepness) for m in layers} == {(75, 30, 10)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.activation=swishy"], "unknown activation 'swishy'; valid names:"),
        (["--data.fold_index=7"], "fold_index must lie in [0, 4]"),
        (["--data.num_folds=1"], "num_folds must be >= 2"),
        (["--data.batch_size=0"], "batch_size must be >= 1"),
        (["--trainer.max_epochs=-1", "--trainer.max_steps=1"], "needs a finite trainer.max_epochs"),
        (['--model.activation_args={"initial_angle": 95}'], "initial_angle=95"),
        (["--model.stem=tiny"], 'Parser key "model.stem"'),
        (["--config=does/not/exist.yaml"], "File does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(
    args: list[str],
    message: str,
    tiny: TinyTrainer,
    tmp_path: Path,
) -> None:
    existing = tmp_path / "lightning_logs" / "version_0" / "keep.txt"
    existing.parent.mkdir(parents=True)
    existing.write_text("results")
    code, _, err, _ = run_main("fit", "--config", DIGITS_CONFIG, *tiny.args(), *args)
    assert code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert err.strip().splitlines()[-1] == errors[0]
    assert existing.read_text() == "results"


def test_print_config_output(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", DIGITS_CONFIG, "--print_config"])
    assert exc.value.code in (0, None)
    out = capfd.readouterr().out
    assert "class_path: dsrelu_lightning.data.DigitsDataModule" in out
    assert "monitor: val/loss" in out and "activation: dsrelu" in out
