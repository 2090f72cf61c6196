"""tune on a real PostgreSQL server, started from the Debian packages' binaries in a scratch
folder (unix socket only); skipped where PostgreSQL or psycopg2 is not installed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import DIGITS_CONFIG, run_main, tiny_args

pytest.importorskip("psycopg2", reason="psycopg2 (PostgreSQL's driver) is not installed")


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_server_user(*command: str) -> list[str]:
    # The server refuses to run as root: Debian's package made a postgres user for it.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    bin_dir = _bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser to start the server as postgres")
    folder = Path(tempfile.mkdtemp(prefix="dsrelu-pg-"))  # not under root's private tmp_path
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    ctl = str(bin_dir / "pg_ctl")
    subprocess.run(
        _as_server_user(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tune"),
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-k {folder} -c listen_addresses=''"
    start = [ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
    subprocess.run(_as_server_user(*start), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://tune@/postgres?host={folder}"
    finally:
        stop = _as_server_user(ctl, "-D", str(data), "-m", "immediate", "stop")
        subprocess.run(stop, check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_search_on_postgresql_runs_its_trials_and_reports(
    postgres_url: str, tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("model.lr: {float: [1.0e-4, 1.0e-2], log: true}\n")
    out = tmp_path / "out"
    run_main(
        "tune", "--config", DIGITS_CONFIG, "--space", str(space), "--trials", "2",
        "--output", str(out), "--storage", postgres_url, "--pruner", "none",
        *tiny_args(), "--precise_bn.enabled", "false",
    ).ok()  # fmt: skip
    trials = optuna.load_study(study_name="dsrelu", storage=postgres_url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert not (out / "study.db").exists()  # the server holds the study
    run_main("tune", "--report", str(out), "--storage", postgres_url).ok()
    assert "| dsrelu | 2 | 2 |" in (out / "tune.md").read_text()
