"""Measurement helpers for the performance benchmarks (timing, saved bytes, the allocator).

Timings on a shared machine drift, so candidates are timed interleaved (round-robin,
order alternating each round) and compared as per-round ratios to a baseline timed
in the same round: :func:`interleaved_timings` then :func:`ratio_summary`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "RatioSummary",
    "interleaved_timings",
    "machine_description",
    "minor_page_faults",
    "ratio_summary",
    "saved_tensor_bytes",
    "steady_malloc",
]


def saved_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Bytes of the tensors autograd saves for backward while running ``fn(*args)``.

    Counted with :func:`torch.autograd.graph.saved_tensors_hooks`; a tensor saved
    twice (same storage) counts once.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(*args, **kwargs)
    return sum(storages.values())


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved_timings(
    candidates: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each candidate over ``repeats`` rounds, timed round-robin.

    Each round runs every candidate once, in forward order on even rounds and reverse
    order on odd rounds, so drift and cache effects hit all candidates alike. CUDA
    work is synchronised before each clock read. ``warmup`` untimed rounds go first.
    A candidate returning a float reports its own seconds (e.g. one epoch timed inside
    a call that also sets up a Trainer); otherwise the wall time of the call counts.
    """
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            _synchronize()
            start = time.perf_counter()
            reported = candidates[name]()
            _synchronize()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(reported if isinstance(reported, float) else elapsed)
    return times


@dataclass(frozen=True)
class RatioSummary:
    """Per-round ``candidate / baseline`` time ratios: median, min and max."""

    median: float
    minimum: float
    maximum: float
    rounds: int
    baseline_median_s: float
    candidate_median_s: float

    def __str__(self) -> str:
        return (
            f"{self.median:.3f}x (min {self.minimum:.3f}, max {self.maximum:.3f}, "
            f"{self.rounds} rounds; medians {self.candidate_median_s * 1e3:.2f} ms vs "
            f"{self.baseline_median_s * 1e3:.2f} ms)"
        )


def ratio_summary(times: Mapping[str, list[float]], candidate: str, baseline: str) -> RatioSummary:
    """Summarise the per-round ratios ``times[candidate][i] / times[baseline][i]``."""
    ratios = [c / b for c, b in zip(times[candidate], times[baseline], strict=True)]
    return RatioSummary(
        median=statistics.median(ratios),
        minimum=min(ratios),
        maximum=max(ratios),
        rounds=len(ratios),
        baseline_median_s=statistics.median(times[baseline]),
        candidate_median_s=statistics.median(times[candidate]),
    )


def machine_description() -> str:
    """One line: CPU model and cores, torch threads, GPU (if any), torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load " + " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}{load}; "
        f"{gpu}; torch {torch.__version__}, Python {platform.python_version()}"
    )


def minor_page_faults() -> int:
    """Minor page faults of this process so far (pages the kernel had to map on first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def steady_malloc() -> str:
    """Keep freed memory in this process (glibc): the heap is trimmed only once 1 GiB at
    its top is free, and blocks up to 32 MiB (glibc's largest threshold on 64-bit) come
    from the heap, not from one ``mmap`` each.

    By default glibc returns the top of its heap to the system once more than a threshold
    is free there, and serves blocks over another threshold (both adapt at run time) by
    ``mmap``. A training step that frees and reallocates its activations then pays
    thousands of page faults in some steps and none in others, depending on the order of
    earlier allocations: measured 0 to ~8,800 faults per ResNet-18 step, for ReLU as for
    DSReLU, depending on the order the candidates were built in. Benchmarks call this
    once, before any candidate, so every candidate runs on the same steady allocator.
    Returns what it did, for the printout.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows' CDLL(None)
        return "allocator unchanged (no glibc mallopt)"
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    done = [
        *(["mmap only above 32 MiB"] if mmap_ok else []),
        *(["trimming only above 1 GiB free"] if trim_ok else []),
    ]
    if not done:
        return "allocator unchanged (mallopt refused)"
    return "glibc malloc: " + ", ".join(done) + " (steady_malloc)"
