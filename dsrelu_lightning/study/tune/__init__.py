"""``python -m dsrelu_lightning tune``: an activation's parameters searched with Optuna, every
compared activation with the same budget, scored on validation folds only (docs/tuning.md)."""
