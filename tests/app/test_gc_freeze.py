"""When the service moves connection state out of the garbage collector's full passes, and back.

A fake ``gc`` records the calls: the policy is about when, not about CPython's collector.
"""

from __future__ import annotations

from service.gc_freeze import HeapFreezer
from service.gc_probe import GcProbeFailed, GcProbeResult


class RecordingGc:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.garbage = 0  # what the next full collection frees

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return self.garbage if generation == 2 else 0


def test_a_storm_is_frozen_round_by_round_while_connections_arrive() -> None:
    """Each round that brought ``min_growth`` new connections freezes them: the full passes CPython
    starts during a storm then walk only the newcomers since the last freeze, not every connection
    so far (seven passes of 57-412 ms in a 10,000-client storm before)."""
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    assert freezer.after_round(400, 0) is None  # below the growth that pays a freeze
    assert freezer.after_round(1500, 0) == "freeze"  # still growing: frozen all the same
    assert gc.calls == ["collect1", "freeze"]  # the young generations' garbage first
    assert freezer.after_round(2400, 0) is None  # 900 since the last freeze
    assert freezer.after_round(3000, 0) == "freeze"
    assert freezer.after_round(3000, 0) is None  # the storm is over: nothing new to freeze
    assert freezer.after_round(3050, 0) is None
    assert freezer.after_round(3050, 0) is None  # 50 more: a pass over them is ~2 ms, not worth a freeze
    assert gc.calls == ["collect1", "freeze", "collect1", "freeze"]


def test_a_storms_last_connections_are_frozen_once_it_settles() -> None:
    """A storm's last round mostly brings fewer than ``min_growth`` connections: their state stayed
    out of every freeze until a full pass of CPython's own walked it in steady state (24,000-52,000
    objects, 17-75 ms at 10,000 connections). The first round with no growth freezes them."""
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, min_tail=100, gc_api=gc)
    assert freezer.after_round(1335, 0) == "freeze"
    assert freezer.after_round(2670, 0) == "freeze"
    assert freezer.after_round(3400, 0) is None  # the storm's last 730, still arriving
    gc.calls.clear()
    assert freezer.after_round(3400, 0) == "tail"  # settled: freeze them now
    assert gc.calls == ["collect1", "freeze"]  # the young generations' garbage first, as always
    assert freezer.after_round(3400, 0) is None  # taken: nothing unfrozen since
    assert freezer.after_round(3380, 20) is None  # a few leave: nothing new to freeze
    assert freezer.after_round(3460, 20) is None  # 60 arrive: not settled, and below min_tail anyway
    assert freezer.after_round(3460, 20) is None  # settled, 60 since: below min_tail
    assert freezer.after_round(3600, 20) is None  # growing again
    assert freezer.after_round(3590, 30) == "tail"  # settled with 190 since the last freeze


def test_a_quarter_of_the_frozen_connections_closing_brings_their_garbage_back_to_the_collector() -> None:
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    assert freezer.after_round(8000, 0) == "freeze"
    gc.calls.clear()
    assert freezer.after_round(8000, 1999) is None  # clients reconnect: as many live, 1,999 closed
    assert freezer.after_round(8000, 2000) == "refreeze"  # a quarter of 8,000
    assert gc.calls == ["unfreeze", "collect2", "freeze"]  # one full pass frees the closed ones
    assert freezer.after_round(8000, 2500) is None  # counted from the refreeze


def test_a_refreeze_that_frees_nothing_makes_the_next_wait_for_twice_the_churn() -> None:
    """The full pass stops the loop (~470 ms at 10,000 connections): closes that leave no cycles
    should not pay it every quarter of churn."""
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    assert freezer.after_round(8000, 0) == "freeze"
    assert freezer.after_round(8000, 2000) == "refreeze"  # a quarter: frees nothing
    assert freezer.last_collected == 0
    assert freezer.after_round(8000, 5999) is None
    assert freezer.after_round(8000, 6000) == "refreeze"  # half of 8,000 since: frees nothing again
    assert freezer.after_round(8000, 13999) is None
    assert freezer.after_round(8000, 14000) == "refreeze"  # all 8,000 since
    for closed in (30000, 62000, 94000):  # 2x, then at most 4x the frozen connections
        assert freezer.after_round(8000, closed - 1) is None
        assert freezer.after_round(8000, closed) == "refreeze"
    gc.garbage = 5 * 32000  # this time the closed connections left cycles: 5 objects per close
    assert freezer.after_round(8000, 126000) == "refreeze"
    assert freezer.last_collected == 160000
    assert freezer.after_round(8000, 128000) == "refreeze"  # back to a quarter


def test_small_services_are_never_frozen() -> None:
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    for connections, closed in ((10, 0), (500, 0), (500, 0), (200, 300), (200, 900), (200, 900)):
        assert freezer.after_round(connections, closed) is None
    assert gc.calls == []


class ScriptedProbe:
    """Answers a probe after ``rounds`` polls with ``collected`` (or fails when ``collected`` is None)."""

    def __init__(self, gc: RecordingGc, *, rounds: int = 1, can_start: bool = True) -> None:
        self.gc = gc
        self.rounds = rounds
        self.can_start = can_start
        self.collected: int | None = 0
        self.starts = 0
        self.closed = False
        self._polls_left = 0

    @property
    def running(self) -> bool:
        return self._polls_left > 0

    def start(self) -> bool:
        if not self.can_start:
            return False
        self.gc.calls.append("fork")
        self.starts += 1
        self._polls_left = self.rounds
        return True

    def poll(self) -> GcProbeResult | None:
        self._polls_left -= 1
        if self._polls_left:
            return None
        if self.collected is None:
            raise GcProbeFailed("the probe process exited (status 9) without an answer")
        return GcProbeResult(collected=self.collected, top_types=(("Future", self.collected),))

    def close(self) -> None:
        self.closed = True
        self._polls_left = 0


