"""When the service moves connection state out of the garbage collector's full passes, and back.

A fake ``gc`` records the calls: the policy is about when, not about CPython's collector.
"""

from __future__ import annotations

from service.gc_freeze import HeapFreezer


class RecordingGc:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return 0


def test_a_storm_is_frozen_once_it_is_over_not_while_connections_still_arrive() -> None:
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    assert freezer.after_round(400, 0) is None
    assert freezer.after_round(1500, 0) is None  # still growing
    assert freezer.after_round(3000, 0) is None
    assert gc.calls == []
    assert freezer.after_round(3000, 0) == "freeze"  # no growth for a round: the storm is over
    assert gc.calls == ["collect1", "freeze"]  # the young generations' garbage first
    assert freezer.after_round(3000, 0) is None
    assert freezer.after_round(3500, 0) is None
    assert freezer.after_round(3500, 0) is None  # 500 more: below the growth that pays a pass
    assert gc.calls == ["collect1", "freeze"]


def test_a_quarter_of_the_frozen_connections_closing_brings_their_garbage_back_to_the_collector() -> None:
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    freezer.after_round(8000, 0)
    freezer.after_round(8000, 0)
    gc.calls.clear()
    assert freezer.after_round(8000, 1999) is None  # clients reconnect: as many live, 1,999 closed
    assert freezer.after_round(8000, 2000) == "refreeze"  # a quarter of 8,000
    assert gc.calls == ["unfreeze", "collect2", "freeze"]  # one full pass frees the closed ones
    assert freezer.after_round(8000, 2500) is None  # counted from the refreeze


def test_small_services_are_never_frozen() -> None:
    gc = RecordingGc()
    freezer = HeapFreezer(min_growth=1000, gc_api=gc)
    for connections, closed in ((10, 0), (500, 0), (500, 0), (200, 300), (200, 900), (200, 900)):
        assert freezer.after_round(connections, closed) is None
    assert gc.calls == []
