"""The benchmark grid: cells, shards, skip, resume after kill -9, cv, and its bad inputs."""

from __future__ import annotations

import csv
import fcntl
import functools
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from inspect import signature
from pathlib import Path
from typing import IO

import pytest
import torch
import yaml
from conftest import (
    CONFIGS,
    DIGITS_CONFIG,
    ROOT,
    SMALL_BACKBONE,
    run_main,
    subprocess_env,
    tiny_args,
)

from dsrelu_lightning import Classifier
from dsrelu_lightning.__main__ import main
from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.cli.summaries import changed_keys, config_difference
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study import result_file
from dsrelu_lightning.study.run.cell import cell_args, run_cell
from dsrelu_lightning.study.run.grid import (
    Cell,
    grid_cells,
    load_grid,
    parse_folds,
    parse_shard,
    shard_cells,
)
from dsrelu_lightning.study.run.isolated import IN_PROCESS_ENV
from dsrelu_lightning.study.run.runner import inspect_config, run_benchmark
from dsrelu_lightning.study.run.variants import Variant, cv_label, select_variants

TINY = tiny_args(max_epochs=2, limit_val_batches=2, limit_test_batches=2)
"""Two epochs of two batches, as every cell of these grids trains."""


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Two busy cores: one intra-op thread avoids OpenMP spin contention (much faster).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rows(cell_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((cell_dir / "epoch_metrics.csv").open()))


def result(cell_dir: Path) -> dict:
    return json.loads((cell_dir / "result.json").read_text())


# --- the grid definition (no training) ---------------------------------------------------


def test_shards_are_disjoint_and_cover_the_grid() -> None:
    variants = select_variants(["relu", "mish", "dsrelu"])
    cells = grid_cells(
        {"a": Path("a.yaml"), "b": Path("b.yaml")}, variants, {"a": (0, 1), "b": (2,)}
    )
    assert [c.name for c in cells[:3]] == ["a/relu/fold 0", "a/relu/fold 1", "a/mish/fold 0"]
    assert len(cells) == 3 * 2 + 3 * 1
    for count in (1, 2, 4, 9, 12):
        shards = [shard_cells(cells, index, count) for index in range(count)]
        names = [c.name for shard in shards for c in shard]
        assert sorted(names) == sorted(c.name for c in cells)  # covering, nothing twice
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced


def test_cell_folders_and_arguments() -> None:
    variant = Variant("dsrelu_75_30", "dsrelu", {"initial_angle": 75, "final_angle": 30})
    cell = Cell("digits", Path(DIGITS_CONFIG), variant, 3)
    assert cell.directory("runs/x") == Path("runs/x/digits/dsrelu_75_30/fold3")
    args = cell_args(cell, "runs/x", ["--trainer.max_epochs", "30"], 42)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--trainer.max_epochs"] == "30"
    assert json.loads(flags["--model.activation_args"]) == {"initial_angle": 75, "final_angle": 30}
    assert flags["--data.init_args.fold_index"] == "3"
    assert flags["--checkpoint.dirpath"] == str(
        Path("runs/x/digits/dsrelu_75_30/fold3/checkpoints")
    )
    assert json.loads(flags["--trainer.logger"])["init_args"]["save_dir"] == str(
        Path("runs/x/digits/dsrelu_75_30/fold3")
    )


