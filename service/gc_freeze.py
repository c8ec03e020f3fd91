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
  quarter;
- with a probe (``service.gc_probe``, ``GC_FREEZE_PROBE``, on by default where the process can
  fork), a due refreeze first asks a forked copy of the process to run that pass: the service pays
  ``fork`` (~7 ms) instead of the pass, and the pass itself only when the copy found garbage worth it.
  The answer comes a round or two later; the same back-off applies to the probes (each costs a core
  for the length of a pass);
- in a round with no growth, when at least ``min_tail`` connections arrived since the last freeze
  (the first round after a storm): collect the young generations, then freeze. A storm's last round
  mostly brings fewer than ``min_growth`` connections, so their state stayed out of every freeze
  until a full pass of CPython's own walked it in steady state (24,000-52,000 objects after a
  10,000-client storm; passes of 17-75 ms in 3 of 21 steady phases: ``bench/NOTES.md``, issue 12's
  twelfth pass); frozen as the storm settles, no pass walks them. A tail below ``min_tail`` costs a
  pass of about ``min_survivor_pause``;
- in any other round, when CPython ran a full pass of its own since the last round that took at
  least ``min_survivor_pause`` and freed next to nothing (``service.gc_watch``): freeze its survivors.
  They are alive by definition; left unfrozen, every later full pass walks them again. After a storm,
  the state its last connections created once they had joined (their tasks, coroutines, group sets:
  ~43,000 objects for the last ~1,400 of 10,000) stayed out of the freezes and was walked by a full
  pass every 30-60 s in steady state, 8-26 ms each.

One full pass per quarter of churn at most, at a moment chosen here, instead of several during every
storm and one every time a quarter of the old generation's size has passed through it.
"""

from __future__ import annotations

import gc
import time
from typing import Literal, Protocol

import structlog

from service.gc_probe import GcProbeFailed, GcProbeResult

__all__ = ["FreezeAction", "GcApi", "GcProbe", "HeapFreezer"]

log = structlog.get_logger(__name__)

FreezeAction = Literal["freeze", "tail", "refreeze", "fork", "probe", "survivors"]
"""What a round did: froze new connections, froze a storm's last ones once it settled, ran a full
pass and froze again, handed that pass to a forked copy, learnt from the copy that it would free next
to nothing (and skipped it), or froze what a fruitless full pass of CPython's own had just walked."""


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


class FullPasses(Protocol):
    def take_fruitless(self) -> float: ...


class GcProbe(Protocol):
    @property
    def running(self) -> bool: ...

    def start(self) -> bool: ...

    def poll(self) -> GcProbeResult | None: ...

    def close(self) -> None: ...


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
        "_min_tail",
        "_previous",
        "_probe",
        "_probed_at",
        "_survivor_pause",
        "_watch",
        "freezes",
        "last_collected",
        "last_garbage_types",
        "last_pause",
    )

    def __init__(
        self,
        *,
        min_growth: int = 1000,
        min_tail: int = 100,
        churn: float = 0.25,
        gc_api: GcApi | None = None,
        probe: GcProbe | None = None,
        watch: FullPasses | None = None,
        min_survivor_pause: float = 0.002,
    ) -> None:
        self._gc: GcApi = gc_api or _StdGc()
        self._probe = probe
        self._watch = watch
        self._survivor_pause = min_survivor_pause
        self._min_growth = min_growth
        self._min_tail = min_tail
        self._base_churn = self._churn = churn
        self._frozen = 0  # live connections at the last freeze
        self._closed_at = 0  # closes counted at the last refreeze (or clean probe)
        self._probed_at = 0  # closes counted when the running probe forked
        self._previous = 0  # live connections at the previous round
        self.freezes = 0
        self.last_collected = 0  # what the last full pass (or probe) found
        self.last_garbage_types: tuple[tuple[str, int], ...] = ()  # the probe's most common types
        self.last_pause = 0.0  # seconds the last action held the caller (the event loop)

    def after_round(self, connections: int, closed_total: int) -> FreezeAction | None:
        """Freeze, refreeze, start or conclude a probe when due; returns what was done, or None."""
        started = time.perf_counter()
        action = self._round(connections, closed_total)
        if action is not None:
            self.last_pause = time.perf_counter() - started
        return action

    def _round(self, connections: int, closed_total: int) -> FreezeAction | None:
        settled = connections <= self._previous
        self._previous = connections
        if self._probe is not None and self._probe.running:
            action = self._conclude_probe(self._probe, connections, closed_total)
            if action is not None:
                return action
        elif self._refreeze_due(closed_total, settled):
            if self._probe is None or not self._probe.start():
                return self._refreeze(connections, closed_total)
            self._probed_at = closed_total
            return "fork"
        fruitless = self._watch.take_fruitless() if self._watch is not None else 0.0
        freeze: FreezeAction
        unfrozen = connections - self._frozen
        if unfrozen >= self._min_growth:
            freeze = "freeze"
        elif not self._frozen:
            return None  # the rules below apply only once connections were frozen
        elif settled and unfrozen >= self._min_tail:
            freeze = "tail"
        elif fruitless >= self._survivor_pause:
            freeze = "survivors"
        else:
            return None
        self._gc.collect(1)  # the young generations' garbage first: what is frozen stays
        self._freeze(connections)
        return freeze

    def close(self) -> None:
        """Stop a running probe (the heartbeat is ending)."""
        if self._probe is not None:
            self._probe.close()

    def _refreeze_due(self, closed_total: int, settled: bool) -> bool:
        closes = closed_total - self._closed_at
        return bool(self._frozen) and settled and closes >= max(self._min_growth, self._churn * self._frozen)

    def _conclude_probe(self, probe: GcProbe, connections: int, closed_total: int) -> FreezeAction | None:
        try:
            result = probe.poll()
        except GcProbeFailed as exc:
            log.warning("gc.probe_failed", error=str(exc), fallback="a full pass in the service")
            return self._refreeze(connections, closed_total)
        if result is None:
            return None
        self.last_garbage_types = result.top_types
        if result.collected >= _WORTH_PER_CLOSE * (self._probed_at - self._closed_at):
            return self._refreeze(connections, closed_total)  # the copy found garbage: free it here
        self.last_collected = result.collected
        self._back_off(found_garbage=False)
        self._closed_at = self._probed_at
        return "probe"

    def _refreeze(self, connections: int, closed_total: int) -> FreezeAction:
        closes = closed_total - self._closed_at
        self._gc.unfreeze()
        # One full pass: the closed connections' cycles are freed.
        self.last_collected = collected = self._gc.collect()
        self._back_off(found_garbage=collected >= _WORTH_PER_CLOSE * closes)
        self._closed_at = closed_total
        self._freeze(connections)
        return "refreeze"

    def _freeze(self, connections: int) -> None:
        self._gc.freeze()
        self._frozen = connections
        self.freezes += 1
        if self._watch is not None:
            self._watch.take_fruitless()  # whatever a pass before this walked is frozen now

    def _back_off(self, *, found_garbage: bool) -> None:
        """A pass that freed next to nothing makes the next wait for twice the churn; one that found
        the closed connections' garbage brings the wait back to ``churn``."""
        self._churn = self._base_churn if found_garbage else min(self._churn * 2, _MAX_CHURN)
