"""What a grid owns: LightningCLI keys it sets per cell or relies on for selection and
resume, and what a finished cell keeps of its checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.training.selection import SELECTION_METRIC

__all__ = [
    "ACTIVATION_KEYS",
    "BACKBONE_KEYS",
    "CELL_KEYS",
    "KEEP_CHECKPOINTS",
    "SELECTION",
    "SELECTION_RULE",
    "TRAIN_FRACTION_KEYS",
    "KeepCheckpoints",
    "check_override_key",
]

KeepCheckpoints = Literal["best", "all", "none"]
"""What a finished cell keeps: its best checkpoint, also last.ckpt (only a resume needs
it), or none (a ResNet-34 checkpoint with Adam's moments is about 250 MB)."""
KEEP_CHECKPOINTS: tuple[str, ...] = get_args(KeepCheckpoints)

CELL_KEYS = (
    "data.fold_index",
    "data.init_args.fold_index",
    "data.seed",
    "data.init_args.seed",
    "seed_everything",
    "trainer.default_root_dir",
    "trainer.logger",
    "checkpoint.dirpath",
)
"""Keys the grid sets for every cell; an override of them would be silently replaced."""

ACTIVATION_KEYS = ("model.activation", "model.activation_args")
"""Keys a labelled variant sets (from its ``activation`` and ``activation_args``)."""

BACKBONE_KEYS = ("model.backbone",)
"""The key a grid with backbones (``--backbones``) sets per cell."""

TRAIN_FRACTION_KEYS = ("data.train_fraction", "data.init_args.train_fraction")
"""The keys a grid with training fractions (``--train_fractions``) sets per cell."""

SELECTION = {
    "checkpoint.monitor": SELECTION_METRIC,
    "checkpoint.mode": "min",
    "checkpoint.save_top_k": 1,
    "checkpoint.save_last": True,
    "early_stopping.monitor": SELECTION_METRIC,
}
"""Selection, the tested checkpoint and resuming rely on these values."""

SELECTION_RULE = (
    "benchmark cells report and test the checkpoint of their lowest val/loss and resume from "
    "last.ckpt, so checkpoint and early stopping must stay on val/loss (checkpoint mode min, "
    "save_top_k 1, save_last true)"
)


def check_override_key(
    key: str, grid_keys: Sequence[str], where: str = "", whole_sections: bool = False
) -> None:
    """Refuse an override of a key the grid sets per cell or the model selection needs.

    ``where`` prefixes the message (e.g. the variant); ``whole_sections`` also refuses a
    section holding such a key (``trainer``, ``checkpoint``), whose value would replace it.
    """
    prefix = f"{where} " if where else ""
    for reserved in (*grid_keys, *SELECTION):
        if not (
            key == reserved
            or key.startswith(reserved + ".")
            or (whole_sections and reserved.startswith(key + "."))
        ):
            continue
        if reserved.startswith(key + "."):
            raise ConfigurationError(
                f"{prefix}--{key} is a whole section holding --{reserved}, which the grid "
                f"fixes; give dotted keys such as {key}.<name>"
            )
        if reserved in SELECTION:
            raise ConfigurationError(f"{prefix}--{key} cannot be overridden: {SELECTION_RULE}")
        if reserved in ACTIVATION_KEYS and where:
            raise ConfigurationError(
                f"{prefix}--{key} is the variant's own: set 'activation' and 'activation_args'"
            )
        raise ConfigurationError(
            f"{prefix}--{key} is set per cell by the grid and cannot be overridden: "
            "choose activations with --activations or a --grid file's variants, networks "
            "with --backbones, training fractions with --train_fractions, seeds with "
            "--seeds, folds with --folds and the output folder "
            "with --output"
        )
