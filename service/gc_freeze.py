"""Keep the long-lived state of connections out of the cyclic garbage collector's full passes.

CPython runs a full collection — a pass over every tracked object, with the event loop stopped —
whenever the objects that reached the old generation since the last one amount to a quarter of it.
With 10,000 connections the old generation is ~800,000 objects (~80 per connection) and one pass
takes 0.4–0.9 s of CPU: seven of them during a 10,000-client storm, and in steady state one every
~2 minutes at 1,000 events/s, because short-lived objects of the fan-out path that happen to
survive two young collections are counted when they reach the old generation, though they die
there soon after (issue 12; ``gc.callbacks`` timings in ``bench/NOTES.md``).

``gc.freeze()`` moves every tracked object to a permanent generation that collections skip
(https://docs.python.org/3/library/gc.html#gc.freeze). Frozen objects that later become cyclic
garbage are never collected while frozen, so the policy here is:

- every heartbeat round (a second) in which the number of connections has grown by ``min_growth``
  since the last freeze, storm or not: collect the young generations (a few milliseconds), then
  freeze; the survivors are the connections' state. The full passes CPython still starts during a
  storm then walk only what arrived since the last freeze. Freezing only once a storm was over
  left seven passes over everything so far in a 10,000-client storm (57-412 ms each, 1.5 s in all,
  every one a stall for every connected client; they freed nothing);
- once as many connections have closed since the last refreeze as a quarter of those frozen (at
  least ``min_growth``), in a round with no growth (not in the middle of a reconnect storm):
  unfreeze, collect everything (the closed connections' cycles are freed), freeze again. That pass
  walks every object: ~470 ms with 10,000 connections. A connection closed by its client or by the
  server leaves no cycles in the probes of ``bench/NOTES.md`` (its objects are freed by reference
  counting, frozen or not), so a pass that frees next to nothing doubles the churn the next one
  waits for, up to four times the frozen connections; one that finds garbage brings it back to a
  quarter.

One full pass per quarter of churn at most, at a moment chosen here, instead of several during every
storm and one every time a quarter of the old generation's size has passed through it.
"""

from __future__ import annotations

import gc
from typing import Protocol

__all__ = ["GcApi", "HeapFreezer"]


class GcApi(Protocol):
    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...

    def collect(self, generation: int = 2) -> int: ...


class _StdGc:
    def freeze(self) -> None:
        gc.freeze()

    def unfreeze(self) -> None:
        gc.unfreeze()

    def collect(self, generation: int = 2) -> int:
        return gc.collect(generation)


_MAX_CHURN = 4.0
"""A refreeze that keeps finding nothing waits at most until the frozen connections turned over 4×."""
_WORTH_PER_CLOSE = 5
"""Objects freed per close since the last refreeze for which the full pass was worth its stall."""


class HeapFreezer:
    """Called once per heartbeat round with the number of live connections and of closes so far."""

    __slots__ = (
        "_base_churn",
        "_churn",
        "_closed_at",
        "_frozen",
        "_gc",
        "_min_growth",
        "_previous",
        "freezes",
        "last_collected",
    )

    def __init__(self, *, min_growth: int = 1000, churn: float = 0.25, gc_api: GcApi | None = None) -> None:
        self._gc: GcApi = gc_api or _StdGc()
        self._min_growth = min_growth
        self._base_churn = self._churn = churn
        self._frozen = 0  # live connections at the last freeze
        self._closed_at = 0  # closes counted at the last refreeze
        self._previous = 0  # live connections at the previous round
        self.freezes = 0
        self.last_collected = 0  # what the last refreeze's full pass freed

    def after_round(self, connections: int, closed_total: int) -> str | None:
        """Freeze or refreeze when due; returns what was done (``freeze``, ``refreeze``) or None."""
        settled = connections <= self._previous
        self._previous = connections
        closes = closed_total - self._closed_at
        if closes >= max(self._min_growth, self._churn * self._frozen) and self._frozen and settled:
            self._gc.unfreeze()
            # One full pass: the closed connections' cycles are freed.
            self.last_collected = collected = self._gc.collect()
            self._back_off(found_garbage=collected >= _WORTH_PER_CLOSE * closes)
            self._closed_at = closed_total
            action = "refreeze"
        elif connections - self._frozen >= self._min_growth:
            self._gc.collect(1)
            action = "freeze"
        else:
            return None
        self._gc.freeze()
        self._frozen = connections
        self.freezes += 1
        return action

    def _back_off(self, *, found_garbage: bool) -> None:
        """A pass that freed next to nothing makes the next wait for twice the churn; one that found
        the closed connections' garbage brings the wait back to ``churn``."""
        self._churn = self._base_churn if found_garbage else min(self._churn * 2, _MAX_CHURN)
