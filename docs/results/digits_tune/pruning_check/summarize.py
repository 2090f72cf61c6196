"""Write pruned_trials.md: each label's pruned trials, where the pruner stopped them, and the
best val/loss their configurations reached when run to the end (the grids' finished cells).
    python docs/results/digits_tune/pruning_check/summarize.py
"""

import csv
from pathlib import Path

import optuna

from dsrelu_lightning.atomic import atomic_write_text

HERE = Path(__file__).parent
CELLS = HERE / "digits" / "resnet18"
STORAGE = f"sqlite:///{HERE.parent / 'study.db'}"
DSRELU_ARGS = ("initial_angle", "final_angle", "steepness", "schedule")
FORMATS = {"initial_angle": ".1f", "final_angle": ".1f", "steepness": ".2f"}


def best_val_loss(cell: str) -> tuple[float, int] | None:
    """The finished cell's lowest val/loss and its epoch (None while it has not finished)."""
    folder = CELLS / cell / "seed42" / "fold0"
    if not (folder / "result.json").is_file():
        return None
    rows = [r for r in csv.DictReader((folder / "epoch_metrics.csv").open()) if r.get("val/loss")]
    best = min(rows, key=lambda r: float(r["val/loss"]))
    return float(best["val/loss"]), int(best["epoch"])


def section(label: str) -> list[str]:
    study = optuna.load_study(study_name=label, storage=STORAGE)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    shown = [a for a in DSRELU_ARGS if label == "dsrelu"]
    rows, checked, beaten = [], 0, 0
    key = (lambda t: -t.params["initial_angle"]) if shown else (lambda t: t.number)
    for trial in sorted(pruned, key=key):
        prefix = "" if label == "dsrelu" else f"{label}_"
        full = best_val_loss(f"{prefix}trial_{trial.number:04d}")
        if full is None:
            continue
        checked += 1
        beaten += full[0] < study.best_value
        p = trial.params
        rows.append(
            f"| {trial.number} | "
            + "".join(f"{p[a]:{FORMATS.get(a, '')}} | " for a in shown)
            + f"{p['model.lr']:.2e} | {max(trial.intermediate_values)} | "
            f"{min(trial.intermediate_values.values()):.4f} | {full[0]:.4f} (epoch {full[1]}) | "
            f"{'**yes**' if full[0] < study.best_value else 'no'} |"
        )
    columns = [*shown, "lr", "pruned after epoch", "best val/loss when pruned"]
    columns += ["best val/loss run to the end", "beats the best?"]
    return [
        f"## {label}",
        "",
        f"The search's best {label} trial ({study.best_trial.number}) reached val/loss "
        f"{study.best_value:.4f}. Of its {len(pruned)} pruned trials, {checked} were run to the "
        f"end (15 epochs, same fold and seed); {beaten} of those would have beaten it.",
        "",
        "| trial | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *rows,
        "",
    ]


optuna.logging.set_verbosity(optuna.logging.ERROR)
paper = best_val_loss("paper_at_tuned_lr")
tuned_lr = optuna.load_study(study_name="dsrelu", storage=STORAGE).best_params["model.lr"]
lines = [
    "# Pruned trials, run to the end",
    "",
    "Each pruned trial's configuration, run for all of its 15 epochs on the search's fold (0)",
    "and seed (42): grid.yaml (DSReLU) and grid_baselines.yaml (ReLU, Mish).",
    "",
    *section("dsrelu"),
    f"The paper's DSReLU setting (85 -> 10 deg, k = 5) at the tuned lr {tuned_lr:.2e}: "
    + (f"{paper[0]:.4f} (epoch {paper[1]})." if paper else "not run yet."),
    "",
    *section("relu"),
    *section("mish"),
]
print(atomic_write_text(HERE / "pruned_trials.md", "\n".join(lines)))
