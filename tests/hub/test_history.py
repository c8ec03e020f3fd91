"""The in-memory history of the log: bounds, lookups over offset gaps, and replays against a model."""

from __future__ import annotations

import gc
import tracemalloc

import hypothesis.strategies as st
import orjson
import pytest
from hypothesis import given, settings

from schemas.log import LogRecord, Position
from service.hub import history as history_module
from service.hub.history import History, Miss, ReplayMiss

GROUPS = ("dispatch/a", "dispatch/b", "contractor/x")


def _record(offset: int, *, groups: tuple[str, ...] = ("dispatch/a",), target: str | None = "E") -> LogRecord:
    return LogRecord(
        offset=offset,
        check=f"{offset:08x}",
        target=target,
        groups=groups if target else (),
        payload={"n": offset} if target else None,
    )


def _history(**bounds: float) -> History:
    clock = [1000.0]
    history = History(
        max_entries=int(bounds.get("max_entries", 1000)),
        max_bytes=int(bounds.get("max_bytes", 1 << 20)),
        max_age_seconds=bounds.get("max_age_seconds", 3600.0),
        clock=lambda: clock[0],
    )
    history.clock = clock  # type: ignore[attr-defined]
    return history


def test_append_keeps_offset_order_and_refuses_going_back() -> None:
    history = _history()
    history.append(_record(1))
    history.append(_record(3))
    assert history.head is not None
    assert history.head.offset == 3
    with pytest.raises(ValueError, match="not after the head"):
        history.append(_record(3))


def test_lookups_work_across_offset_gaps() -> None:
    history = _history()
    for offset in (0, 1, 2, 4, 5, 9, 10):  # streams skip offsets at segment boundaries
        history.append(_record(offset))
    assert [history.get(o).offset for o in (0, 4, 9, 10)] == [0, 4, 9, 10]  # type: ignore[union-attr]
    assert history.get(3) is None
    assert history.get(11) is None
    assert history.matches(Position(5, "00000005"))
    assert not history.matches(Position(5, "deadbeef"))


def test_bounds_drop_the_oldest_but_keep_the_head() -> None:
    by_count = _history(max_entries=3)
    for offset in range(10):
        by_count.append(_record(offset))
    assert [by_count.get(o) is not None for o in (6, 7, 8, 9)] == [False, True, True, True]

    by_bytes = _history(max_bytes=1400)  # the group's index ~0.9 KB, each entry ~0.14
    for offset in range(10):
        by_bytes.append(_record(offset))
    assert by_bytes.size_bytes <= 1400
    assert len(by_bytes) < 10
    assert by_bytes.head is not None
    assert by_bytes.head.offset == 9

    by_age = _history(max_age_seconds=10)
    by_age.append(_record(0))
    by_age.clock[0] += 11  # type: ignore[attr-defined]
    by_age.append(_record(1))
    assert by_age.get(0) is None
    by_age.clock[0] += 100  # type: ignore[attr-defined]
    by_age.expire()
    assert len(by_age) == 1  # the head stays: checkpoints point at it


def test_replay_returns_the_groups_events_after_the_position_up_to_through() -> None:
    history = _history()
    history.append(_record(0))
    history.append(_record(1, groups=("dispatch/b",)))
    history.append(_record(2, target=None))  # an entry that is not an event (invalid, duplicate)
    history.append(_record(3, groups=("dispatch/a", "contractor/x")))
    history.append(_record(4))
    replay = history.replay(Position(0, "00000000"), through=3, groups={"dispatch/a", "contractor/x"}, cap=10)
    assert not isinstance(replay, ReplayMiss)
    assert [entry.offset for entry in replay] == [3]
    assert replay[0].load_payload() == {"n": 3}


