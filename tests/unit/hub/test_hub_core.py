"""The hub core without sockets: lifetime manager, dispatcher, connection lifecycle, replay buffer.

Connections here are real ``HttpConnection``/``HubConnection`` objects whose transport is an
in-memory sink that records what would have gone on the wire.
"""

from __future__ import annotations

import json
import time
import uuid

import msgpack
import pytest

from config.settings import Transport
from service.auth import GroupPolicy, Principal
from service.connections import ConnectionManager, HttpConnection, Outgoing
from service.hub import HubConnectionHandler, HubOptions, recommendations_hub
from service.hub.replay import ReplayBuffer
from service.protocol import InvalidMessageError

JSON_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
MSGPACK_HANDSHAKE = b'{"protocol":"messagepack","version":1}\x1e'


class RecordingSink:
    def __init__(self, *, accept: bool = True) -> None:
        self.accept = accept
        self.written: list[Outgoing] = []
        self.closed = False

    def write(self, out: Outgoing) -> bool:
        if not self.accept:
            return False
        self.written.append(out)
        return True

    def is_stalled(self, now: float) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    @property
    def drained(self) -> bool:
        return True

    def json_records(self) -> list[dict[str, object]]:
        data = b"".join(out.payload for out in self.written)
        return [json.loads(part) for part in data.split(b"\x1e")[:-1]]


def principal(*, roles: tuple[str, ...] = ("Admin",), regions: tuple[str, ...] = ()) -> Principal:
    return Principal(
        subject=str(uuid.uuid4()),
        username=None,
        token_use="access",
        roles=frozenset(roles),
        regions=frozenset(regions),
        contractor_id=None,
        expires_at=time.time() + 3600,
    )


class Hub:
    def __init__(self, **options: object) -> None:
        self.handler = HubConnectionHandler(
            recommendations_hub,
            options=HubOptions(**options),
            policy=GroupPolicy(),  # type: ignore[arg-type]
        )
        self.manager = ConnectionManager(self.handler, disconnect_timeout=15)
        self.handler.bind(self.manager)
        self.lifetime = self.handler.lifetime

    async def connect(
        self,
        handshake: bytes = JSON_HANDSHAKE,
        *,
        sink: RecordingSink | None = None,
        **principal_args: object,
    ) -> tuple[HttpConnection, RecordingSink]:
        sink = sink or RecordingSink()
        connection = self.manager.create(
            principal=principal(**principal_args),  # type: ignore[arg-type]
            negotiate_version=1,
            stateful_reconnect=False,
        )
        self.manager.attach(connection, Transport.WEBSOCKETS, sink)
        await self.handler.on_data(connection, handshake)
        return connection, sink

    async def invoke(
        self, connection: HttpConnection, target: str, *args: object, invocation_id: str = "1"
    ) -> None:
        record = {"type": 1, "target": target, "arguments": list(args), "invocationId": invocation_id}
        await self.handler.on_data(connection, json.dumps(record).encode() + b"\x1e")

    def hub_connection(self, connection: HttpConnection):  # type: ignore[no-untyped-def]
        hub_connection = self.lifetime.get(connection.connection_id)
        assert hub_connection is not None
        return hub_connection


async def test_group_send_serializes_once_per_protocol() -> None:
    hub = Hub()
    members = [await hub.connect() for _ in range(3)] + [
        await hub.connect(MSGPACK_HANDSHAKE) for _ in range(2)
    ]
    for connection, _ in members:
        hub.lifetime.add_to_group(hub.hub_connection(connection), "dispatch/north-america")
    for _, sink in members:
        sink.written.clear()

    assert hub.lifetime.send_to_groups(["dispatch/north-america"], "RecommendationReady", {"x": 1}) == 5
    json_outs = {id(sink.written[0]) for _, sink in members[:3]}
    msgpack_outs = {id(sink.written[0]) for _, sink in members[3:]}
    assert len(json_outs) == 1  # the very same bytes object for every JSON member …
    assert len(msgpack_outs) == 1  # … and for every MessagePack member
    assert json_outs != msgpack_outs
    assert members[0][1].json_records() == [
        {"type": 1, "target": "RecommendationReady", "arguments": [{"x": 1}]}
    ]
    payload = members[3][1].written[0].payload
    assert msgpack.unpackb(payload[1:]) == [1, {}, None, "RecommendationReady", [{"x": 1}], []]


async def test_each_connection_once_across_groups_and_only_members() -> None:
    hub = Hub()
    (both, both_sink), (one, one_sink), (_, none_sink) = [await hub.connect() for _ in range(3)]
    for group in ("dispatch/a", "contractor/x"):
        hub.lifetime.add_to_group(hub.hub_connection(both), group)
    hub.lifetime.add_to_group(hub.hub_connection(one), "dispatch/a")
    for sink in (both_sink, one_sink, none_sink):
        sink.written.clear()
    assert hub.lifetime.send_to_groups(["dispatch/a", "contractor/x"], "JobAssigned", {}) == 2
    assert len(both_sink.written) == 1
    assert len(one_sink.written) == 1
    assert none_sink.written == []
    assert hub.lifetime.send_to_groups(["dispatch/nobody"], "JobAssigned", {}) == 0


