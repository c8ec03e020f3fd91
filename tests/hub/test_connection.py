"""One hub connection's life without sockets: handshake, timers, token expiry, stateful resume, Close.

The clock is moved by hand and the heartbeat called directly, so every timer is exact and no test
sleeps.
"""

from __future__ import annotations

import math

import pytest

from config.settings import Transport
from service.connections import ConnectionState

from .harness import (
    JSON_HANDSHAKE,
    MSGPACK_HANDSHAKE,
    POLLING_LIKE,
    TEXT_ONLY,
    HubHarness,
    RecordingSink,
    make_principal,
)

STATEFUL_HANDSHAKE = b'{"protocol":"json","version":2}\x1e'


# --- handshake ------------------------------------------------------------------------------------


async def test_handshake_reply_and_pipelined_messages_are_processed_in_order() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect(handshake=b"")
    invocation = b'{"type":1,"invocationId":"1","target":"LeaveDispatchGroup","arguments":["emea"]}\x1e'
    await hub.manager.receive(connection, JSON_HANDSHAKE + invocation)
    assert sink.json_records() == [{}, {"type": 3, "invocationId": "1"}]
    assert len(hub.lifetime) == 1


async def test_a_protocol_the_transport_cannot_carry_is_refused_in_the_handshake() -> None:
    hub = HubHarness()
    _, sink = await hub.connect(MSGPACK_HANDSHAKE, sink=RecordingSink(TEXT_ONLY))
    assert sink.json_records() == [
        {
            "error": "Cannot use the 'messagepack' protocol on the current transport. The transport does not "
            "support 'Binary' transfer format."
        }
    ]
    assert sink.closed
    assert len(hub.lifetime) == 0


async def test_a_connection_in_its_handshake_is_not_a_member_of_anything() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect(handshake=b'{"protocol":"json",')
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    assert hub.lifetime.send_all("X") == 0
    assert sink.written == []


async def test_the_handshake_times_out() -> None:
    hub = HubHarness(handshake_timeout=5.0)
    connection, sink = await hub.connect(handshake=b"")
    hub.tick(4)
    assert sink.written == []
    hub.tick(2)
    assert sink.json_records() == [{"error": "Handshake was canceled."}]
    assert sink.closed
    assert connection.close_reason == "handshake_failed"


# --- keep-alive and client timeout ----------------------------------------------------------------


async def test_pings_go_out_only_after_keep_alive_silence() -> None:
    hub = HubHarness(keep_alive=3.0)
    _, sink = await hub.connect()
    hub.tick(2)
    assert sink.json_records() == [{}]
    hub.tick(1.5)
    assert sink.json_records() == [{}, {"type": 6}]
    hub.tick(1)  # a Ping was just written: the next is due 3 s after it
    assert sink.json_records() == [{}, {"type": 6}]


async def test_pings_due_together_are_written_over_several_rounds_not_in_one() -> None:
    """Clients that connected together (a storm, every client of a redeployed instance) are due for a
    Ping together, every keep-alive interval, while they stay idle: one heartbeat step wrote them all
    at once and held the event loop for every event behind it (issue 12, PingBudget)."""
    hub = HubHarness(keep_alive=10.0)
    sinks = [(await hub.connect())[1] for _ in range(100)]
    budget = max(16, math.ceil(2 * 100 / 10.0))  # per step: twice the average need of idle clients

    def pings() -> list[int]:
        return [sum(record == {"type": 6} for record in sink.json_records()) for sink in sinks]

    per_round = []
    for _ in range(40):
        before = sum(pings())
        hub.tick(1)
        per_round.append(sum(pings()) - before)
    first = next(i for i, count in enumerate(per_round) if count)
    assert max(per_round) <= budget  # not a hundred at once
    assert sum(per_round[first : first + 5]) == 100  # the last of them 4 rounds late (the client waits 30 s)
    assert all(count >= 3 for count in pings())  # and everyone keeps getting them, every ~10 s