def test_replay_misses_say_why() -> None:
    history = _history(max_entries=5)
    for offset in range(10):
        history.append(_record(offset))

    def replay(position: Position, through: int, cap: int, source: History = history) -> object:
        return source.replay(position, through=through, groups={"dispatch/a"}, cap=cap)

    assert replay(Position(2, "00000002"), 9, 10) == ReplayMiss(Miss.WINDOW)
    assert replay(Position(6, "ffffffff"), 9, 10) == ReplayMiss(Miss.EPOCH)
    assert replay(Position(8, "00000008"), 7, 10) == ReplayMiss(Miss.AHEAD)
    assert replay(Position(5, "00000005"), 9, 3) == ReplayMiss(Miss.CAP)
    assert replay(Position(5, "00000005"), 9, 4) != ReplayMiss(Miss.CAP)
    assert replay(Position(0, "00000000"), 0, 1, _history()) == ReplayMiss(Miss.WINDOW)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 3), st.sampled_from([*GROUPS, None]), st.sampled_from(GROUPS)), max_size=60
    ),
    start=st.integers(0, 59),
    through=st.integers(0, 200),
    wanted=st.sets(st.sampled_from(GROUPS), min_size=1),
    cap=st.integers(0, 70),
)
def test_replay_matches_a_model(
    steps: list[tuple[int, str | None, str]], start: int, through: int, wanted: set[str], cap: int
) -> None:
    history = _history()
    model: list[LogRecord] = []
    offset = -1
    for gap, first_group, second_group in steps:
        offset += gap
        record = (
            _record(offset, target=None)
            if first_group is None
            else _record(offset, groups=tuple(dict.fromkeys((first_group, second_group))))
        )
        history.append(record)
        model.append(record)
    if not model:
        return
    anchor = model[min(start, len(model) - 1)]
    result = history.replay(anchor.position, through=through, groups=wanted, cap=cap)
    if anchor.offset > through:
        assert result == ReplayMiss(Miss.AHEAD)
        return
    expected = [
        r.offset
        for r in model
        if anchor.offset < r.offset <= through and r.target is not None and not wanted.isdisjoint(r.groups)
    ]
    if len(expected) > cap:
        assert result == ReplayMiss(Miss.CAP)
    else:
        assert not isinstance(result, ReplayMiss)
        assert [entry.offset for entry in result] == expected
        assert [entry.load_payload() for entry in result] == [{"n": o} for o in expected]


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(st.sampled_from([(), *((g,) for g in GROUPS), GROUPS[:2], GROUPS]), max_size=60),
    max_entries=st.integers(1, 12),
    start=st.integers(0, 59),
    wanted=st.sets(st.sampled_from(GROUPS), min_size=1),
)
def test_replay_matches_a_model_as_the_oldest_entries_are_dropped(
    groups: list[tuple[str, ...]], max_entries: int, start: int, wanted: set[str]
) -> None:
    history = _history(max_entries=max_entries)
    model = [_record(offset, groups=g, target="E" if g else None) for offset, g in enumerate(groups)]
    for record in model:
        history.append(record)
    if not model:
        return
    live = model[-max_entries:]
    anchor = live[min(start, len(live) - 1)]
    result = history.replay(anchor.position, through=model[-1].offset, groups=wanted, cap=100)
    assert not isinstance(result, ReplayMiss)
    assert [entry.offset for entry in result] == [
        r.offset for r in live if r.offset > anchor.offset and r.target and not wanted.isdisjoint(r.groups)
    ]
    # What it counts is what it holds, its index of groups included (HISTORY_MAX_BYTES bounds both).
    assert history.size_bytes == _expected_size(live)
    history.clear()
    assert history.size_bytes == 0
    assert history.replay(anchor.position, through=anchor.offset, groups=wanted, cap=100) == ReplayMiss(
        Miss.WINDOW
    )


def _expected_size(live: list[LogRecord]) -> int:
    size = 0
    groups: set[str] = set()
    for record in live:
        payload = len(orjson.dumps(record.payload)) if record.payload is not None else 0
        size += history_module._ENTRY_OVERHEAD + payload
        if record.target is not None:
            size += history_module._INDEX_SLOT * len(record.groups)
            groups.update(record.groups)
    return size + history_module._GROUP_OVERHEAD * len(groups)


def test_a_group_index_counts_against_the_byte_bound() -> None:
    """Each group of the window costs the index ~0.9 KB: 200,000 events for as many contractors were
    ~170 MB the byte bound did not see."""
    history = _history(max_entries=10_000, max_bytes=100_000)
    for offset in range(1000):
        history.append(_record(offset, groups=(f"contractor/{offset}",)))
    assert history.size_bytes <= 100_000
    assert len(history) < 100  # ~1 KB each with their groups, not ~0.15


class _CountingList(list):  # type: ignore[type-arg]
    reads = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        _CountingList.reads += 1
        return super().__getitem__(index)


def test_a_replay_reads_what_it_returns_not_the_whole_history() -> None:
    """A Resume from the oldest position into a quiet group scanned every entry after it: ~60 ms at
    200,000 entries, per call, which any client could repeat (Resume, leave, Resume again)."""
    history = _history(max_entries=20_000, max_bytes=1 << 30)
    for offset in range(20_000):
        history.append(_record(offset, groups=("contractor/x",) if offset % 5000 == 1 else ("dispatch/a",)))
    history._entries = _CountingList(history._entries)
    _CountingList.reads = 0
    oldest = history.oldest
    assert oldest is not None
    result = history.replay(oldest.position, through=19_999, groups={"contractor/x"}, cap=100)
    assert not isinstance(result, ReplayMiss)
    assert [entry.offset for entry in result] == [1, 5001, 10001, 15001]
    assert _CountingList.reads < 50


def test_what_the_history_keeps_is_not_tracked_by_the_garbage_collector() -> None:
    """An object tracked per event kept the cyclic GC's full collections coming: every 25 % of growth
    of the tracked heap, one pass over every connection's objects (~0.4 s with 10,000 connections)."""
    history = _history(max_entries=10_000)
    records = [_record(offset, groups=GROUPS) for offset in range(2000)]
    gc.collect()
    before = len(gc.get_objects())
    for record in records:
        history.append(record)
    gc.collect()
    assert len(gc.get_objects()) - before < 100  # not one per entry (2,000)
    del records
    replay = history.replay(Position(0, "00000000"), through=1999, groups={"dispatch/a"}, cap=5000)
    assert not isinstance(replay, ReplayMiss)
    assert [entry.offset for entry in replay] == list(range(1, 2000))
    assert replay[0].load_payload() == {"n": 1}


def test_an_entry_takes_about_its_own_size_in_memory() -> None:
    """orjson returns its output in a 4 KiB block; kept as is, each entry cost ~4 KB instead of ~0.25
    (the soak's instances grew by ~1.4 MB every 300 events with a steady number of entries)."""
    history = History(max_entries=10_000, max_bytes=10**9, max_age_seconds=3600, clock=lambda: 1000.0)
    payload = {"type": "RecommendationReady", "jobId": "0" * 36, "region": "north-america", "n": 1}
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for offset in range(1, 1001):
            history.append(
                LogRecord(
                    offset=offset,
                    check="00000000",
                    target="RecommendationReady",
                    groups=("dispatch/north-america",),
                    payload=payload,
                )
            )
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (after - before) / 1000 < 1024  # bytes per entry, payload included
