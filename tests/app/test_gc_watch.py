"""``service.gc_watch``: every collection timed, by generation; fruitless full passes remembered.

These run CPython's real collector (the watch is a ``gc.callbacks`` hook); a fake clock makes each
pass take a known time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.gc_watch import FRUITLESS_AT_MOST, GcWatch


class StepClock:
    """Each reading is ``step`` seconds after the previous one: every pass takes ``step``."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def clock() -> StepClock:
    return StepClock(0.004)


@pytest.fixture
def watch(clock: StepClock) -> Iterator[GcWatch]:
    watch = GcWatch(clock=clock)
    watch.install()
    try:
        yield watch
    finally:
        watch.uninstall()


def _cycles(n: int) -> None:
    for _ in range(n):
        a: list[object] = []
        a.append(a)


def test_a_full_pass_that_frees_nothing_is_remembered_once(watch: GcWatch) -> None:
    gc.collect()
    watch.take_fruitless()
    gc.collect()  # nothing left to free
    assert watch.take_fruitless() == pytest.approx(0.004)
    assert watch.take_fruitless() == 0.0  # taken
    assert watch.full_passes == 2


def test_a_full_pass_that_frees_garbage_is_not_fruitless(watch: GcWatch) -> None:
    gc.collect()
    watch.take_fruitless()
    _cycles(FRUITLESS_AT_MOST * 2)
    assert gc.collect() >= FRUITLESS_AT_MOST * 2
    assert watch.take_fruitless() == 0.0
    gc.collect(0)  # a young collection is never a full pass
    assert watch.take_fruitless() == 0.0


def test_each_collection_lands_in_its_generations_histogram(watch: GcWatch, clock: StepClock) -> None:
    registry = CollectorRegistry()
    registry.register(watch)
    clock.step = 1 / 64  # 15.6 ms: between the 0.015 and 0.02 bounds, and exact in binary
    gc.collect(1)
    gc.collect(2)
    gc.collect(2)
    text = generate_latest(registry).decode()
    assert 'realtime_gc_collection_seconds_bucket{generation="2",le="0.015"} 0.0' in text
    assert 'realtime_gc_collection_seconds_bucket{generation="2",le="0.02"} 2.0' in text
    assert 'realtime_gc_collection_seconds_bucket{generation="2",le="+Inf"} 2.0' in text
    assert 'realtime_gc_collection_seconds_sum{generation="2"} 0.03125' in text
    assert 'realtime_gc_collection_seconds_bucket{generation="1",le="0.02"} ' in text  # ≥ 1: ours


def test_an_uninstalled_watch_sees_nothing(clock: StepClock) -> None:
    watch = GcWatch(clock=clock)
    watch.install()
    watch.install()  # once only
    assert gc.callbacks.count(watch) == 1
    watch.uninstall()
    gc.collect()
    assert watch.full_passes == 0
    assert watch not in gc.callbacks
