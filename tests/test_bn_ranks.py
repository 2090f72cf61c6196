"""Precise BN's eval-consistent recalibration across ranks: two real gloo processes, one of
them without any batch, take part in the same collectives and end with the same buffers."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from dsrelu_lightning.training.bn_stats import recalibrate_eval_consistent

_WAIT_S = 90.0


def _network() -> nn.Module:
    torch.manual_seed(0)  # the same weights on every rank
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3)
    )


def _batches(rank: int, count: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(10 + rank)
    return [torch.randn(6, 1, 8, 8, generator=generator) * (rank + 2) + rank for _ in range(count)]


def _all_reduce_sum(value: Tensor) -> Tensor:
    value = value.clone()
    dist.all_reduce(value)
    return value


def _rank(rank: int, port: int, out: str, cases: dict[str, tuple[int, int]]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=timedelta(seconds=30),
    )  # fmt: skip
    try:
        for case, counts in cases.items():
            network = _network()
            used = recalibrate_eval_consistent(
                network, _batches(rank, counts[rank]), sum_across_ranks=_all_reduce_sum
            )
            torch.save(
                {"used": used, "state": network.state_dict()}, Path(out) / f"{case}{rank}.pt"
            )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ranks_with_and_without_batches_agree_and_hold_the_pooled_statistics(
    tmp_path: Path,
) -> None:
    cases = {"both": (2, 3), "one_empty": (3, 0), "none": (0, 0)}
    context = mp.spawn(_rank, (_free_port(), str(tmp_path), cases), nprocs=2, join=False)
    deadline = time.monotonic() + _WAIT_S
    try:  # join returns when one process ends: wait for both, re-raising a rank's failure
        while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):
            assert time.monotonic() < deadline, f"the ranks did not finish in {_WAIT_S:.0f} s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    for case, (first, second) in cases.items():
        ranks = [torch.load(tmp_path / f"{case}{r}.pt") for r in (0, 1)]
        assert [r["used"] for r in ranks] == [first, second]
        # What one process holds after recalibrating on every rank's batches.
        alone = _network()
        recalibrate_eval_consistent(alone, _batches(0, first) + _batches(1, second))
        for name, expected in alone.state_dict().items():
            for held in ranks:
                torch.testing.assert_close(held["state"][name], expected, msg=f"{case}: {name}")
    untouched = _network().state_dict()
    for name, value in torch.load(tmp_path / "none0.pt")["state"].items():
        assert torch.equal(value, untouched[name])  # nobody had work: nothing changed