def test_a_probe_that_finds_nothing_spares_the_service_the_full_pass() -> None:
    """The pass runs in a forked copy: the service pays the fork, not the ~470 ms pass."""
    gc = RecordingGc()
    probe = ScriptedProbe(gc, rounds=2)
    freezer = HeapFreezer(min_growth=1000, gc_api=gc, probe=probe)
    assert freezer.after_round(8000, 0) == "freeze"
    gc.calls.clear()
    assert freezer.after_round(8000, 2000) == "fork"  # a quarter closed: the copy starts its pass
    assert freezer.after_round(8000, 2300) is None  # still collecting
    assert freezer.after_round(8000, 2400) == "probe"  # it freed nothing
    assert gc.calls == ["fork"]  # no unfreeze, no full pass in the service
    assert (freezer.last_collected, freezer.last_garbage_types) == (0, (("Future", 0),))
    assert freezer.after_round(8000, 5999) is None  # counted from the fork, and backed off to half
    assert freezer.after_round(8000, 6000) == "fork"
    assert probe.starts == 2


def test_a_probe_that_finds_garbage_has_the_service_free_it() -> None:
    gc = RecordingGc()
    probe = ScriptedProbe(gc)
    freezer = HeapFreezer(min_growth=1000, gc_api=gc, probe=probe)
    assert freezer.after_round(8000, 0) == "freeze"
    gc.calls.clear()
    probe.collected = gc.garbage = 10 * 2000  # 10 objects per close: worth the stop
    assert freezer.after_round(8000, 2000) == "fork"
    assert freezer.after_round(8000, 2100) == "refreeze"
    assert gc.calls == ["fork", "unfreeze", "collect2", "freeze"]
    assert freezer.last_collected == 20000
    assert freezer.after_round(8000, 4099) is None
    assert freezer.after_round(8000, 4100) == "fork"  # a quarter since the pass: probed again
    assert probe.starts == 2


def test_without_an_answer_from_the_probe_the_service_runs_the_pass_itself() -> None:
    gc = RecordingGc()
    probe = ScriptedProbe(gc)
    freezer = HeapFreezer(min_growth=1000, gc_api=gc, probe=probe)
    assert freezer.after_round(8000, 0) == "freeze"
    gc.calls.clear()
    probe.collected = None  # the copy died (killed, out of memory)
    assert freezer.after_round(8000, 2000) == "fork"
    assert freezer.after_round(8000, 2000) == "refreeze"
    assert gc.calls == ["fork", "unfreeze", "collect2", "freeze"]
    probe.can_start = False  # fork refused (EAGAIN, ENOMEM)
    gc.calls.clear()
    assert freezer.after_round(8000, 6000) == "refreeze"
    assert gc.calls == ["unfreeze", "collect2", "freeze"]


def test_connections_arriving_while_a_probe_runs_are_frozen_and_a_running_probe_is_stopped_on_close() -> None:
    gc = RecordingGc()
    probe = ScriptedProbe(gc, rounds=3)
    freezer = HeapFreezer(min_growth=1000, gc_api=gc, probe=probe)
    assert freezer.after_round(8000, 0) == "freeze"
    assert freezer.after_round(8000, 2000) == "fork"
    assert freezer.after_round(9500, 2000) == "freeze"  # a reconnect wave arrives meanwhile
    freezer.close()
    assert probe.closed


class ScriptedPasses:
    """``service.gc_watch.GcWatch`` as the freezer sees it: the longest fruitless full pass since."""

    def __init__(self) -> None:
        self.fruitless = 0.0

    def take_fruitless(self) -> float:
        seconds, self.fruitless = self.fruitless, 0.0
        return seconds


def test_what_a_full_pass_of_cpythons_own_walked_in_vain_is_frozen_the_next_round() -> None:
    """After a storm, the state the last connections created once they had joined was never frozen:
    CPython walked it in every full pass of the steady state (8-26 ms each, every 30-60 s at 10,000
    connections). A pass that freed next to nothing says all it walked is alive: freeze it."""
    gc = RecordingGc()
    passes = ScriptedPasses()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc, watch=passes, min_survivor_pause=0.002)
    assert freezer.after_round(10000, 0) == "freeze"
    gc.calls.clear()
    assert freezer.after_round(10000, 0) is None  # no pass of CPython's own since
    passes.fruitless = 0.0015
    assert freezer.after_round(10000, 0) is None  # one too short to be worth a freeze
    passes.fruitless = 0.020
    assert freezer.after_round(10000, 0) == "survivors"
    assert gc.calls == ["collect1", "freeze"]  # the young generations' garbage first, as always
    assert freezer.after_round(10000, 0) is None  # taken: once per pass


def test_a_pass_before_any_freeze_or_before_this_rounds_freeze_freezes_nothing_more() -> None:
    """A small service is never frozen (its passes are short); a freeze covers the survivors of any
    pass before it."""
    gc = RecordingGc()
    passes = ScriptedPasses()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc, watch=passes)
    passes.fruitless = 0.050
    assert freezer.after_round(500, 0) is None  # nothing frozen yet: a small service
    passes.fruitless = 0.050
    assert freezer.after_round(1500, 0) == "freeze"  # the storm's own freeze
    assert freezer.after_round(1500, 0) is None  # that pass's survivors were in it
    passes.fruitless = 0.050
    assert freezer.after_round(1500, 400) == "survivors"
    assert freezer.after_round(1500, 400) is None
    assert gc.calls == ["collect1", "freeze", "collect1", "freeze"]
