"""Users' own DSReLU slope schedules, given by import path (``user_schedules.halfway``):
one that works and the broken kinds the schedule check refuses."""

from __future__ import annotations

import torch
from torch import Tensor


def halfway(t: Tensor, initial_slope: float, final_slope: float, steepness: float) -> Tensor:
    """Square-root decay from ``a`` to the midpoint of ``a`` and ``b``."""
    return initial_slope + (final_slope - initial_slope) / 2 * torch.sqrt(t)


def negative(t: Tensor, initial_slope: float, final_slope: float, steepness: float) -> Tensor:
    """Negative until t = 0.5."""
    return (t - 0.5) * initial_slope


def nan_at_the_end(t: Tensor, initial_slope: float, final_slope: float, steepness: float) -> Tensor:
    """NaN at t = 1 (0/0)."""
    return initial_slope * t / (1 - t) * (1 - t) + final_slope


def one_argument(t: Tensor) -> Tensor:
    """The wrong signature: the schedule is called with four arguments."""
    return 1 + t


not_a_function = 3.0
