"""Where a tuning study lives: SQLite in its folder by default, Optuna's journal file on a
shared file system, or any RDB URL (PostgreSQL, MySQL) given by ``--storage``."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend

from dsrelu_lightning.errors import ConfigurationError

__all__ = ["DEFAULT_DB", "MAX_RETRY", "default_url", "open_storage", "retry_dead_trial"]

DEFAULT_DB = "study.db"
"""The default storage: an SQLite file in the tuning folder."""

MAX_RETRY = 2
"""How often a trial whose worker died is rerun before it counts as failed."""

_JOURNAL = ("journal:", ".log", ".journal")


def default_url(output: str | Path) -> str:
    """The SQLite URL of the study file in ``output``."""
    return f"sqlite:///{Path(output).resolve() / DEFAULT_DB}"


def retry_dead_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Rerun a trial whose worker died (same parameters, a new number), up to MAX_RETRY times."""
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def _check_folder(url: str, folder: Path, output: Path) -> None:
    """Refuse a storage file in a missing folder, unless it is the output folder (made here)."""
    if folder.resolve() == output.resolve():
        output.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise ConfigurationError(
            f"--storage {url}: folder {str(folder)!r} does not exist; create it first (or keep "
            "the file in --output)"
        )


def open_storage(url: str | None, output: str | Path, heartbeat_s: int = 30) -> BaseStorage:
    """The storage at ``url`` (default: SQLite in ``output``), checked by connecting to it.

    A journal file (``journal:PATH`` or a path ending in ``.log``/``.journal``) suits a shared
    file system without a database server. RDB storages get a heartbeat: a trial whose worker
    stopped beating for ``3 * heartbeat_s`` is failed and retried (:func:`retry_dead_trial`).
    """
    url = url or default_url(output)
    if url.startswith(_JOURNAL[0]) or url.endswith(_JOURNAL[1:]):
        path = Path(url.removeprefix(_JOURNAL[0]))
        _check_folder(url, path.parent, Path(output))
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigurationError(
            f"--storage {url!r} is neither a database URL (sqlite:///PATH, "
            "postgresql://user@host/db) nor a journal file (journal:PATH or PATH.log)"
        )
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("sqlite:///"):
        _check_folder(url, Path(url.removeprefix("sqlite:///")).parent, Path(output))
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s,
                heartbeat_stale_trial_callback=retry_dead_trial,
            )
    except ImportError as exc:
        raise ConfigurationError(
            f"--storage {url}: its database driver is not installed ({exc}); install it "
            "(e.g. pip install psycopg2-binary for PostgreSQL)"
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: a bad URL, an unreachable server
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"--storage {url}: cannot open it ({reason})") from None
