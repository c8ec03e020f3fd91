"""Time every collection CPython's cyclic garbage collector runs in this process.

A collection stops the event loop for as long as it walks its generation: every socket read and
write waits. ``gc.callbacks`` (https://docs.python.org/3/library/gc.html#gc.callbacks) calls us at
the start and the end of each one; the watch turns the pair into a duration for
``realtime_gc_collection_seconds{generation}`` and remembers the longest full collection (generation
2) that freed next to nothing, for ``service.gc_freeze``: everything such a pass walked is alive, and
freezing it spares the next full pass from walking it again.

Rule: the callback does no I/O, takes no lock and allocates no container (it runs inside the
collector, in whatever code, on whatever thread, allocated): it reads a clock and counts into lists
made up front. A scrape reads them (``collect``, the ``prometheus_client`` collector protocol).
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from prometheus_client.core import HistogramMetricFamily, Metric

from service.loop_lag import LAG_BUCKETS

__all__ = ["FRUITLESS_AT_MOST", "GcWatch"]

_GENERATIONS: Final = 3

FRUITLESS_AT_MOST: Final = 100
"""A full pass that freed at most this many objects freed "next to nothing"."""


class GcWatch:
    """Installed with ``install()`` for the service's lifetime; a histogram per generation."""

    __slots__ = (
        "_bounds",
        "_clock",
        "_counts",
        "_fruitless",
        "_installed",
        "_started",
        "_sums",
    )

    def __init__(
        self,
        *,
        buckets: Sequence[float] = LAG_BUCKETS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._bounds = tuple(buckets)
        self._counts = [[0] * (len(self._bounds) + 1) for _ in range(_GENERATIONS)]  # last: beyond
        self._sums = [0.0] * _GENERATIONS
        self._clock = clock
        self._started = 0.0
        self._fruitless = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self)
            self._installed = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        seconds = self._clock() - self._started
        generation: int = info["generation"]
        self._counts[generation][bisect.bisect_left(self._bounds, seconds)] += 1  # le: seconds <= bound
        self._sums[generation] += seconds
        if generation == 2 and info["collected"] <= FRUITLESS_AT_MOST:
            self._fruitless = max(self._fruitless, seconds)

    @property
    def full_passes(self) -> int:
        """Full collections seen while installed."""
        return sum(self._counts[2])

    def take_fruitless(self) -> float:
        """The longest full pass that freed next to nothing since the last call (0.0: none)."""
        seconds, self._fruitless = self._fruitless, 0.0
        return seconds

    # --- prometheus_client collector ----------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no names claimed up front: registering twice (tests, restarts) is harmless

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "realtime_gc_collection_seconds",
            "How long each collection of CPython's cyclic garbage collector held the event loop, by "
            "generation (2: a full pass over every object not frozen; see GC_FREEZE).",
            labels=["generation"],
        )
        for generation in range(_GENERATIONS):
            counts = list(self._counts[generation])  # a copy: the callback may count meanwhile
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family
