"""Grid cells run in processes of their own: what one cell leaves in its process (warning
registries, dynamo's caches, DSReLU's kernels) never reaches the next, and the grid still
gets each cell's answer, notes and exceptions."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import DIGITS_CONFIG, run_main, tiny_args

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.run import cell as cell_module
from dsrelu_lightning.study.run.isolated import IN_PROCESS_ENV, ChildTraceback, call_isolated

ONCE_PER_PROCESS = "is smaller than the logging interval"
"""Lightning's warning about a short epoch: Python shows it once per process."""


def test_each_cell_of_a_grid_starts_from_a_fresh_process(tmp_path: Path) -> None:
    command = ["benchmark", "--config", DIGITS_CONFIG, "--activations", "relu"]
    command += ["--folds", "0,1", "--output", str(tmp_path), *tiny_args(max_epochs=1)]
    log = run_main(*command).ok()
    assert "cell 2/2: digits/relu/seed 42/fold 1: finished" in log
    for fold in (0, 1):  # in one shared process the second cell would not show it again
        text = (tmp_path / "digits" / "relu" / "seed42" / f"fold{fold}" / "cell.log").read_text()
        assert ONCE_PER_PROCESS in text, f"fold {fold}"


def _answer(value: int, *, say: object) -> tuple[int, int]:
    say(f"note {value}")  # type: ignore[operator]
    return value * 2, os.getpid()


def _refuse(message: str, *, say: object) -> None:
    raise ConfigurationError(message)


def _die(*, say: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_call_answers_from_another_process_with_its_notes() -> None:
    notes: list[str] = []
    value, pid = call_isolated(_answer, 21, say=notes.append)
    assert value == 42 and notes == ["note 21"] and pid != os.getpid()


def test_its_exception_is_raised_here_with_the_childs_traceback() -> None:
    with pytest.raises(ConfigurationError, match="^bad setting$") as raised:
        call_isolated(_refuse, "bad setting", say=print)
    cause = raised.value.__cause__
    assert isinstance(cause, ChildTraceback) and "_refuse" in str(cause)


def test_a_process_that_dies_without_answering_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"ended without an answer \(exit code -9\)"):
        call_isolated(_die, say=print)


def test_in_process_mode_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    assert call_isolated(_answer, 1, say=lambda _: None) == (2, os.getpid())


def _environment_and_wrapped_error(name: str, *, say: object) -> None:
    try:
        raise ConfigurationError(f"{name}={os.environ.get(name)}")
    except ConfigurationError as error:
        raise RuntimeError("a framework wrapped it") from error


def test_the_child_has_the_callers_environment_and_its_user_error_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call_isolated(_answer, 0, say=lambda _: None)  # the server runs before the variable is set
    monkeypatch.setenv("DSRELU_TEST_SETTING", "set after the server started")
    # Pickling drops the chain: the wrapped user error comes back as itself, its one line kept.
    with pytest.raises(ConfigurationError, match="^DSRELU_TEST_SETTING=set after the server"):
        call_isolated(_environment_and_wrapped_error, "DSRELU_TEST_SETTING", say=print)


def test_a_cell_process_takes_the_grids_torch_settings() -> None:
    before = cell_module._torch_settings()
    settings = (1, "medium", True, "fused")
    cell_module._apply_torch_settings(settings)  # what the cell's process runs first
    try:
        assert cell_module._torch_settings() == settings
    finally:
        cell_module._apply_torch_settings(before)
