"""Which rate ``--find-max`` tries next: a ladder of ×1.5 steps, then bisection of the bracket.

The ladder gives every server the same rates (from half the steady rate: 5,000, 7,500, 11,250 …
deliveries/s), so their p99 can be compared step by step. It brackets the max sustainable rate only
within ×1.5, so a max-rate ratio of two servers could only read 1.0×, 0.67× or 0.44×: a target such
as "≥ 0.9× the floor" could not be told from 0.67×. ``refine`` more steps then try the geometric
mean of the highest passing and the lowest failing rate, each halving the bracket's width in log
terms (two steps: within ×1.11).

No I/O: ``bench.phases`` runs each step and reports whether it passed.
"""

from __future__ import annotations

import math

__all__ = ["RateSearch"]

_UP = 1.5
_DOWN = 2.0


class RateSearch:
    """``next()`` is the rate to try (None: done); ``record(passed)`` is that step's verdict."""

    def __init__(self, start: float, *, lowest: float, refine: int = 0, max_steps: int = 14) -> None:
        if start <= 0 or lowest <= 0:
            raise ValueError("rates must be positive")
        self.best: float | None = None  # the highest rate that passed
        self.lowest_fail: float | None = None
        self._rate: float | None = start
        self._lowest = lowest  # below this there is nothing left to measure
        self._refine_left = max(0, refine)
        self._steps_left = max_steps
        self.refining = False  # the rate of ``next()`` bisects a bracket (not a ladder rate)

    def next(self) -> float | None:
        return self._rate if self._steps_left > 0 else None

    def record(self, passed: bool) -> None:
        rate = self._rate
        if rate is None:
            raise RuntimeError("the search is over: nothing to record")
        self._steps_left -= 1
        if passed:
            self.best = rate if self.best is None else max(self.best, rate)
        else:
            self.lowest_fail = rate if self.lowest_fail is None else min(self.lowest_fail, rate)
        self._rate = self._following(rate, passed)

    def _following(self, rate: float, passed: bool) -> float | None:
        best, fail = self.best, self.lowest_fail
        if best is not None and fail is not None:  # bracketed: bisect, or stop
            if self._refine_left <= 0:
                return None
            self._refine_left -= 1
            self.refining = True
            return math.sqrt(best * fail)
        if passed:
            return rate * _UP  # up until a step fails
        lower = rate / _DOWN  # the first step already failed: down until one passes
        return lower if lower >= self._lowest else None