def test_the_shipped_grid_file_parses() -> None:
    grid = load_grid(CONFIGS / "benchmark_digits.yaml")
    assert grid.datasets == {"digits": CONFIGS / "digits.yaml"}
    assert grid.folds == (0, 1, 2, 3, 4)
    labels = {v.label: v for v in grid.variants}
    assert list(labels)[:6] == ["relu", "leaky_relu", "sigmoid", "tanh", "mish", "dsrelu"]
    assert labels["dsrelu_75_30"].activation_args == {"initial_angle": 75, "final_angle": 30}
    assert labels["dsrelu_80_15_k10"].activation_args["steepness"] == 10
    assert labels["dsrelu_fixed_45"].activation_args == {"initial_angle": 45, "final_angle": 45}
    assert labels["dsrelu_step"].overrides == {"slope_scheduler.granularity": "step"}
    assert labels["dsrelu_negative_slope_0"].activation_args == {"negative_slope": 0}
    authors = labels["dsrelu_authors_code"]
    assert authors.activation_args == {"initial_angle": 75, "final_angle": 30}
    assert authors.overrides == {"slope_scheduler.schedule": "authors_code"}
    assert authors.cli_args()[-2:] == ["--slope_scheduler.schedule", "authors_code"]
    chosen = select_variants(["dsrelu_75_30", "relu"], grid.variants)
    assert [v.label for v in chosen] == ["dsrelu_75_30", "relu"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("variants: {x: {activation: swishy}}", "unknown activation 'swishy'"),
        ("variants: {x: {activation: dsrelu, activation_args: {initial_angle: 95}}}", "(0, 90)"),
        ("variants: {x: {activation: dsrelu, slope: 3}}", "unknown keys ['slope']"),
        ("variants: {'a b': {activation: relu}}", "variant label"),
        ("activations: [relu]\nvariants: {relu: {activation: relu}}", "repeat relu"),
        ("activations: [relu]\nfolds: [0, 0]", "folds repeat 0"),
        ("activations: [relu]\nfolds: [a]", "fold indices >= 0"),
        ("activations: [relu]\ndatasets: {digits: nowhere.yaml}", "does not exist"),
        ("activations: [relu]\nmodels: [resnet]", "unknown keys ['models']"),
        ("folds: [0]", "defines no activations or variants"),
        ("activations: [relu", "not valid YAML"),
        # A variant's overrides may not move what the grid sets per cell or selects by.
        (
            "variants: {x: {activation: relu, overrides: {data.init_args.fold_index: 1}}}",
            "overrides key --data.init_args.fold_index is set per cell by the grid",
        ),
        (
            "variants: {x: {activation: relu, overrides: {seed_everything: 1}}}",
            "--seed_everything is set per cell by the grid",
        ),
        (
            "variants: {x: {activation: relu, overrides: {checkpoint.monitor: val/acc}}}",
            "--checkpoint.monitor cannot be overridden",
        ),
        (
            "variants: {x: {activation: relu, overrides: {checkpoint: {mode: max}}}}",
            "--checkpoint is a whole section holding --checkpoint.dirpath",
        ),
        (
            "variants: {x: {activation: relu, overrides: {trainer: {max_epochs: 2}}}}",
            "give dotted keys such as trainer.<name>",
        ),
        (
            "variants: {x: {activation: relu, overrides: {model.activation: mish}}}",
            "is the variant's own: set 'activation' and 'activation_args'",
        ),
        ("variants: {x: {activation: relu, overrides: [model.lr]}}", "must map LightningCLI keys"),
    ],
)
def test_bad_grid_files_raise(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_grid(path)


@pytest.mark.parametrize("text", ["3/2", "2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shards_raise(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--shard must be i/n with 0 <= i < n"):
        parse_shard(text)


def test_folds_and_shards_parse() -> None:
    assert parse_shard(" 3/4 ") == (3, 4)
    assert parse_folds("0, 2,4", num_folds=5) == (0, 2, 4)
    with pytest.raises(ConfigurationError, match="fold 5 does not exist"):
        parse_folds("0,5", num_folds=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/2"], "--shard must be i/n with 0 <= i < n"),
        (["--activations", "relu,swishy"], "unknown activation 'swishy'"),
        (["--activations", "relu,relu"], "--activations repeat relu"),
        (["--folds", "0,x"], "fold indices >= 0"),
        (["--folds", "0,7"], "fold 7 does not exist: the config has num_folds=5"),
        (["--seeds", "42,x"], "--seeds must be a comma-separated list of integer seeds"),
        (["--seeds", "-1"], "--seeds must be a comma-separated list of integer seeds"),
        (["--seeds", ""], "--seeds must be a comma-separated list of integer seeds"),
        (["--seeds", "4,4"], "--seeds repeat 4"),
        (["--seed_everything", "3"], "--seed_everything is set per cell by the grid"),
        (["--data.init_args.seed", "3"], "choose activations with --activations or a --grid"),
        (["--model.activation", "mish"], "--model.activation is set per cell by the grid"),
        (["--data.init_args.fold_index", "1"], "is set per cell by the grid"),
        (["--trainer.max_epochs", "abc"], "trainer.max_epochs"),
        (["--trainer.fast_dev_run", "true"], "--trainer.fast_dev_run records no epochs"),
        (["--grid", "{cfg}"], "grid file"),
        # Selection (min val/loss), the tested checkpoint and resuming rely on these.
        (["--checkpoint.monitor", "val/acc"], "--checkpoint.monitor cannot be overridden"),
        (["--checkpoint.mode=max"], "--checkpoint.mode cannot be overridden"),
        (["--checkpoint.save_top_k", "3"], "--checkpoint.save_top_k cannot be overridden"),
        (["--checkpoint.save_last", "false"], "--checkpoint.save_last cannot be overridden"),
        (["--early_stopping.monitor", "val/acc"], "--early_stopping.monitor cannot be"),
        (["--checkpoint", '{"monitor": "val/acc"}'], "checkpoint.monitor='val/acc' (from"),
    ],
)
def test_benchmark_bad_input_is_one_line_and_writes_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    command = ["benchmark", "--config", DIGITS_CONFIG, "--output", str(output)]
    with pytest.raises(SystemExit) as exit_info:
        main(command + [arg.replace("{cfg}", DIGITS_CONFIG) for arg in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dsrelu-lightning: error:") and err.count("\n") == 1
    assert message in err
    assert not output.exists()


def test_a_config_that_moves_the_checkpoint_monitor_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "digits.yaml"
    config.write_text(
        Path(DIGITS_CONFIG).read_text() + "checkpoint:\n  monitor: val/acc\n  mode: max\n"
    )
    with pytest.raises(SystemExit):
        main(["cv", "--config", str(config), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "checkpoint.monitor='val/acc'" in err and "stay on val/loss" in err
    assert not (tmp_path / "out").exists()


def test_a_variant_override_of_a_cell_key_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("variants: {r: {activation: relu, overrides: {trainer.logger: false}}}\n")
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--grid", str(grid), "--config", DIGITS_CONFIG, "--output", str(output)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "variant 'r' in grid file" in err and "--trainer.logger is set per cell" in err
    assert not output.exists()


def test_a_variant_override_that_does_not_parse_is_refused_before_any_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("variants: {r: {activation: relu, overrides: {trainer.max_epochs: many}}}\n")
    output = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["benchmark", "--grid", str(grid), "--config", DIGITS_CONFIG, "--output", str(output)])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainer.max_epochs" in err
    assert not output.exists()


def test_seeds_multiply_the_cells_and_name_their_folders() -> None:
    variants = select_variants(["relu", "dsrelu"])
    cells = grid_cells({"d": Path("d.yaml")}, variants, {"d": (0, 1)}, {"d": (42, 43)})
    assert [c.name for c in cells[:3]] == ["d/relu/seed 42/fold 0", "d/relu/seed 42/fold 1",
                                           "d/relu/seed 43/fold 0"]  # fmt: skip
    folders = {c.directory("o") for c in cells}
    assert len(folders) == 8 and Path("o/d/dsrelu/seed43/fold1") in folders
    flags = dict(zip(*[iter(cell_args(cells[2], "o", [], 7))] * 2, strict=True))
    assert flags["--seed_everything"] == "43" and flags["--data.init_args.seed"] == "43"
    # Shards mix seeds as they mix labels.
    assert {c.seed for c in shard_cells(cells, 0, 3)} == {42, 43}


def test_inspecting_a_config_parses_it_and_builds_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_models = []
    original = Classifier.__init__

    @functools.wraps(original)  # the parser reads the signature through __wrapped__
    def built(self: Classifier, *args: object, **kwargs: object) -> None:
        built_models.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "__init__", built)
    info = inspect_config(
        DIGITS_CONFIG, ["--data.init_args.num_folds", "3", "--model.activation", "mish"]
    )
    assert (info.num_folds, info.seed, info.activation) == (3, 42, "mish")
    # A config without num_folds gets the data module's default, from its signature.
    config = tmp_path / "digits.yaml"
    config.write_text(Path(DIGITS_CONFIG).read_text().replace("    num_folds: 5\n", ""))
    assert "num_folds" not in config.read_text()
    default = signature(KFoldDataModule.__init__).parameters["num_folds"].default
    assert inspect_config(config).num_folds == default
    with pytest.raises(ConfigurationError, match="fast_dev_run records no epochs"):
        inspect_config(DIGITS_CONFIG, ["--trainer.fast_dev_run", "true"])
    with pytest.raises(ConfigurationError, match=r"\(0, 90\)"):
        inspect_config(DIGITS_CONFIG, ["--model.activation_args", '{"initial_angle": 95}'])
    assert built_models == []


def test_a_key_added_to_the_cli_after_a_cell_ran_counts_only_off_its_default() -> None:
    saved = {"model": {"lr": 0.001}, "old": None}
    current = {"model": {"lr": 0.001}, "new_callback": {"enabled": False, "n": 200}}
    defaults = {"new_callback": {"enabled": False, "n": 200}, "model": {"lr": 0.001}}
    assert changed_keys(saved, current, defaults) == []
    changed = {**current, "new_callback": {"enabled": True, "n": 200}}
    assert changed_keys(saved, changed, defaults) == ["new_callback.enabled"]
    assert changed_keys(saved, current) == ["new_callback.enabled", "new_callback.n"]
    # A key the saved config has is compared, whatever the default.
    assert changed_keys({"model": {"lr": 0.1}}, {"model": {"lr": 0.001}}, defaults) == ["model.lr"]
    assert config_difference(saved, changed, ("model", "new_callback")) == (
        "new_callback.enabled: None != True"
    )


def test_cv_labels_non_default_activation_args() -> None:
    assert cv_label("dsrelu", None) == "dsrelu"
    assert cv_label("DSReLU", {"initial_angle": 85, "final_angle": 10.0}) == "dsrelu"
    assert cv_label("dsrelu", {"initial_angle": 75.0, "final_angle": 30}) == (
        "dsrelu_initial_angle75_final_angle30"
    )
    assert cv_label("dsrelu", {"negative_slope": -0.5}) == "dsrelu_negative_slope-0.5"
    with pytest.raises(ConfigurationError, match="define a labelled variant"):
        cv_label("elu", {"alpha": "a b"})


def test_datasets_in_two_places_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "benchmark",
                "--grid",
                str(CONFIGS / "benchmark_digits.yaml"),
                "--config",
                DIGITS_CONFIG,
                "--output",
                str(tmp_path),
            ]
        )
    assert "either in the --grid file or by --config" in capsys.readouterr().err


# --- real grids (tiny settings) ------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """relu and dsrelu on fold 0, run as two shards into one output folder.

    The stopping threshold ends each fit after its first epoch (max_epochs is 3), which
    keeps the grid fast and exercises the resume of an early-stopped cell.
    """
    output = tmp_path_factory.mktemp("grid") / "out"
    command = [
        "benchmark",
        "--config",
        DIGITS_CONFIG,
        "--activations",
        "relu,dsrelu",
        "--folds",
        "0",
    ]
    command += ["--output", str(output), *TINY, "--trainer.max_epochs", "3"]
    command += ["--early_stopping.stopping_threshold", "1e9"]
    # A stale folder of a cell killed before its first checkpoint: it must be redone.
    stale = output / "digits" / "dsrelu" / "seed42" / "fold0"
    stale.mkdir(parents=True)
    (stale / "config.yaml").write_text("seed_everything: 1\n")
    (stale / "events.out.tfevents.stale").write_bytes(b"x")
    logs = {shard: run_main(*command, "--shard", shard).ok() for shard in ("0/2", "1/2")}
    overrides = [*TINY, "--trainer.max_epochs", "3", "--early_stopping.stopping_threshold", "1e9"]
    yield {"output": output, "command": command, "logs": logs, "overrides": overrides}
    shutil.rmtree(output.parent, ignore_errors=True)  # its checkpoints: ~250 MB each


def test_shards_run_disjoint_cells_and_the_report_merges_them(sharded: dict) -> None:
    output, logs = sharded["output"], sharded["logs"]
    assert "benchmark: 2 cells (shard 0/2: 1 here)" in logs["0/2"]
    assert "cell 1/1: digits/relu/seed 42/fold 0" in logs["0/2"] and "dsrelu" not in logs["0/2"]
    assert (
        "cell 1/1: digits/dsrelu/seed 42/fold 0" in logs["1/2"]
        and "digits/relu/" not in logs["1/2"]
    )
    summary = list(csv.DictReader((output / "summary.csv").open()))
    assert sorted(r["label"] for r in summary) == ["dsrelu", "relu"]
    for log in logs.values():  # one line per cell (what the fits print: tests below)
        assert all(line.startswith(("benchmark:", "cell ", "cells:", "report:"))
                   for line in log.splitlines()), log  # fmt: skip
    assert (output / "figures" / "digits_val_curves.png").is_file()
    assert "| 0 | Val Acc |" in (output / "summary.md").read_text()
    stale = output / "digits" / "dsrelu" / "seed42" / "fold0"
    assert not (stale / "events.out.tfevents.stale").exists()
    assert result(stale)["resumed_from_epoch"] is None


def test_result_file_holds_the_best_epoch_by_val_loss(sharded: dict) -> None:
    cell_dir = sharded["output"] / "digits" / "dsrelu" / "seed42" / "fold0"
    data, history = result(cell_dir), rows(cell_dir)
    assert [int(r["epoch"]) for r in history] == [0]
    assert data["best_epoch"] == 0 and data["epochs_run"] == 1
    assert "threshold" in data["stop_reason"] and data["status"] == "finished"
    for stage in ("train", "val"):
        for metric in ("acc", "f1", "auroc", "loss"):
            assert data[stage][metric] == pytest.approx(float(history[0][f"{stage}/{metric}"]))
    assert set(data["test"]) == {"acc", "f1", "auroc", "loss"}
    assert data["mean_epoch_time_s"] == pytest.approx(float(history[0]["time/epoch_s"]))
    assert data["best_checkpoint"] == "best-000.ckpt"
    # A finished cell keeps its best checkpoint only: last.ckpt served resuming.
    assert [p.name for p in (cell_dir / "checkpoints").iterdir()] == ["best-000.ckpt"]
    assert set(data["versions"]) >= {"python", "torch", "lightning", "torchmetrics"}
    assert data["config"]["data"]["init_args"]["fold_index"] == 0
    assert data["config"]["model"]["activation"] == "dsrelu"
    assert data["config"]["trainer"]["max_epochs"] == 3
    assert any(p.name.startswith("events.out.tfevents") for p in cell_dir.iterdir())


def test_the_recorded_command_is_the_cell_as_a_fit(sharded: dict) -> None:
    data = result(sharded["output"] / "digits" / "relu" / "seed42" / "fold0")
    words = shlex.split(data["command"])
    assert words[:4] == ["python", "-m", "dsrelu_lightning", "fit"]
    cli = build_cli(words[4:], run=False)
    assert json.loads(cli.parser.dump(cli.config, format="json", skip_none=False)) == data["config"]


def test_rerun_skips_finished_cells(sharded: dict) -> None:
    results = sorted(sharded["output"].glob("**/result.json"))
    before = [p.stat().st_mtime_ns for p in results]
    # A kill after result.json but before last.ckpt's deletion: the rerun deletes it.
    leftover = (
        sharded["output"] / "digits" / "relu" / "seed42" / "fold0" / "checkpoints" / "last.ckpt"
    )
    leftover.write_bytes(b"x")
    assert run_main(*sharded["command"]).ok().count("(finished earlier, skipped)") == 2
    assert [p.stat().st_mtime_ns for p in results] == before
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        (["--trainer.max_epochs", "30"], "(trainer.max_epochs changed)"),
        (["--model.lr", "0.01"], "(model.lr changed)"),
    ],
)
def test_rerun_with_other_settings_refuses_finished_cells(
    sharded: dict, change: list[str], changed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to skip them and report their old numbers as the new command's.
    results = sorted(sharded["output"].glob("**/result.json"))
    before = [p.stat().st_mtime_ns for p in results]
    with pytest.raises(SystemExit) as exit_info:
        main([*sharded["command"], *change])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and changed in err and "use another --output" in err
    assert "finished with another configuration" in err
    assert [p.stat().st_mtime_ns for p in results] == before


def test_rerun_with_cosmetic_changes_or_another_path_still_skips(
    sharded: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = sharded["output"]
    monkeypatch.chdir(output.parent)  # the same folder, given by a relative path
    command = [output.name if arg == str(output) else arg for arg in sharded["command"]]
    command += ["--trainer.enable_progress_bar", "true", "--trainer.enable_model_summary", "true"]
    assert run_main(*command).ok().count("(finished earlier, skipped)") == 2


def test_another_dsrelu_setting_under_the_same_label_is_refused(sharded: dict) -> None:
    # What `cv --model.activation_args ...` labelled "dsrelu" did before cv_label: reuse
    # the default-angle cells.
    variant = Variant("dsrelu", "dsrelu", {"initial_angle": 75, "final_angle": 30})
    with pytest.raises(ConfigurationError, match=r"\(model\.activation_args\.final_angle, "):
        run_benchmark(
            sharded["output"], {"digits": DIGITS_CONFIG}, [variant], [0], sharded["overrides"]
        )


def test_run_cell_checks_a_finished_cell_too(sharded: dict) -> None:
    # As when another process finished the cell after the grid's up-front check.
    cell = Cell("digits", Path(DIGITS_CONFIG), select_variants(["relu"])[0], 0, seed=42)
    output, overrides = sharded["output"], sharded["overrides"]
    assert run_cell(cell, output, overrides, 42) == "skipped"
    with pytest.raises(ConfigurationError, match=r"finished with another .*\(model\.lr changed"):
        run_cell(cell, output, [*overrides, "--model.lr", "0.01"], 42)


def test_a_cell_locked_by_another_process_is_left_alone(tmp_path: Path) -> None:
    cell_dir = tmp_path / "out" / "digits" / "relu" / "seed42" / "fold0"
    cell_dir.mkdir(parents=True)
    (cell_dir / "events.out.tfevents.live").write_bytes(b"x")  # the other run's files
    command = ["benchmark", "--config", DIGITS_CONFIG, "--activations", "relu", "--folds", "0"]
    command += ["--output", str(tmp_path / "out"), *TINY]
    with (cell_dir / ".lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live cell's process
        log = run_main(*command).ok()
    assert "cell 1/1: digits/relu/seed 42/fold 0: running in another process" in log
    assert "report: not written" in log
    assert (cell_dir / "events.out.tfevents.live").exists()  # not deleted as stale
    assert sorted(p.name for p in cell_dir.iterdir()) == [".lock", "events.out.tfevents.live"]


def test_a_busy_cell_finished_by_the_other_process_before_the_end_lets_the_report_through(
    sharded: dict, tmp_path: Path
) -> None:
    # Two processes on one grid: each finds the other's cell busy. The one that ends last
    # must see the other's cell finished by then and write the report.
    output = tmp_path / "out"
    shutil.copytree(sharded["output"], output, ignore=shutil.ignore_patterns("*.ckpt"))
    other = output / "digits" / "relu" / "seed42" / "fold0"
    record = (other / "result.json").read_bytes()
    (other / "result.json").unlink()  # relu: still running in the "other process"
    shutil.rmtree(output / "digits" / "dsrelu")  # dsrelu: this process runs it
    command = [str(output) if arg == str(sharded["output"]) else arg for arg in sharded["command"]]

    def finish_the_other_cell(held: IO[bytes]) -> None:
        deadline = time.monotonic() + 120
        while not (output / "digits" / "dsrelu").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # until this process has passed relu and started dsrelu
        (other / "result.json").write_bytes(record)
        held.close()  # releases the other process's lock

    with (other / ".lock").open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        finisher = threading.Thread(target=finish_the_other_cell, args=(held,))
        finisher.start()
        log = run_main(*command).ok()
        finisher.join()
    assert "digits/relu/seed 42/fold 0: running in another process" in log
    assert "cells: 1 of the busy ones have finished since" in log
    assert "report: not written" not in log and (output / "summary.md").is_file()


def test_an_old_layout_cell_is_reused_as_the_seed_it_ran_with(
    sharded: dict, tmp_path: Path
) -> None:
    # A grid made before seeds: <label>/fold<k>, and a record without "seed".
    output = tmp_path / "out"
    shutil.copytree(sharded["output"], output, ignore=shutil.ignore_patterns("*.ckpt"))
    for label in ("relu", "dsrelu"):
        old = output / "digits" / label / "fold0"
        (output / "digits" / label / "seed42" / "fold0").rename(old)
        (output / "digits" / label / "seed42").rmdir()
        data = result(old)
        del data["seed"]
        (old / "result.json").write_text(json.dumps(data))
        # A key the CLI gained after the cell ran, at its default: not a difference.
        saved = yaml.safe_load((old / "config.yaml").read_text())
        del saved["slope_scheduler"]["granularity"]
        (old / "config.yaml").write_text(yaml.safe_dump(saved))
    before = sorted(p.stat().st_mtime_ns for p in output.glob("**/result.json"))
    command = [str(output) if arg == str(sharded["output"]) else arg for arg in sharded["command"]]
    log = run_main(*command).ok()
    assert log.count("(finished earlier, skipped)") == 2
    assert not list(output.glob("digits/*/seed42"))  # nothing rerun in the new layout
    assert sorted(p.stat().st_mtime_ns for p in output.glob("**/result.json")) == before
    assert "cells: 0 finished, 0 resumed, 0 diverged, 2 skipped, 0 busy" in log
    # Found where it lies, it is compared like any finished cell.
    with pytest.raises(ConfigurationError, match=r"relu/seed 42/fold 0 finished with another"):
        run_benchmark(output, {"digits": DIGITS_CONFIG}, select_variants(["relu"]), [0], seeds=[42])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """2 labels (one with overrides) x 2 seeds x 2 folds, one epoch each."""
    root = tmp_path_factory.mktemp("seeded")
    grid = root / "grid.yaml"
    grid.write_text(
        "variants:\n"
        "  relu: {activation: relu}\n"
        "  relu_step:\n"
        "    activation: relu\n"
        "    overrides: {slope_scheduler.granularity: step, model.lr: 0.002}\n"
    )
    output = root / "out"
    command = ["benchmark", "--config", DIGITS_CONFIG, "--grid", str(grid), "--folds", "0,1"]
    command += ["--seeds", "42,43", "--output", str(output), *TINY, "--trainer.max_epochs", "1"]
    command += ["--keep_checkpoints", "none"]
    yield {"output": output, "log": run_main(*command).ok()}
    shutil.rmtree(root, ignore_errors=True)


def test_two_labels_two_seeds_two_folds_make_eight_cells(seeded: dict) -> None:
    records = {p.parent: result(p.parent) for p in seeded["output"].glob("**/result.json")}
    assert len(records) == 8
    cells = {(r["label"], r["seed"], r["fold"]) for r in records.values()}
    assert len(cells) == 8 and {seed for _, seed, _ in cells} == {42, 43}
    for folder, data in records.items():
        assert folder.relative_to(seeded["output"]) == Path(
            "digits", data["label"], f"seed{data['seed']}", f"fold{data['fold']}"
        )
        assert data["config"]["seed_everything"] == data["seed"]
        assert data["config"]["data"]["init_args"]["seed"] == data["seed"]


def test_a_variants_overrides_reach_its_cells_and_the_report(seeded: dict) -> None:
    for folder in seeded["output"].glob("digits/*/seed*/fold*"):
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        step = folder.parts[-3] == "relu_step"
        assert saved["slope_scheduler"]["granularity"] == ("step" if step else "epoch")
        assert saved["model"]["lr"] == (0.002 if step else 0.001)
        assert result(folder)["overrides"] == (
            {"slope_scheduler.granularity": "step", "model.lr": 0.002} if step else {}
        )
    markdown = (seeded["output"] / "summary.md").read_text()
    assert "| Label | Activation | Arguments | Overrides | Folds |" in markdown
    assert "| relu_step | relu | null | model.lr=0.002, slope_scheduler.granularity=step |" in (
        markdown
    )
    assert "| relu | relu | null | — |" in markdown


def test_progress_lines_show_elapsed_eta_and_the_counts(seeded: dict) -> None:
    lines = [line for line in seeded["log"].splitlines() if "ETA" in line]
    assert len(lines) == 8
    assert re.fullmatch(
        r"cell 1/8: digits/relu/seed 42/fold 0: finished in \d+\.\d s; "
        r"elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d",
        lines[0],
    ), lines[0]
    assert lines[-1].endswith("ETA 0:00:00")
    assert "cells: 8 finished, 0 resumed, 0 diverged, 0 skipped, 0 busy (elapsed" in seeded["log"]


class _KilledBeforeTheResult(Exception):
    pass


def test_early_stopped_cell_resumes_without_training_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if killed between the end of the (early-stopped) fit and its result.json.
    command = ["cv", "--config", DIGITS_CONFIG, "--folds", "0", "--output", str(tmp_path), *TINY]
    command += ["--model.activation", "relu", "--trainer.max_epochs", "3"]
    command += ["--early_stopping.stopping_threshold", "1e9"]
    first: dict = {}
    monkeypatch.setenv(IN_PROCESS_ENV, "1")  # the cells see this process's patch

    def killed(path: Path, data: dict) -> None:
        first.update(data)
        raise _KilledBeforeTheResult

    with monkeypatch.context() as patch:
        patch.setattr(result_file, "atomic_write_json", killed)
        with pytest.raises(_KilledBeforeTheResult):
            main(command)
    cell_dir = tmp_path / "digits" / "relu" / "seed42" / "fold0"
    assert (cell_dir / "checkpoints" / "last.ckpt").is_file() and first["epochs_run"] == 1

    with pytest.raises(SystemExit):
        main([*command, "--model.lr", "0.01"])
    err = capsys.readouterr().err
    assert "cell digits/relu/seed 42/fold 0 was started with another configuration (model.lr" in err
    assert "resuming from checkpoints/last.ckpt (epoch 0)" in run_main(*command).ok()
    again = result(cell_dir)
    assert again["resumed_from_epoch"] == 0
    assert again["epochs_run"] == 1  # without _KeepStopped Lightning would train on
    assert again["val"] == first["val"] and again["test"] == pytest.approx(first["test"])
    assert [int(r["epoch"]) for r in rows(cell_dir)] == [0]
    assert not (cell_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_kill_9_mid_cv_then_rerun_resumes_without_duplicates(tmp_path: Path) -> None:
    output = tmp_path / "out"
    # cv: every given fold of the config's own activation (overridden here to relu).
    command = ["cv", "--config", DIGITS_CONFIG, "--folds", "0", "--output", str(output), *TINY]
    command += ["--model.activation", "relu"]
    # SIGKILL right after the epoch-1 row is written, before that epoch's checkpoint.
    killer = (
        "import os, signal, sys\n"
        "from dsrelu_lightning.training.callbacks import MetricsHistory\n"
        "from dsrelu_lightning.__main__ import main\n"
        "original = MetricsHistory.on_train_epoch_end\n"
        "def on_train_epoch_end(self, trainer, pl_module):\n"
        "    original(self, trainer, pl_module)\n"
        "    if trainer.current_epoch == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "MetricsHistory.on_train_epoch_end = on_train_epoch_end\n"
        "main(sys.argv[1:])\n"
    )
    # In-process cells: the patch above reaches the cell, and the kill ends the whole run.
    env = subprocess_env(OMP_NUM_THREADS="1", **{IN_PROCESS_ENV: "1"})
    killed = subprocess.run(
        [sys.executable, "-c", killer, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    cell_dir = output / "digits" / "relu" / "seed42" / "fold0"
    assert not (cell_dir / "result.json").exists()
    assert [int(r["epoch"]) for r in rows(cell_dir)] == [0, 1]  # epoch 1 logged, not saved

    assert "resuming from checkpoints/last.ckpt (epoch 0)" in run_main(*command).ok()
    data, history = result(cell_dir), rows(cell_dir)
    assert data["resumed_from_epoch"] == 0 and data["epochs_run"] == 2
    assert data["label"] == "relu" and data["activation"] == "relu"
    assert [int(r["epoch"]) for r in history] == [0, 1]  # epoch 1 redone, not duplicated
    best = min(history, key=lambda r: float(r["val/loss"]))
    assert data["best_epoch"] == int(best["epoch"])
    assert data["val"]["acc"] == pytest.approx(float(best["val/acc"]))
    assert len(list(csv.DictReader((output / "summary.csv").open()))) == 1


def test_a_diverging_cell_is_recorded_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Classifier.training_step

    def nan_from_epoch_1(self: Classifier, batch: object, batch_idx: int) -> torch.Tensor:
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch >= 1 else loss

    monkeypatch.setattr(Classifier, "training_step", nan_from_epoch_1)
    monkeypatch.setenv(IN_PROCESS_ENV, "1")  # the cell sees this process's patch
    command = ["cv", "--config", DIGITS_CONFIG, "--folds", "0", "--output", str(tmp_path), *TINY]
    command += ["--keep_checkpoints", "none"]
    run_main(*command, "--model.activation", "relu").ok()
    data = result(tmp_path / "digits" / "relu" / "seed42" / "fold0")
    assert not list(tmp_path.glob("**/*.ckpt")) and data["best_checkpoint"] is None
    assert data["status"] == "diverged" and "NaN or infinite" in data["stop_reason"]
    assert data["best_epoch"] == 0 and data["epochs_run"] == 1  # the last good epoch
    assert set(data["test"]) == {"acc", "f1", "auroc", "loss"}
    assert "(finished earlier, skipped)" in run_main(*command, "--model.activation", "relu").ok()
    assert "relu/fold 0: diverged" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_backbones_are_a_grid_axis_compared_within_each_backbone(tmp_path: Path) -> None:
    output = tmp_path / "out"
    backbones = f"{SMALL_BACKBONE},tiny_nets.LateStemCNN"
    command = ["benchmark", "--config", DIGITS_CONFIG, "--activations", "relu,mish,dsrelu"]
    command += ["--folds", "0,1", "--backbones", backbones, "--output", str(output)]
    command += [*tiny_args(backbone=None, max_epochs=1), "--keep_checkpoints", "none"]
    log = run_main(*command).ok()
    assert "benchmark: 12 cells" in log
    records = {p.parent: result(p.parent) for p in output.glob("**/result.json")}
    assert len(records) == 12
    for folder, data in records.items():
        backbone = folder.relative_to(output / "digits").parts[0]
        assert data["backbone"] == backbone == data["config"]["model"]["backbone"]
    summary = list(csv.DictReader((output / "summary.csv").open()))
    assert sorted((r["backbone"], r["label"]) for r in summary) == sorted(
        (b, label) for b in backbones.split(",") for label in ("relu", "mish", "dsrelu")
        for _ in range(2)
    )  # fmt: skip
    tests = list(csv.DictReader((output / "summary_tests.csv").open()))
    # Within each backbone: relu and mish against dsrelu, on test and val acc and F1, over
    # its 2 folds.
    assert sorted((r["backbone"], r["label"], r["metric"]) for r in tests) == sorted(
        (b, label, m) for b in backbones.split(",") for label in ("relu", "mish")
        for m in ("test_acc", "test_f1", "val_acc", "val_f1")
    )  # fmt: skip
    assert {r["n"] for r in tests} == {"2"}
    markdown = (output / "summary.md").read_text()
    for backbone in backbones.split(","):
        assert f"## digits/{backbone}\n" in markdown
    assert "Friedman test on test acc over 2 tables (across tables)" in markdown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbones", "resnet35"], "unknown backbone 'resnet35' (did you mean resnet50?)"),
        (
            ["--backbones", "resnet18", "--model.backbone", "resnet34"],
            "--model.backbone is set per",
        ),
    ],
)
def test_bad_backbone_axes_are_one_line_and_write_nothing(
    args: list[str], message: str, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    done = run_main("benchmark", "--config", DIGITS_CONFIG, "--output", str(output), *args)
    assert done.code == 2 and done.err.count("\n") == 1 and message in done.err, done.err
    assert not output.exists()


@pytest.mark.slow
def test_a_grid_prints_one_line_per_cell_and_each_fit_prints_into_its_log(tmp_path: Path) -> None:
    output = tmp_path / "out"
    command = [sys.executable, "-m", "dsrelu_lightning", "benchmark", "--config", DIGITS_CONFIG]
    command += ["--activations", "relu,dsrelu", "--folds", "0", "--output", str(output)]
    command += [*TINY, "--keep_checkpoints", "none"]
    env = subprocess_env(OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "benchmark", "cell 1/2", "cell 2/2", "cells", "report"
    ]  # fmt: skip
    assert not done.stderr.strip(), done.stderr  # warnings, the srun hint: in the cells' logs
    for label in ("relu", "dsrelu"):
        log = (output / "digits" / label / "seed42" / "fold0" / "cell.log").read_text()
        assert "samples per class" in log and "Network tiny_nets.SmallCNN" in log, log
