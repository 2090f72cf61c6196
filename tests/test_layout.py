"""The package's layers import one way only, and running and reporting stay independent
(pyproject.toml's import-linter contracts)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_import_contracts_hold() -> None:
    # import-linter comes with the test extra; its CLI reads the contracts from pyproject.toml.
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    result = subprocess.run(
        [*command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
