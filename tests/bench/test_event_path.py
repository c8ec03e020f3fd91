"""``python -m bench.event_path`` times the service's per-event stages against the floor's (in process)."""

from __future__ import annotations

from bench.event_path import measure


async def test_every_stage_is_timed_and_every_member_written() -> None:
    figures = await measure(connections=200, group_size=10, events=100, repeat=2)
    stages = ("delivery", "classify", "record", "history", "dedup", "fan-out")
    assert all(figures[stage] > 0 for stage in stages)
    assert figures["service"] == sum(figures[stage] for stage in stages)
    assert 0 < figures["floor"] < figures["service"]
    assert figures["heartbeat round ms"] > 0
