"""When the service moves connection state out of the garbage collector's full passes, and back.

A fake ``gc`` records the calls: the policy is about when, not about CPython's collector.
"""

from __future__ import annotations

from service.gc_freeze import HeapFreezer


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
    assert freezer.after_round(3500, 0) is None
    assert freezer.after_round(3500, 0) is None  # 500 more: below the growth that pays a pass
    assert gc.calls == ["collect1", "freeze", "collect1", "freeze"]


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
