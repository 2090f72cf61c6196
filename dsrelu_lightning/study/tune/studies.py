"""The Optuna studies of a search, one per label in one storage, with its sampler and pruner.

A study remembers the settings it was started with; a rerun with other settings (another
objective, space, config or folds) is refused rather than mixing incomparable trials.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.distributions import distribution_to_json

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.tune.setup import OBJECTIVES, TuneSetup
from dsrelu_lightning.study.tune.storage import open_storage

__all__ = ["SETTINGS_ATTR", "make_pruner", "open_studies"]

SETTINGS_ATTR = "tune_settings"
"""The study's user attribute holding the settings it was started with."""


def make_pruner(name: str, max_epochs: int, startup: int, warmup: int) -> optuna.pruners.BasePruner:
    """The pruner of the per-epoch objective; Hyperband's largest budget is ``max_epochs``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1))
    return optuna.pruners.NopPruner()


def _settings(checked: TuneSetup, label_index: int) -> dict[str, Any]:
    setup, label = checked.setup, checked.labels[label_index]
    return {
        "config": str(setup.config),
        "overrides": list(setup.overrides),
        "objective": setup.objective,
        "folds": list(setup.folds),
        "activation": label.activation,
        "space": {p.key: json.loads(distribution_to_json(p.distribution)) for p in label.params},
    }


def open_studies(checked: TuneSetup, args: Any) -> list[optuna.Study]:
    """Each label's study (created, or continued when its settings match)."""
    output = checked.setup.output
    if args.storage is not None:
        storage = open_storage(args.storage, output, args.heartbeat)  # bad storage: nothing written
        output.mkdir(parents=True, exist_ok=True)
    else:
        output.mkdir(parents=True, exist_ok=True)
        storage = open_storage(None, output, args.heartbeat)
    worker = args.worker_index or 0
    studies = []
    for index, label in enumerate(checked.labels):
        pruner = make_pruner(
            args.pruner, checked.max_epochs, args.pruner_startup_trials, args.pruner_warmup_epochs
        )
        study = optuna.create_study(
            storage=storage,
            study_name=label.name,
            direction=OBJECTIVES[checked.setup.objective],
            pruner=pruner,
            load_if_exists=True,
        )
        existing = len(study.get_trials(deepcopy=False))
        seed = hash((args.sampler_seed, worker, existing)) % 2**31
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        settings = _settings(checked, index)
        saved = study.user_attrs.get(SETTINGS_ATTR)
        if saved is None:
            study.set_user_attr(SETTINGS_ATTR, settings)
        elif saved != settings:
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ConfigurationError(
                f"the {label.name} study in {args.storage or output} was started with other "
                f"settings ({', '.join(changed)} changed): rerun with the original arguments, "
                "or use another --output (or --storage)"
            )
        studies.append(study)
    return studies
