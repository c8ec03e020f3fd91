"""Write coalescing under load (``service.write_batch.WriteBatch`` with ``WebSocketSink``).

While the consumer holds the batch, a WebSocket sink keeps frames and writes them as one write per
socket on flush; bytes and order are exactly those of unbatched writes, the buffered bytes count
against the slow-client bound, and a close flushes first. Not held, a write goes straight out.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from service.connections import Outgoing
from service.protocol import TransferFormat
from service.transports.websockets import WebSocketSink, build_frame
from service.write_batch import WriteBatch


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.buffered = 0

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default  # no socket: the kernel's queue is not known

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))


BATCH = WriteBatch()


def _sink(transport: FakeTransport, *, max_buffered: int = 1 << 20) -> WebSocketSink:
    # Test doubles typed Any: the sink reads only these attributes of the transport and connection.
    connection: Any = SimpleNamespace(transfer_format=TransferFormat.TEXT)
    fake: Any = transport
    return WebSocketSink(fake, connection, batch=BATCH, max_buffered=max_buffered, send_timeout=10.0)


@pytest.fixture(autouse=True)
def _released() -> Iterator[None]:
    yield
    while BATCH.held:
        BATCH.release()


def test_not_held_writes_go_straight_to_the_transport() -> None:
    transport = FakeTransport()
    sink = _sink(transport)
    assert sink.write(Outgoing(b"one\x1e"))
    assert transport.writes == [build_frame(b"one\x1e", binary=False)]


def test_held_writes_are_one_write_per_socket_in_order_on_flush() -> None:
    first, second = FakeTransport(), FakeTransport()
    sinks = [_sink(first), _sink(second)]
    messages = [Outgoing(f"event {n}\x1e".encode()) for n in range(3)]
    BATCH.hold()
    for out in messages:
        for sink in sinks:
            assert sink.write(out)
    assert first.writes == second.writes == []
    BATCH.flush()
    expected = b"".join(build_frame(out.payload, binary=False) for out in messages)
    assert first.writes == second.writes == [expected]
    assert BATCH.held  # flush writes, and the batch stays held until released
    assert sinks[0].write(Outgoing(b"later\x1e"))
    BATCH.release()
    assert first.writes[-1] == build_frame(b"later\x1e", binary=False)


def test_held_bytes_count_against_the_slow_client_bound() -> None:
    transport = FakeTransport()
    frame_size = len(build_frame(b"x" * 90, binary=False))
    sink = _sink(transport, max_buffered=2 * frame_size)
    BATCH.hold()
    assert sink.write(Outgoing(b"x" * 90))
    assert sink.write(Outgoing(b"x" * 90))
    assert not sink.write(Outgoing(b"x" * 90))  # a third would exceed the bound: too slow
    BATCH.release()
    assert len(transport.writes) == 1


def test_close_flushes_held_frames_first() -> None:
    transport = FakeTransport()
    sink = _sink(transport)
    BATCH.hold()
    assert sink.write(Outgoing(b"goodbye\x1e"))
    sink.flush_held()  # what close() does before the close frame
    assert transport.writes == [build_frame(b"goodbye\x1e", binary=False)]


def test_a_closing_transport_gets_nothing() -> None:
    transport = FakeTransport()
    sink = _sink(transport)
    BATCH.hold()
    assert sink.write(Outgoing(b"lost\x1e"))
    transport.closing = True
    BATCH.release()
    assert transport.writes == []
