"""The grid's progress lines: each cell's duration, the elapsed time, an ETA, the counts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

__all__ = ["OUTCOMES", "Progress"]

OUTCOMES = ("finished", "resumed", "diverged", "skipped", "busy")
"""How a cell of this run ended, in the order of the closing counts."""

_TRAINED = ("finished", "resumed", "diverged")


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class Progress:
    """Counts a shard's cells and estimates the time left from the cells trained so far.

    The ETA is the mean duration of this run's trained cells times the cells still to
    come, so it is an upper bound when some of them turn out finished earlier.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self._now = clock
        self._begin = self._now()
        self._cell_start = self._begin
        self._number = 0
        self._durations: list[float] = []
        self._outcomes: Counter[str] = Counter()

    def start(self, name: str) -> str:
        """Begin the next cell; returns its line's head, ``cell i/N: name``."""
        self._number += 1
        self._cell_start = self._now()
        return f"cell {self._number}/{self.total}: {name}"

    def done(self, outcome: str, text: str) -> str:
        """Record the current cell's ``outcome`` and print ``text`` with the times."""
        now = self._now()
        self._outcomes[outcome] += 1
        if outcome in _TRAINED:
            self._durations.append(now - self._cell_start)
            text = f"{text} in {now - self._cell_start:.1f} s"
        line = f"{text}; elapsed {_clock(now - self._begin)}, ETA {self.eta()}"
        print(line, flush=True)
        return line

    def eta(self) -> str:
        """The time left as ``h:mm:ss``, or ``?`` before any cell has trained."""
        left = self.total - self._number
        if left == 0:
            return "0:00:00"
        if not self._durations:
            return "?"
        return _clock(left * sum(self._durations) / len(self._durations))

    def summary(self) -> str:
        """``cells: 3 finished, 0 resumed, ...`` and the total elapsed time."""
        counts = ", ".join(f"{self._outcomes[o]} {o}" for o in OUTCOMES)
        return f"cells: {counts} (elapsed {_clock(self._now() - self._begin)})"
