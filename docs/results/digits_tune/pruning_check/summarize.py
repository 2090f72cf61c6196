"""Write pruned_trials.md: each pruned DSReLU trial, where the pruner stopped it, and the
best val/loss its configuration reached when run to the end (grid.yaml's cells).
    python docs/results/digits_tune/pruning_check/summarize.py
"""

import csv
from pathlib import Path

import optuna

from dsrelu_lightning.atomic import atomic_write_text

HERE = Path(__file__).parent
CELLS = HERE / "digits" / "resnet18"


def best_val_loss(label: str) -> tuple[float, int]:
    """The cell's lowest val/loss and its epoch."""
    path = CELLS / label / "seed42" / "fold0" / "epoch_metrics.csv"
    rows = [r for r in csv.DictReader(path.open()) if r.get("val/loss")]
    best = min(rows, key=lambda r: float(r["val/loss"]))
    return float(best["val/loss"]), int(best["epoch"])


optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="dsrelu", storage=f"sqlite:///{HERE.parent / 'study.db'}")
searched_best = study.best_value
rows, beaten = [], 0
pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
for trial in sorted(pruned, key=lambda t: -t.params["initial_angle"]):
    p = trial.params
    stop = max(trial.intermediate_values)
    full, epoch = best_val_loss(f"trial_{trial.number:04d}")
    beaten += full < searched_best
    rows.append(
        f"| {trial.number} | {p['initial_angle']:.1f} | {p['final_angle']:.1f} | "
        f"{p['steepness']:.2f} | {p['schedule']} | {p['model.lr']:.2e} | {stop} | "
        f"{min(trial.intermediate_values.values()):.4f} | {full:.4f} (epoch {epoch}) | "
        f"{'**yes**' if full < searched_best else 'no'} |"
    )
paper, paper_epoch = best_val_loss("paper_at_tuned_lr")
text = "\n".join(
    [
        "# Pruned DSReLU trials, run to the end",
        "",
        f"The search's best DSReLU trial ({study.best_trial.number}) reached val/loss "
        f"{searched_best:.4f} on fold 0. Each pruned trial's configuration, run for all 15 "
        f"epochs on the same fold and seed: {beaten} of {len(pruned)} would have beaten it. "
        f"The paper's setting (85 -> 10 deg, k = 5) at the tuned learning rate "
        f"{study.best_params['model.lr']:.2e}: {paper:.4f} (epoch {paper_epoch}).",
        "",
        "| trial | initial angle | final angle | steepness | schedule | lr | pruned after epoch | "
        "best val/loss when pruned | best val/loss run to the end | beats the best? |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
)
print(atomic_write_text(HERE / "pruned_trials.md", text))
