"""The heartbeat visits connections in slices: one step touches at most its share, a round all of them.

With every connection visited in one call, 10,000 connections held the event loop ~20 ms once a
second (issue 12); now a round of ``parts`` steps visits each connection exactly once.
"""

from __future__ import annotations

from service.app import heartbeat_steps
from service.connections import ConnectionState

from .harness import HubHarness, RecordingSink, make_principal


def _pinged(sinks: list[RecordingSink]) -> int:
    return sum(1 for sink in sinks if {"type": 6} in sink.json_records())


async def test_a_heartbeat_step_touches_only_its_slice_and_a_round_touches_everyone_once() -> None:
    hub = HubHarness(keep_alive=3.0)
    sinks = [(await hub.connect())[1] for _ in range(10)]
    hub.clock.advance(5)  # every connection is due a Ping
    hub.handler.tick(0, 5)
    assert _pinged(sinks) == 2
    hub.handler.tick(1, 5)
    assert _pinged(sinks) == 4
    for part in (2, 3, 4):
        hub.handler.tick(part, 5)
    assert _pinged(sinks) == 10
    # Once each: a Ping apiece, none twice.
    assert all(sink.json_records().count({"type": 6}) == 1 for sink in sinks)


async def test_a_scan_step_expires_only_its_slice() -> None:
    hub = HubHarness()
    negotiated = [
        hub.manager.create(principal=make_principal(), negotiate_version=1, stateful_reconnect=False)
        for _ in range(10)
    ]
    hub.clock.advance(20)  # past the disconnect timeout (15 s) without a transport
    hub.manager.scan(0, 5)
    assert sum(c.state is ConnectionState.CLOSED for c in negotiated) == 2
    for part in (1, 2, 3, 4):
        hub.manager.scan(part, 5)
    assert all(c.state is ConnectionState.CLOSED for c in negotiated)
    assert {c.close_reason for c in negotiated} == {"expired"}


async def test_a_connection_closed_during_a_round_is_skipped_by_the_rest_of_it() -> None:
    hub = HubHarness(keep_alive=3.0)
    connections = [await hub.connect() for _ in range(4)]
    hub.clock.advance(5)
    hub.handler.tick(0, 2)  # the round's members are the four
    last, last_sink = connections[-1]
    last.abort("test")
    before = list(last_sink.json_records())
    hub.handler.tick(1, 2)
    assert last_sink.json_records() == before


async def test_a_group_send_postpones_the_keep_alive_ping() -> None:
    """ASP.NET pings only a connection nothing was written to for KeepAliveInterval."""
    hub = HubHarness(keep_alive=3.0)
    connection, sink = await hub.connect()
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    hub.tick(2)
    hub.lifetime.send_group("dispatch/a", "ReceiveEvent", {"n": 1})
    hub.tick(2)  # 4 s since the handshake, 2 s since the event
    assert {"type": 6} not in sink.json_records()
    hub.tick(1.5)  # 3.5 s since the event
    assert sink.json_records()[-1] == {"type": 6}


def test_a_round_has_as_many_steps_as_slices_of_connections_within_bounds() -> None:
    assert heartbeat_steps(0) == 1
    assert heartbeat_steps(125) == 1
    assert heartbeat_steps(126) == 2
    # A step visits at most 125: steps of 500 held the loop up to 3-5 ms at 10,000 connections.
    assert heartbeat_steps(10_000) == 80
    assert heartbeat_steps(19_000) == 152
    assert heartbeat_steps(10_000_000) == 200


async def test_a_connection_that_gets_events_is_visited_once_a_keep_alive_interval_not_every_round() -> None:
    """What is due next is computed at each visit; rounds in between skip the connection (issue 12)."""
    hub = HubHarness(keep_alive=15.0)
    connection, sink = await hub.connect()
    hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    hub.tick(1)
    hub_connection = hub.handler.get(connection.connection_id)
    assert hub_connection is not None
    assert hub_connection.next_visit == hub_connection.last_written + 15.0
    visits = 0
    original = type(hub_connection).tick

    def counting(self: object, now: float, wall_clock: float) -> None:
        nonlocal visits
        visits += 1
        original(self, now, wall_clock)  # type: ignore[arg-type]

    type(hub_connection).tick = counting  # type: ignore[method-assign]
    try:
        for _ in range(30):  # an event a second for 30 s: never a Ping, two visits instead of 30
            hub.lifetime.send_group("dispatch/a", "ReceiveEvent", {"n": 1})
            hub.tick(1)
    finally:
        type(hub_connection).tick = original  # type: ignore[method-assign]
    assert {"type": 6} not in sink.json_records()
    assert visits <= 3


async def test_timers_still_fire_on_a_connection_that_gets_events() -> None:
    """Skipped rounds must not postpone the client timeout or the token's expiry."""
    hub = HubHarness(client_timeout=10.0, keep_alive=15.0)
    timed_out, _ = await hub.connect()
    expiring, _ = await hub.connect(principal=make_principal(expires_at=hub.clock.wall + 7.5))
    for connection in (timed_out, expiring):
        hub.lifetime.add_to_group(connection.connection_id, "dispatch/a")
    await hub.manager.receive(timed_out, b'{"type":6}\x1e')  # the first Ping arms the client timeout
    for second in range(1, 13):
        hub.lifetime.send_group("dispatch/a", "ReceiveEvent", {"n": second})
        hub.tick(1)
        if second == 8:
            assert expiring.state is ConnectionState.CLOSED
            assert expiring.close_reason == "token_expired"
            assert timed_out.state is not ConnectionState.CLOSED
    assert timed_out.state is ConnectionState.CLOSED
    assert timed_out.close_reason == "client_timeout"
