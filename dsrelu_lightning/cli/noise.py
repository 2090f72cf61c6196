"""Silence known third-party noise on the command line (never on library import)."""

from __future__ import annotations

import logging
import warnings

__all__ = ["silence_third_party_noise"]

_LOG_NOISE: dict[str, tuple[str, ...]] = {
    # Lightning's advertisement, logged at every Trainer start without a LitLogger.
    "lightning.pytorch.utilities.rank_zero": ("Tip: For seamless cloud logging",),
    # torch's C++-extension helper, asked by the compiler on a machine without CUDA.
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_third_party_noise() -> None:
    """Drop messages that say nothing about the user's run; the project's own stay.

    Lightning's litlogger tip, torch's "No CUDA runtime is found" and the
    ``isinstance(treespec, LeafSpec)`` deprecation that Lightning's own pytree helper
    triggers in torch. Called by the CLI's entry point only; idempotent.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    for name, fragments in _LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
