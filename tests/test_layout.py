"""The package's shape: import-linter's contracts hold (layers, independence, no circles), no
module is over 350 lines, the public import paths work and importing a package imports no torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import ROOT, subprocess_env

from dsrelu_lightning.lazy_exports import lazy_exports

PACKAGE = ROOT / "dsrelu_lightning"
LINE_LIMIT = 350
LAZY_PACKAGES = (
    "dsrelu_lightning",
    "dsrelu_lightning.data",
    "dsrelu_lightning.nn",
    "dsrelu_lightning.training",
)


def test_import_contracts_hold() -> None:
    # import-linter's CLI (lint-imports) reads the contracts from pyproject.toml; exit 0 = all kept.
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT)}  # this clone's package, not an install
    done = subprocess.run(
        [*command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contracts_include_layers_independence_and_no_circles() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} == {"layers", "independence", "acyclic_siblings"}
    acyclic = next(c for c in contracts if c["type"] == "acyclic_siblings")
    assert acyclic["ancestors"] == ["dsrelu_lightning"]  # every package, at any depth


def test_no_module_is_over_350_lines() -> None:
    lengths = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    over = {name: n for name, n in lengths.items() if n > LINE_LIMIT}
    assert not over, f"over {LINE_LIMIT} lines: {over}; split them by concern"


def test_design_public_import_paths_work() -> None:
    # /work/shared/DESIGN.md, "Public API": these lines must keep working.
    from dsrelu_lightning import (
        ACTIVATIONS,
        Classifier,
        DSReLU,
        ResNetClassifier,
        SlopeScheduler,
        build_activation,
        dsrelu_slope,
        replace_activations,
    )
    from dsrelu_lightning.data import (
        CIFAR100DataModule,
        DigitsDataModule,
        MiniImageNetDataModule,
        MITBIHDataModule,
    )
    from dsrelu_lightning.nn import activations, replace
    from dsrelu_lightning.training import module, slope_scheduler

    assert isinstance(build_activation("dsrelu"), DSReLU) and "dsrelu" in ACTIVATIONS
    assert (DSReLU, dsrelu_slope) == (activations.DSReLU, activations.dsrelu_slope)
    assert replace_activations is replace.replace_activations
    assert (Classifier, ResNetClassifier) == (module.Classifier, module.ResNetClassifier)
    assert SlopeScheduler is slope_scheduler.SlopeScheduler
    datamodules = (CIFAR100DataModule, DigitsDataModule, MiniImageNetDataModule, MITBIHDataModule)
    assert all(issubclass(dm, pl.LightningDataModule) for dm in datamodules)
    assert issubclass(DSReLU, torch.nn.Module)


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_every_lazy_export_resolves(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__all__ and dir(package) == sorted(package.__all__)
    for export in package.__all__:
        value = getattr(package, export)
        assert getattr(value, "__name__", export) == export  # no alias under another name
    with pytest.raises(AttributeError, match="has no attribute 'not_exported'"):
        package.not_exported  # noqa: B018


def test_lazy_exports_reject_anything_but_absolute_from_imports(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import x\n")
    with pytest.raises(ImportError, match="only absolute"):
        lazy_exports("somewhere", str(init))
    init.write_text("x = 1\n")
    with pytest.raises(ImportError, match="one `if TYPE_CHECKING:` block"):
        lazy_exports("somewhere", str(init))


_WITHOUT_TORCH = """
import importlib, runpy, sys
for name in {packages!r}:
    importlib.import_module(name)
sys.argv = ["dsrelu_lightning", "--help"]
runpy.run_module("dsrelu_lightning", run_name="__main__", alter_sys=True)
print(sorted(m for m in ("torch", "lightning") if m in sys.modules))
"""


def test_packages_and_top_level_help_import_no_torch() -> None:
    # `python -m dsrelu_lightning --help` as runpy runs it, after importing every lazy package.
    code = _WITHOUT_TORCH.format(packages=LAZY_PACKAGES)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m dsrelu_lightning")
    assert done.stdout.strip().splitlines()[-1] == "[]"
