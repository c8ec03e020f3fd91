"""One connection's inbound backlog yields to the others (issue 11, D28: one socket stalled everyone).

Observed by order, never by time: a recording hub method notes which connection's invocation ran,
and another connection's single invocation must run while the first one's thousands still wait.
"""

from __future__ import annotations

import asyncio
import json

from service.hub import CallerContext, HubMethods

from .harness import POLLING_LIKE, HubHarness, RecordingSink

FLOOD = 5000


def _recording_hub(order: list[str], *, messages_per_turn: int) -> HubHarness:
    async def record(caller: CallerContext, tag: str) -> None:
        order.append(tag)

    methods = HubMethods()
    methods.add("Record", record)
    # Fairness alone: the invocation rate limit (test_invocation_limits.py) would end these floods.
    return HubHarness(methods=methods, max_invocations_per_second=0, messages_per_turn=messages_per_turn)


def _record(tag: str) -> bytes:
    return json.dumps({"type": 1, "target": "Record", "arguments": [tag]}).encode() + b"\x1e"


async def test_a_frame_of_thousands_of_records_lets_another_connection_in_before_it_is_done() -> None:
    order: list[str] = []
    hub = _recording_hub(order, messages_per_turn=32)
    flooder, _ = await hub.connect()
    bystander, _ = await hub.connect()
    frame = b"".join(_record(f"flood-{n}") for n in range(FLOOD))

    await asyncio.gather(hub.manager.receive(flooder, frame), hub.manager.receive(bystander, _record("b")))

    assert len(order) == FLOOD + 1
    # The flood started first and was interrupted after one turn's worth, not after its last record.
    assert 0 < order.index("b") <= 32
    assert order.index("b") < order.index(f"flood-{FLOOD - 1}")
    assert [tag for tag in order if tag != "b"] == [f"flood-{n}" for n in range(FLOOD)]  # still in order


async def test_the_turn_spans_frames_a_socket_that_sends_one_record_per_frame_yields_too() -> None:
    # A WebSocket read loop takes already-buffered frames without waiting: the bound must count
    # records across frames, not per frame.
    order: list[str] = []
    hub = _recording_hub(order, messages_per_turn=16)
    flooder, _ = await hub.connect()
    bystander, _ = await hub.connect()

    async def one_frame_each() -> None:
        for n in range(FLOOD):
            await hub.manager.receive(flooder, _record(f"flood-{n}"))

    await asyncio.gather(one_frame_each(), hub.manager.receive(bystander, _record("b")))

    assert 0 < order.index("b") <= 16
    assert len(order) == FLOOD + 1


async def test_a_post_body_of_many_records_yields_like_a_websocket_frame() -> None:
    # Long polling and SSE clients send with POST: a body batches records like a frame does.
    order: list[str] = []
    hub = _recording_hub(order, messages_per_turn=8)
    flooder, _ = await hub.connect(sink=RecordingSink(POLLING_LIKE))
    bystander, _ = await hub.connect()
    body = b"".join(_record(f"flood-{n}") for n in range(100))

    await asyncio.gather(hub.manager.receive(flooder, body), hub.manager.receive(bystander, _record("b")))

    assert 0 < order.index("b") <= 8


async def test_a_closed_connection_stops_at_the_next_turn() -> None:
    order: list[str] = []
    hub = _recording_hub(order, messages_per_turn=10)
    flooder, _ = await hub.connect()
    hub_connection = hub.hub_connection(flooder)
    frame = b"".join(_record(f"flood-{n}") for n in range(1000))

    async def close_when_let_in() -> None:
        hub_connection.close(reason="test")

    await asyncio.gather(hub.manager.receive(flooder, frame), close_when_let_in())

    assert order == [f"flood-{n}" for n in range(10)]  # the rest of the backlog is dropped with it
