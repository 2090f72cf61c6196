"""Validation accuracy of each cell's best checkpoint: BatchNorm running stats vs batch stats.

Run from the repository root after the digits grid (see README.md in this folder):

    OMP_NUM_THREADS=1 python docs/results/digits/check_batchnorm.py runs/digits_grid

"eval BN" is the model as validated (``model.eval()``: BatchNorm uses its running
statistics); "batch BN" normalises the whole validation fold with its own statistics
(a copy in train mode, no gradient, nothing saved). A large gap means the weights
classify well but the running statistics do not fit them.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from dsrelu_lightning import ResNetClassifier
from dsrelu_lightning.data import DigitsDataModule


def val_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def main(output: Path, labels: tuple[str, ...] = ("relu", "sigmoid", "dsrelu")) -> None:
    print("| Label | Fold | Best epoch | Val acc, eval BN | Val acc, batch BN |")
    print("|---|---|---|---|---|")
    for label in labels:
        for cell in sorted((output / "digits" / label).glob("fold*")):
            result = json.loads((cell / "result.json").read_text())
            checkpoint = cell / "checkpoints" / result["best_checkpoint"]
            model = ResNetClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
            data = DigitsDataModule(fold_index=result["fold"])
            data.setup("fit")
            images, targets = map(torch.stack, zip(*data.val_dataset, strict=True))
            batch_stats = copy.deepcopy(model).train()
            print(
                f"| {label} | {result['fold']} | {result['best_epoch']} "
                f"| {val_accuracy(model, images, targets):.4f} "
                f"| {val_accuracy(batch_stats, images, targets):.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