async def test_a_transport_with_inherent_keep_alive_gets_no_pings() -> None:
    hub = HubHarness(keep_alive=3.0)
    _, sink = await hub.connect(sink=RecordingSink(POLLING_LIKE))
    hub.tick(10)
    assert sink.json_records() == [{}]


async def test_the_client_timeout_starts_with_the_first_ping() -> None:
    hub = HubHarness(client_timeout=10.0, keep_alive=100.0)
    never_pings, quiet_sink = await hub.connect()
    pinged, pinged_sink = await hub.connect()
    await hub.send_json(pinged, {"type": 6})
    hub.tick(11)
    close = pinged_sink.json_records()[-1]
    assert close == {
        "type": 7,
        "error": "Connection closed with an error. Client hasn't sent a message/ping within the "
        "configured ClientTimeoutInterval.",
        "allowReconnect": True,
    }
    assert pinged.close_reason == "client_timeout"
    assert never_pings.state is ConnectionState.ACTIVE  # never armed: long-polling-style clients stay
    assert quiet_sink.json_records() == [{}]


# --- token expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("close_on_expiry", [True, False])
async def test_an_expired_token_closes_the_connection_with_reconnect_allowed(close_on_expiry: bool) -> None:
    hub = HubHarness(close_on_authentication_expiration=close_on_expiry)
    connection, sink = await hub.connect(principal=make_principal(expires_at=hub.clock.wall + 5))
    hub.tick(4)
    assert connection.state is ConnectionState.ACTIVE
    hub.tick(2)
    if close_on_expiry:
        assert sink.json_records()[-1] == {"type": 7, "allowReconnect": True}
        assert connection.close_reason == "token_expired"
        assert sink.closed
    else:
        assert connection.state is ConnectionState.ACTIVE


# --- closing --------------------------------------------------------------------------------------


async def test_a_client_close_is_answered_with_close_and_ends_the_connection() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect()
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    await hub.send_json(connection, {"type": 7})
    assert sink.json_records() == [{}, {"type": 7}]
    assert sink.closed
    assert connection.close_reason == "client"
    assert hub.lifetime.group_count == 0
    assert len(hub.handler) == 0


async def test_invalid_input_closes_with_an_error_the_client_can_read() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect()
    await hub.manager.receive(connection, b'{"type":1,"target":42}\x1e')
    close = sink.json_records()[-1]
    assert close["type"] == 7
    assert close["allowReconnect"] is True
    assert str(close["error"]).startswith("Connection closed with an error. InvalidDataException: ")
    assert connection.close_reason == "protocol_error"


async def test_a_message_over_the_size_limit_closes_the_connection() -> None:
    hub = HubHarness(max_message_size=64)
    connection, sink = await hub.connect()
    await hub.manager.receive(connection, b'{"type":1,"target":"' + b"x" * 100)
    close = sink.json_records()[-1]
    assert close["type"] == 7
    assert "maximum message size of 64B was exceeded" in str(close["error"])


async def test_a_slow_member_of_a_group_send_is_closed_as_slow_client() -> None:
    hub = HubHarness()
    slow, slow_sink = await hub.connect()
    fast, fast_sink = await hub.connect()
    for connection in (slow, fast):
        hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    slow_sink.accept = False
    assert hub.lifetime.send_group("dispatch/a", "E", 1) == 1
    assert slow.close_reason == "slow_client"
    assert slow_sink.closed
    assert fast_sink.json_records()[-1] == {"type": 1, "target": "E", "arguments": [1]}


async def test_shutdown_closes_every_client_with_reconnect_allowed() -> None:
    hub = HubHarness()
    connected, connected_sink = await hub.connect()
    waiting, waiting_sink = await hub.connect(handshake=b"")
    hub.handler.close_all(allow_reconnect=True, reason="shutdown")
    assert connected_sink.json_records()[-1] == {"type": 7, "allowReconnect": True}
    assert waiting_sink.written == []  # no protocol yet: nothing it could read
    assert (connected.close_reason, waiting.close_reason) == ("shutdown", "shutdown")


