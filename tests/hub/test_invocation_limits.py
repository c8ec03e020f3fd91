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


# --- the per-connection invocation rate limit ------------------------------------------------------


def _rate_limited(limit: str) -> float:
    return REGISTRY.get_sample_value("realtime_hub_rate_limited_total", {"limit": limit}) or 0.0


async def test_a_connection_past_its_burst_is_closed_with_a_close_that_says_why_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    hub = HubHarness(max_invocations_per_second=2, invocation_burst=5)
    before = _rate_limited("invocations")
    connection, sink = await hub.connect()
    # One frame of ten: unknown methods count like any other call.
    await hub.send_json(
        connection,
        *({"type": 1, "invocationId": str(n), "target": "NoSuchMethod", "arguments": []} for n in range(10)),
    )
    records = sink.json_records()
    assert [r.get("invocationId") for r in records[1:6]] == ["0", "1", "2", "3", "4"]  # the burst: answered
    assert records[6:] == [
        {
            "type": 7,
            "error": "Connection closed with an error. The client sent more than 2 invocations per second "
            "(bursts of up to 5); closed.",
        }
    ]  # no allowReconnect: the official clients do not come back
    assert sink.closed
    assert connection.close_reason == "rate_limited"
    assert _rate_limited("invocations") == before + 1
    (warning,) = _events(caplog, "connection.rate_limited", logging.WARNING)
    assert warning["limit"] == "invocations"
    assert warning["perSecond"] == 2
    # The rest of the frame was dropped with the connection, and logged nothing more.
    assert _events(caplog, "hub.invocation_refused", logging.DEBUG) == []


async def test_the_bucket_refills_at_the_rate_so_a_steady_caller_below_it_is_never_limited() -> None:
    hub = HubHarness(max_invocations_per_second=2, invocation_burst=3)
    connection, sink = await hub.connect()
    for second in range(30):  # two a second for half a minute, after a full burst
        if second == 0:
            for n in range(3):
                await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id=f"burst-{n}")
        hub.tick(1.0)
        await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id=f"{second}-a")
        await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id=f"{second}-b")
    assert not hub.hub_connection(connection).closed
    # Three in one second with an empty bucket is one too many.
    hub.tick(1.0)
    for n in range(3):
        await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id=f"over-{n}")
    assert connection.close_reason == "rate_limited"
    assert sink.json_records()[-1]["type"] == 7


async def test_stream_invocations_count_too() -> None:
    hub = HubHarness(max_invocations_per_second=1, invocation_burst=2)
    connection, sink = await hub.connect()
    await hub.send_json(
        connection,
        *({"type": 4, "invocationId": str(n), "target": "Anything", "arguments": []} for n in range(3)),
    )
    assert [record["type"] for record in sink.json_records()[1:]] == [3, 3, 7]
    assert connection.close_reason == "rate_limited"


async def test_an_ordinary_client_is_never_limited_with_the_defaults() -> None:
    # What the JS client and the console do: on every connect a Resume or a few joins, then pings;
    # the user switches regions now and then; reconnects start afresh.
    hub = HubHarness()
    for _reconnect in range(5):
        connection, sink = await hub.connect(positions=True)
        await hub.invoke(connection, "Resume", ["dispatch/north-america", "dispatch/emea"], None)
        for region in ("north-america", "emea", "south-america", "apac", "north-america", "emea"):
            await hub.invoke(connection, "JoinDispatchGroup", region)
            await hub.invoke(connection, "LeaveDispatchGroup", region)
        for _ in range(120):
            await hub.send_json(connection, {"type": 6})
            hub.tick(1.0)
        assert not hub.hub_connection(connection).closed
        assert all(record.get("type") != 7 for record in sink.json_records())
        hub.hub_connection(connection).close(reason="client")


async def test_zero_turns_the_limit_off() -> None:
    hub = HubHarness(max_invocations_per_second=0)
    connection, sink = await hub.connect()
    await hub.send_json(
        connection,
        *(
            {"type": 1, "invocationId": str(n), "target": "NoSuchMethod", "arguments": []}
            for n in range(1000)
        ),
    )
    assert not hub.hub_connection(connection).closed
    assert len(sink.json_records()) == 1001


async def test_an_idle_connection_keeps_no_bucket_and_a_forgotten_bucket_limits_as_before() -> None:
    """Issue 12: the bucket is made on the first invocation and forgotten once full again, so that an
    idle connection keeps none; a bucket not yet refilled is kept, and one made anew is full."""
    hub = HubHarness(max_invocations_per_second=2, invocation_burst=3)
    connection, _ = await hub.connect()
    hub_connection = hub.hub_connection(connection)
    assert hub_connection._invocations is None  # connected, never invoked
    for n in range(3):
        await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id=f"burst-{n}")
    hub.tick(1.0)  # two tokens back of three: not full, kept
    assert hub_connection._invocations is not None
    hub.tick(1.0)  # full again: forgotten
    assert hub_connection._invocations is None
    for n in range(3):  # a new bucket: the whole burst again, and no more
        await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id=f"again-{n}")
    assert not hub_connection.closed
    await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id="one-too-many")
    assert hub_connection.closed
    assert connection.close_reason == "rate_limited"


async def test_an_idle_connection_keeps_no_reader_and_a_record_split_across_reads_still_arrives() -> None:
    """Issue 12: the message reader exists while it holds bytes of an unfinished record."""
    hub = HubHarness()
    connection, sink = await hub.connect()
    hub_connection = hub.hub_connection(connection)
    assert hub_connection._reader is None  # past the handshake, nothing half-read
    record = b'{"type":1,"invocationId":"7","target":"NoSuchMethod","arguments":[]}\x1e'
    await hub.handler.on_data(connection, record[:20])
    assert hub_connection._reader is not None  # an unfinished record: kept
    await hub.handler.on_data(connection, record[20:])
    assert hub_connection._reader is None
    assert sink.json_records()[-1]["invocationId"] == "7"
