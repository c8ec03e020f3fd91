"""The heartbeat's send-timeout scan asks a WebSocket again only when something can have stalled.

Asking every socket every second touched three objects per connection and was most of the
heartbeat's cost at 10,000+ connections (issue 12). A sink that found everything sent says until
when it is quiet (``Sink.quiet_until``); a write that finds bytes waiting, enough bytes unconfirmed,
or a granted burst sets the connection's ``next_scan`` back to 0.
"""

from __future__ import annotations

from typing import Any

from config.settings import Transport
from service.connections import ConnectionState, HttpConnection, Outgoing
from service.transports.websockets import WebSocketSink
from service.write_batch import WriteBatch
from tests.hub.harness import JSON_HANDSHAKE, HubHarness, make_principal

SEND_TIMEOUT = 5.0


class StuckTransport:
    """A socket whose buffer the test fills and empties by hand (no kernel behind it)."""

    def __init__(self) -> None:
        self.buffered = 0
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


class CountingSink(WebSocketSink):
    __slots__ = ("asks",)
    asks: int

    def is_stalled(self, now: float) -> bool:
        self.asks += 1
        return super().is_stalled(now)


async def _connect(hub: HubHarness) -> tuple[HttpConnection, CountingSink, StuckTransport]:
    transport = StuckTransport()
    connection = hub.manager.create(principal=make_principal(), negotiate_version=1, stateful_reconnect=False)
    fake: Any = transport
    sink = CountingSink(fake, connection, batch=WriteBatch(), max_buffered=1 << 17, send_timeout=SEND_TIMEOUT)
    sink.asks = 0
    hub.manager.attach(connection, Transport.WEBSOCKETS, sink)
    await hub.manager.receive(connection, JSON_HANDSHAKE)
    return connection, sink, transport


async def test_a_socket_that_sent_everything_is_asked_again_only_a_send_timeout_later() -> None:
    hub = HubHarness()
    _, sink, _ = await _connect(hub)
    hub.manager.scan()
    assert sink.asks == 1  # the handshake reply went out: nothing waits
    for _ in range(4):
        hub.clock.advance(1.0)
        hub.manager.scan()
    assert sink.asks == 1
    hub.clock.advance(1.0)
    hub.manager.scan()
    assert sink.asks == 2


async def test_a_write_that_finds_bytes_waiting_has_the_next_scan_time_them() -> None:
    hub = HubHarness()
    connection, sink, transport = await _connect(hub)
    hub.manager.scan()
    assert sink.asks == 1
    transport.buffered = 4096  # the client stopped reading
    assert sink.write(Outgoing(b'{"type":1,"target":"E","arguments":[]}\x1e'))
    hub.clock.advance(1.0)
    hub.manager.scan()
    assert sink.asks == 2  # asked at once, not a send timeout later
    for _ in range(int(SEND_TIMEOUT) + 1):  # no progress: dropped after the send timeout
        hub.clock.advance(1.0)
        hub.manager.scan()
    assert connection.state is ConnectionState.CLOSED
    assert connection.close_reason == "slow_client"


async def test_sockets_due_together_are_asked_over_several_rounds_not_in_one() -> None:
    """Sockets that connected together are due for their look together, a send timeout later: one
    heartbeat step asked every kernel of its slice at once (issue 12)."""
    hub = HubHarness()
    sinks = [(await _connect(hub))[1] for _ in range(200)]
    per_round = []
    for _ in range(12):
        before = sum(sink.asks for sink in sinks)
        hub.manager.scan()  # one step over all 200: at most max(16, 200 // 4) asks
        per_round.append(sum(sink.asks for sink in sinks) - before)
        hub.clock.advance(1.0)
    assert max(per_round) <= 50
    assert sum(per_round[:4]) == 200  # each asked within a few rounds
    assert all(sink.asks >= 2 for sink in sinks)  # and again a send timeout later