# --- stateful reconnect ---------------------------------------------------------------------------


async def test_stateful_resume_sends_sequence_then_everything_unacked() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect(STATEFUL_HANDSHAKE, stateful_reconnect=True)
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    for n in (1, 2, 3):
        hub.lifetime.send_group("dispatch/a", "E", n)
    await hub.send_json(connection, {"type": 8, "sequenceId": 1})  # the client processed the first
    hub.manager.detach(connection, sink, keep_alive=True)
    assert connection.state is ConnectionState.INACTIVE
    hub.lifetime.send_group("dispatch/a", "E", 4)  # sent while away: kept for the resume
    second = RecordingSink()
    assert hub.manager.attach(connection, Transport.WEBSOCKETS, second)
    assert second.json_records() == [
        {"type": 9, "sequenceId": 2},
        {"type": 1, "target": "E", "arguments": [2]},
        {"type": 1, "target": "E", "arguments": [3]},
        {"type": 1, "target": "E", "arguments": [4]},
    ]
    assert hub.lifetime.groups_of(connection.connection_id) == {"dispatch/a"}


async def test_stateful_acks_are_sent_for_what_the_client_sent() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect(STATEFUL_HANDSHAKE, stateful_reconnect=True)
    await hub.invoke(connection, "LeaveDispatchGroup", "emea", invocation_id="1")
    hub.tick(1)
    assert {"type": 8, "sequenceId": 1} in sink.json_records()


async def test_a_resume_after_the_replay_buffer_overflowed_is_refused() -> None:
    hub = HubHarness(replay_buffer_size=100)
    connection, sink = await hub.connect(STATEFUL_HANDSHAKE, stateful_reconnect=True)
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    hub.manager.detach(connection, sink, keep_alive=True)
    for n in range(10):
        hub.lifetime.send_group("dispatch/a", "E", "x" * 20 + str(n))
    second = RecordingSink()
    hub.manager.attach(connection, Transport.WEBSOCKETS, second)
    # A Sequence first: the official clients drop whatever precedes it after a reconnect.
    assert second.json_records() == [
        {"type": 9, "sequenceId": 1},
        {
            "type": 7,
            "error": "Connection closed with an error. Messages were dropped while the connection was away.",
            "allowReconnect": True,
        },
    ]
    assert connection.close_reason == "resume_lossy"


async def test_a_resume_after_an_overflow_the_client_had_acked_replays_the_rest() -> None:
    hub = HubHarness(replay_buffer_size=100)
    connection, sink = await hub.connect(STATEFUL_HANDSHAKE, stateful_reconnect=True)
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    for n in range(8):
        hub.lifetime.send_group("dispatch/a", "E", str(n))  # ids 1-8, the oldest dropped
    await hub.send_json(connection, {"type": 8, "sequenceId": 6})  # the client got up to 6
    hub.manager.detach(connection, sink, keep_alive=True)
    second = RecordingSink()
    hub.manager.attach(connection, Transport.WEBSOCKETS, second)
    assert second.json_records() == [
        {"type": 9, "sequenceId": 7},
        {"type": 1, "target": "E", "arguments": ["6"]},
        {"type": 1, "target": "E", "arguments": ["7"]},
    ]
    assert connection.close_reason is None


async def test_without_stateful_reconnect_a_version_2_handshake_is_not_resumable() -> None:
    hub = HubHarness()
    connection, _ = await hub.connect(STATEFUL_HANDSHAKE, stateful_reconnect=False)
    assert not connection.resumable
    polling, _ = await hub.connect(
        STATEFUL_HANDSHAKE, stateful_reconnect=True, sink=RecordingSink(POLLING_LIKE)
    )
    assert not polling.resumable  # the transport cannot resume
