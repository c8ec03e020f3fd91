"""The per-connection buffer bound, and the one burst a replay may take past it.

A client that reads nothing fills at most ``HUB_MAX_BUFFERED_BYTES`` and is then refused (the caller
drops it). A replay is granted its own size once: it may exceed the bound until the buffer has
drained back within it (seen by the next heartbeat), after which the bound is the bound again.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from service.connections import Outgoing
from service.protocol import TransferFormat
from service.transports.outbox import Outbox
from service.transports.websockets import WebSocketSink, build_frame
from service.write_batch import WriteBatch


class SlowTransport:
    """A socket whose kernel buffer only grows until the test drains it."""

    def __init__(self) -> None:
        self.buffered = 0

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default  # no socket: the kernel's queue is not known

    def write(self, data: bytes) -> None:
        self.buffered += len(data)


def _sink(transport: SlowTransport, max_buffered: int) -> WebSocketSink:
    connection: Any = SimpleNamespace(transfer_format=TransferFormat.TEXT)
    fake: Any = transport
    return WebSocketSink(fake, connection, batch=WriteBatch(), max_buffered=max_buffered, send_timeout=10)


def test_a_websocket_that_reads_nothing_is_refused_past_the_bound_unless_granted() -> None:
    transport = SlowTransport()
    out = Outgoing(b"x" * 90)
    frame = len(build_frame(out.payload, binary=False))
    sink = _sink(transport, max_buffered=3 * frame)
    assert all(sink.write(out) for _ in range(3))
    assert not sink.write(out)  # the bound
    sink.grant(2 * frame)  # a replay of two more
    assert sink.write(out)
    assert sink.write(out)
    assert not sink.write(out)  # the grant is used up
    transport.buffered = 0  # the client read everything …
    assert not sink.is_stalled(now=0.0)  # … which the next heartbeat notices: the burst is over
    assert all(sink.write(out) for _ in range(3))
    assert not sink.write(out)  # and the bound is the bound again


def test_an_outbox_takes_a_granted_burst_once() -> None:
    outbox = Outbox(limit=100)
    assert outbox.put(b"x" * 100)
    assert not outbox.put(b"y")
    outbox.grant(50)
    assert outbox.put(b"y" * 50)
    assert not outbox.put(b"z")
    assert outbox.take() == b"x" * 100 + b"y" * 50
    outbox.settle()  # the heartbeat: drained, the burst is over
    assert outbox.put(b"x" * 100)
    assert not outbox.put(b"y")  # drained below the bound: the grant ended with the burst


def test_the_send_timeout_times_queued_bytes_and_takes_only_drained_bytes_for_progress() -> None:
    transport = SlowTransport()
    out = Outgoing(b"x" * 90)
    sink = _sink(transport, max_buffered=1 << 20)  # send timeout 10 s
    assert sink.write(out)
    assert not sink.is_stalled(now=0.0)  # bytes wait: the clock starts
    transport.buffered += 6  # a pong aiohttp wrote: queued, but not ours — it must not look like progress
    assert sink.write(out)  # more bytes for a client that reads nothing: not progress either
    assert not sink.is_stalled(now=5.0)
    assert sink.is_stalled(now=10.5)
    assert sink.stall_cause == "send_timeout"
    transport.buffered -= 50  # the client read something: the clock starts again
    assert not sink.is_stalled(now=11.0)
    assert not sink.is_stalled(now=20.0)
    assert sink.is_stalled(now=21.5)