async def test_a_member_that_cannot_keep_up_is_closed_and_the_others_are_served() -> None:
    hub = Hub()
    (slow, slow_sink), (fast, fast_sink) = await hub.connect(), await hub.connect()
    for connection in (slow, fast):
        hub.lifetime.add_to_group(hub.hub_connection(connection), "dispatch/a")
    slow_sink.accept = False
    assert hub.lifetime.send_to_groups(["dispatch/a"], "RecommendationReady", {"n": 1}) == 1
    assert slow_sink.closed
    assert hub.lifetime.get(slow.connection_id) is None
    assert hub.lifetime.group_size("dispatch/a") == 1
    assert fast_sink.json_records()[-1]["arguments"] == [{"n": 1}]


async def test_close_leaves_every_group_and_empty_groups_disappear() -> None:
    hub = Hub()
    connection, _ = await hub.connect()
    hub_connection = hub.hub_connection(connection)
    for group in ("dispatch/a", "dispatch/b"):
        hub.lifetime.add_to_group(hub_connection, group)
    hub.lifetime.add_to_group(hub_connection, "dispatch/a")  # twice is a no-op
    assert hub.lifetime.group_count == 2
    hub.manager.dispose(connection)
    assert hub.lifetime.group_count == 0
    assert len(hub.lifetime) == 0
    assert len(hub.handler) == 0


async def test_joins_go_through_the_policy() -> None:
    hub = Hub()
    connection, sink = await hub.connect(roles=("Dispatcher",), regions=("north-america",))
    await hub.invoke(connection, "JoinDispatchGroup", "north-america", invocation_id="ok")
    await hub.invoke(connection, "JoinDispatchGroup", "europe", invocation_id="no")
    records = sink.json_records()
    assert records[1] == {"type": 3, "invocationId": "ok"}
    assert records[2]["invocationId"] == "no"
    assert "Not authorized" in str(records[2]["error"])
    assert hub.lifetime.group_size("dispatch/north-america") == 1
    assert hub.lifetime.group_size("dispatch/europe") == 0


async def test_connection_in_handshake_is_not_a_member_and_gets_nothing() -> None:
    hub = Hub()
    connection, sink = await hub.connect(handshake=b'{"protocol":"json",')  # incomplete handshake
    assert hub.lifetime.get(connection.connection_id) is None
    assert hub.lifetime.send_to_all("X") == 0
    assert sink.written == []


async def test_handshake_timeout_and_client_timeout_via_tick() -> None:
    clock = [1000.0]
    hub = Hub(handshake_timeout=5.0, client_timeout=10.0, keep_alive=3.0)
    hub.handler._clock = lambda: clock[0]
    hub.handler.tick()
    _, waiting_sink = await hub.connect(handshake=b"")
    alive, alive_sink = await hub.connect()
    await hub.handler.on_data(alive, b'{"type":6}\x1e')  # arms the client timeout
    clock[0] += 4
    hub.handler.tick()
    assert alive_sink.json_records()[-1] == {"type": 6}  # keep-alive after 3 s of silence
    clock[0] += 2
    hub.handler.tick()
    assert waiting_sink.json_records() == [{"error": "Handshake was canceled."}]
    assert waiting_sink.closed
    clock[0] += 6
    hub.handler.tick()
    close = alive_sink.json_records()[-1]
    assert close["type"] == 7
    assert close["allowReconnect"] is True
    assert "ClientTimeoutInterval" in str(close["error"])


def test_replay_buffer_numbers_acks_resends_and_bounds() -> None:
    buffer = ReplayBuffer(limit=10)
    for payload in (b"aaa", b"bbb", b"ccc"):
        buffer.record_sent(payload)
    assert buffer.resend() == (1, [b"aaa", b"bbb", b"ccc"])
    buffer.ack(2)
    assert buffer.resend() == (3, [b"ccc"])
    assert buffer.buffered_bytes == 3
    buffer.ack(3)
    assert buffer.resend() == (4, [])
    buffer.record_sent(b"x" * 8)
    buffer.record_sent(b"y" * 8)  # over the limit: the oldest goes and a resume would be lossy
    assert buffer.lossy
    assert buffer.buffered_bytes <= 10
    buffer.ack(5)
    assert not buffer.lossy


def test_replay_buffer_receiving_side_skips_duplicates() -> None:
    buffer = ReplayBuffer(limit=100)
    assert [buffer.should_process() for _ in range(3)] == [True, True, True]
    assert buffer.ack_due() == 3
    assert buffer.ack_due() is None
    buffer.on_sequence(2)  # the peer replays from its message 2
    assert [buffer.should_process() for _ in range(3)] == [False, False, True]
    with pytest.raises(InvalidMessageError, match="Sequence ID greater"):
        buffer.on_sequence(9)
