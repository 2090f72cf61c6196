"""The walkthrough notebook runs top to bottom (so it never goes stale)."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "dsrelu_walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRELU_WALKTHROUGH_OUTPUT", str(tmp_path / "walkthrough"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: fast on busy cores
    monkeypatch.setenv("DSRELU_WALKTHROUGH_QUICK", "1")  # one batch of 16 per stage
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    summary = list(csv.DictReader((tmp_path / "walkthrough" / "summary.csv").open()))
    assert sorted((r["label"], r["fold"]) for r in summary) == [
        ("dsrelu", "0"),
        ("dsrelu", "1"),
        ("relu", "0"),
        ("relu", "1"),
    ]
    text = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "relu fold 0: test acc" in text
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 3  # slope schedule, test-acc bars, the report's curves
