"""Write release_0_1_resnet34.ckpt.gz: a checkpoint as the first release (commit 3c3bfcf, the
flat ResNet-34 with ActivatedBasicBlock's act1/act2) wrote it, for the compatibility test.

Run from a checkout of that commit:
    PYTHONPATH=<checkout of 3c3bfcf> python tests/data/make_release_checkpoint.py OUT.ckpt.gz

A real CLI fit (2 tiny epochs) writes last.ckpt; its weights and Adam moments are then zeroed
(so that the file compresses to a few kB) and the i-th DSReLU in forward order gets progress
i / 100, so a loader that puts a site's state in the wrong module is caught.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from dsrelu_lightning.__main__ import main


def forward_order_dsrelus(state: dict) -> list[str]:
    blocks = sorted(
        {k.rsplit(".act", 1)[0] for k in state if ".act1." in k},
        key=lambda k: tuple(
            int(p) if p.isdigit() else p for p in k.replace("layer", "").split(".")
        ),
    )
    return ["model.relu.progress"] + [f"{b}.act{i}.progress" for b in blocks for i in (1, 2)]


if __name__ == "__main__":
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as root:
        config = Path(__file__).resolve().parents[2] / "configs" / "digits.yaml"
        args = ["fit", "--config", str(config), f"--trainer.default_root_dir={root}"]
        args += ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2"]
        args += ["--trainer.limit_val_batches=1", "--data.init_args.batch_size=16"]
        args += ["--trainer.enable_progress_bar=false", "--precise_bn.enabled=false"]
        main(args)
        (last,) = Path(root).glob("**/last.ckpt")
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    for key, value in state.items():
        if value.is_floating_point() and not key.endswith("progress"):
            value.zero_()
    for index, key in enumerate(forward_order_dsrelus(state)):
        state[key].fill_(index / 100)
    for per_parameter in checkpoint["optimizer_states"][0]["state"].values():
        for value in per_parameter.values():
            if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
                value.zero_()
    with tempfile.NamedTemporaryFile(suffix=".ckpt") as raw:
        torch.save(checkpoint, raw.name)
        with open(raw.name, "rb") as source, gzip.open(out, "wb", compresslevel=9) as target:
            shutil.copyfileobj(source, target)
    print(f"{out}: {out.stat().st_size} bytes, {len(state)} tensors")
