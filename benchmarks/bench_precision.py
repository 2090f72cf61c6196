"""Target 5: bf16 mixed precision with DSReLU; metrics stay float32.

    python benchmarks/bench_precision.py [--repeats 10] [--threads N]

1. A Lightning fit (``precision="bf16-mixed"``, digits, 2 epochs of 4 batches, with
   ``SlopeScheduler``): the dtypes DSReLU ran in, and every logged metric's dtype and
   value (they must be float32 and finite).
2. The bf16 training step (autocast) with DSReLU vs ReLU, and the bf16 DSReLU
   forward+backward vs ``F.leaky_relu`` on a 64x64x32x32 bf16 tensor, timed round-robin.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from bench_step import WORKLOADS, training_step
from profiling import interleaved_timings, machine_description, ratio_summary

from dsrelu_lightning import DSReLU, ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule


def fit_check() -> bool:
    module = ResNetClassifier(10, "dsrelu", in_channels=1, stem="cifar")
    seen: set[torch.dtype] = set()
    for layer in module.modules():
        if isinstance(layer, DSReLU):
            layer.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu",
            precision="bf16-mixed",
            max_epochs=2,
            limit_train_batches=4,
            limit_val_batches=2,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
            callbacks=[SlopeScheduler()],
        )
        trainer.fit(module, DigitsDataModule(batch_size=64))
    metrics = dict(sorted(trainer.callback_metrics.items()))
    ok = seen == {torch.bfloat16} and all(
        v.dtype == torch.float32 and bool(torch.isfinite(v)) for v in metrics.values()
    )
    print(f"bf16-mixed fit: DSReLU ran in {sorted(str(d) for d in seen)}")
    for name, value in metrics.items():
        print(f"    {name}: {value.dtype} {float(value):.4f}")
    print(f"  target: works and every metric float32 and finite: {ok}")
    return ok


def _autocast(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    return run


def timing(repeats: int) -> None:
    workload = WORKLOADS["digits"]
    device = torch.device("cpu")
    steps = {act: _autocast(training_step(act, workload, device)[0]) for act in ("relu", "dsrelu")}
    times = interleaved_timings(steps, repeats, warmup=2)
    print(f"bf16 digits step, DSReLU / ReLU: {ratio_summary(times, 'dsrelu', 'relu')}")

    x = torch.randn(64, 64, 32, 32, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)
    dsrelu = DSReLU()
    dsrelu.set_progress(0.3)

    def op(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            x.grad = None
            fn(x).backward(grad)

        return run

    ops = {"leaky_relu": op(lambda t: F.leaky_relu(t, 0.01)), "dsrelu": op(dsrelu)}
    times = interleaved_timings(ops, repeats * 4, warmup=2)
    print(f"bf16 op fwd+bwd, DSReLU / leaky_relu: {ratio_summary(times, 'dsrelu', 'leaky_relu')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="0: skip the timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}")
    ok = fit_check()
    if args.repeats:
        timing(args.repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
