"""Every row of docs/bad_inputs.md: exit 2, one error line, no traceback, nothing damaged."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_CONFIG, ROOT, TinyTrainer

from dsrelu_lightning.__main__ import main

CATALOGUE = ROOT / "docs" / "bad_inputs.md"
ROW = re.compile(r"^\| (\d+) \| (.+?) \| `(.*?)` \| (.+?) \|$")


def catalogue() -> list[tuple[str, str, str]]:
    rows = [ROW.match(line) for line in CATALOGUE.read_text().splitlines()]
    return [(m[2], m[3], m[4]) for m in rows if m]


def test_every_row_of_the_table_is_one_parametrised_case() -> None:
    # A row the pattern fails to match would silently go untested: every table line that
    # starts with a row number must parse, the numbers must run 1, 2, ... without gaps or
    # repeats, and no two rows may test the same arguments.
    numbered = [
        line for line in CATALOGUE.read_text().splitlines() if re.match(r"^\| \d+ \|", line)
    ]
    unparsed = [line for line in numbered if not ROW.match(line)]
    assert not unparsed, unparsed
    numbers = [int(ROW.match(line)[1]) for line in numbered]  # type: ignore[index]
    assert numbers == list(range(1, len(numbers) + 1))
    arguments = [row[1] for row in catalogue()]
    assert len(set(arguments)) == len(arguments) == len(numbered)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def placeholders(tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "out"
    previous_run = out / "lightning_logs" / "version_0"
    (previous_run / "checkpoints").mkdir(parents=True)
    (previous_run / "epoch_metrics.csv").write_text("epoch,step\n0,10\n")
    (previous_run / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n  activation: relu\n")
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 8)
    real = tmp_path / "real.ckpt"
    torch.save({"state_dict": {"w": torch.randn(256, 256)}}, real)
    data = real.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "a_file").write_text("not a folder")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    for name, classes in (("other", 5), ("digits", 10)):
        hparams = {"num_classes": classes, "in_channels": 1, "activation": "relu", "stem": "cifar"}
        torch.save(
            {"state_dict": {}, "pytorch-lightning_version": "2.6.6", "hyper_parameters": hparams},
            tmp_path / f"{name}.ckpt",
        )
    cfg = DIGITS_CONFIG
    return {
        "{fit}": f"fit --config {cfg} --trainer.default_root_dir {out}",
        "{cfg}": cfg,
        "{tmp}": str(tmp_path),
        "{bad_yaml}": str(tmp_path / "bad.yaml"),
        "{garbage_ckpt}": str(tmp_path / "garbage.ckpt"),
        "{truncated_ckpt}": str(tmp_path / "truncated.ckpt"),
        "{a_file}": str(tmp_path / "a_file"),
        "{plain_ckpt}": str(tmp_path / "plain.ckpt"),
        "{other_ckpt}": str(tmp_path / "other.ckpt"),
        "{digits_ckpt}": str(tmp_path / "digits.ckpt"),
        "{out}": str(out),
    }


@pytest.mark.parametrize(("what", "arguments", "message"), catalogue(), ids=lambda v: v[:40])
def test_bad_input(
    what: str,
    arguments: str,
    message: str,
    placeholders: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny: TinyTrainer,
) -> None:
    for key, value in placeholders.items():
        arguments = arguments.replace(key, value)
    args = arguments.split()
    if args and args[0] in ("fit", "validate", "test") and "--config" in args:
        # Right after the config, so that the row's own trainer settings (and output
        # folder: the config's, where the row names none) still win.
        after_config = args.index("--config") + 2
        args[after_config:after_config] = tiny.args(default_root_dir=None)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert error_lines == [err.strip().splitlines()[-1]], err
    assert message.replace("\\|", "|") in error_lines[0], f"{what}: {error_lines[0]}"
    after = _snapshot(tmp_path)
    assert {name: after.get(name) for name in before} == before


@pytest.fixture
def broken_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``mypkg`` on the import path (what PYTHONPATH gives): importing it raises
    ModuleNotFoundError, importing ``mypkg.nets`` an ImportError with its own message."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("import libfoo\n")
    (tmp_path / "mypkg" / "nets.py").write_text(
        'raise ImportError("mypkg.nets needs libbar >= 2")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.partition(".")[0] == "mypkg"]:
        del sys.modules[name]  # others (row 57) need mypkg unimportable


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--data", "mypkg.MyDataModule"],
            "Problem with given class_path 'mypkg.MyDataModule': No module named 'libfoo'",
        ),
        (
            ["--data.class_path", "mypkg.MyDataModule"],
            "Problem with given class_path 'mypkg.MyDataModule': No module named 'libfoo'",
        ),
        (
            ["--data", "mypkg.nets.OtherDataModule"],
            "Problem with given class_path 'mypkg.nets.OtherDataModule': mypkg.nets needs "
            "libbar >= 2",
        ),
        (
            ["--model.backbone", "mypkg.nets.SmallCNN"],
            "cannot import backbone 'mypkg.nets.SmallCNN': mypkg.nets needs libbar >= 2",
        ),
    ],
    ids=["data", "data.class_path", "data-own-message", "backbone"],
)
def test_a_users_module_that_fails_to_import_names_the_cause(
    arguments: list[str],
    message: str,
    broken_package: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "nets" in arguments[1]:  # the package itself imports; its module does not
        (broken_package / "mypkg" / "__init__.py").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DIGITS_CONFIG, *arguments])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and "Expected a path" not in err
    assert err.strip().splitlines() == [err.strip()], err
    assert message in err, err
