"""MobileNetV3-small on one digits batch at initialisation, ReLU against DSReLU at its first
slope (10.6) on all sites, on the ReLU sites only, on the Hardswish sites only, and ResNet-34
for comparison: the loss, the logits' spread, the share of squeeze-excitation gate inputs in
Hardsigmoid's flat region (|z| >= 3, zero gradient) and the gradient norm. Run from the
repository's root:

    OMP_NUM_THREADS=1 python docs/results/digits_networks/dsrelu_at_init.py
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from dsrelu_lightning import Classifier
from dsrelu_lightning.data import DigitsDataModule

CASES = (
    ("mobilenet_v3_small", "relu", None),
    ("mobilenet_v3_small", "dsrelu", None),
    ("mobilenet_v3_small", "dsrelu", ["ReLU"]),
    ("mobilenet_v3_small", "dsrelu", ["Hardswish"]),
    ("resnet34", "relu", None),
    ("resnet34", "dsrelu", None),
)


def main() -> None:
    warnings.filterwarnings("ignore", message="DSReLU is training but nothing advances")
    torch.manual_seed(0)
    data = DigitsDataModule(fold_index=0, seed=42, batch_size=64)
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    for backbone, activation, targets in CASES:
        torch.manual_seed(0)
        model = Classifier(
            10, backbone, activation=activation, in_channels=1, stem="cifar",
            activation_targets=targets,
        ).model.train()  # fmt: skip
        gates: list[torch.Tensor] = []
        for module in model.modules():
            if isinstance(module, nn.Hardsigmoid):
                module.register_forward_pre_hook(lambda _, args, seen=gates: seen.append(args[0]))
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        gate_inputs = torch.cat([g.flatten() for g in gates]) if gates else None
        flat = "-" if gate_inputs is None else f"{(gate_inputs.abs() >= 3).float().mean():.3f}"
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        print(
            f"{backbone}, {activation} on {targets or 'every site'}: loss {loss.item():.2f}, "
            f"logits std {logits.std().item():.2f}, SE gate inputs with |z| >= 3: {flat}, "
            f"gradient norm {grad.norm().item():.3g}"
        )


if __name__ == "__main__":
    main()
