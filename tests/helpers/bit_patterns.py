"""Bitwise tensor comparison: ``==`` and ``assert_close`` treat -0.0 and 0.0 as equal."""

from __future__ import annotations

import torch

SPECIAL_VALUES = [0.0, -0.0, float("inf"), float("-inf"), 1e-40, -1e-40, 1e-30, -3.0, 2.5]
"""Signed zeros, infinities, float32/bfloat16 subnormals, tiny and ordinary values."""


def assert_same_bits(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Fail unless ``got`` and ``expected`` hold the same bit patterns, NaNs apart (those
    need only sit at the same places: a NaN's payload is unspecified)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan), "NaNs at different places"
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[got.element_size()]
    a, b = got[~nan].view(bits), expected[~nan].view(bits)
    differ = (a != b).nonzero().flatten()
    assert differ.numel() == 0, (
        f"{differ.numel()} elements differ in their bits, e.g. {got[~nan][differ[:4]].tolist()} "
        f"instead of {expected[~nan][differ[:4]].tolist()}"
    )
