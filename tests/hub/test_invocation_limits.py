"""What a connection's invocations may cost: refusals logged once per connection, a rate limit.

Issue 11 (D28): 10,000 invocations of an unknown method wrote 10,000 INFO lines and nothing
throttled them. The clock is moved by hand (the harness), so the token bucket is exact.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from .harness import HubHarness


def _events(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[dict[str, Any]]:
    return [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == name and record.levelno == level
    ]


def _invocations(method: str, outcome: str) -> float:
    labels = {"method": method, "outcome": outcome}
    return REGISTRY.get_sample_value("realtime_hub_invocations_total", labels) or 0.0


async def test_refused_invocations_are_logged_at_info_once_per_connection_and_all_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hub = HubHarness()
    unknown_before = _invocations("<unknown>", "unknown_method")
    arguments_before = _invocations("JoinDispatchGroup", "bad_arguments")
    first, sink = await hub.connect()
    for n in range(5):
        await hub.invoke(first, "NoSuchMethod", invocation_id=str(n))
    await hub.invoke(first, "NoSuchMethod", invocation_id=None)  # non-blocking: no reply, still counted
    await hub.invoke(first, "JoinDispatchGroup", invocation_id="bad")  # no argument
    second, _ = await hub.connect()
    await hub.invoke(second, "JoinDispatchGroup", 1, 2, invocation_id="bad")

    info = _events(caplog, "hub.invocation_refused", logging.INFO)
    assert [(event["method"], event["outcome"]) for event in info] == [
        ("NoSuchMethod", "unknown_method"),
        ("JoinDispatchGroup", "bad_arguments"),
    ]
    assert "Method does not exist" in info[0]["error"]
    assert len(_events(caplog, "hub.invocation_refused", logging.DEBUG)) == 6  # the rest, one each
    assert _invocations("<unknown>", "unknown_method") == unknown_before + 6
    assert _invocations("JoinDispatchGroup", "bad_arguments") == arguments_before + 2
    assert len([r for r in sink.json_records() if r.get("type") == 3]) == 6  # every blocking one answered
