"""RFC 6455 §5.1: an unmasked client frame closes the WebSocket with 1002 — and aiohttp alone would not.

The service is driven by a raw TCP client that writes the upgrade request and the frames byte by byte,
so it can send what no WebSocket library sends: a frame without a mask.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web_protocol
from aiohttp._websocket import reader_py
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_exceptions import WSServerHandshakeError
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from service.transports.ws_masking import MaskScanner
from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory
from tests.support.wire import RawHubClient

HANDSHAKE = b'{"protocol":"json","version":1}\x1e'


def frame(payload: bytes, *, opcode: int = 0x1, masked: bool = True, fin: bool = True) -> bytes:
    """One client frame (RFC 6455 §5.2), masked with a random key unless ``masked=False``."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# --- the premise: aiohttp's reader takes unmasked frames ------------------------------------------


def _aiohttp_readers() -> list[Any]:
    """Both of aiohttp's frame readers: pure Python, and the compiled one the service runs."""
    readers: list[Any] = [reader_py]
    with contextlib.suppress(ImportError):
        from aiohttp._websocket import reader_c  # type: ignore[attr-defined]

        readers.append(reader_c)
    return readers


@pytest.mark.parametrize("module", _aiohttp_readers(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
async def test_aiohttp_reader_accepts_an_unmasked_frame(module: Any) -> None:
    """Why ws_masking exists. If this fails, aiohttp enforces §5.1 itself: the guard may go."""
    loop = asyncio.get_running_loop()
    queue = module.WebSocketDataQueue(BaseProtocol(loop), 2**16, loop=loop)
    reader = module.WebSocketReader(queue, 2**16, compress=False, decode_text=False)
    reader.feed_data(frame(b"plain", masked=False))
    message = await queue.read()
    assert (message.type, message.data) == (WSMsgType.TEXT, b"plain")


def test_aiohttp_still_keeps_pipelined_bytes_where_ws_masking_reads_them() -> None:
    """``ws_masking.pipelined_bytes`` reads this internal; a rename would leave pipelined frames unchecked."""
    assert "_message_tail" in web_protocol.RequestHandler.__slots__


# --- the scanner, bytes in, offsets out -------------------------------------------------------------


def test_scanner_passes_masked_frames_of_every_length_form() -> None:
    scanner = MaskScanner()
    stream = frame(b"a" * 5) + frame(b"b" * 300) + frame(b"c" * 70_000) + frame(b"", opcode=0x9)
    assert scanner.feed(stream) == -1
    assert not scanner.failed


def test_scanner_points_at_the_unmasked_frame() -> None:
    scanner = MaskScanner()
    good = frame(b"x" * 200)
    assert scanner.feed(good + frame(b"bad", masked=False) + good) == len(good)
    assert scanner.failed
    assert scanner.feed(good) == 0  # once failed, nothing more is trusted


def test_scanner_finds_an_unmasked_control_frame() -> None:
    assert MaskScanner().feed(frame(b"", opcode=0x8, masked=False)) == 0


@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    bad_at=st.integers(min_value=0, max_value=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_scanner_is_indifferent_to_how_the_stream_is_cut(
    payloads: list[bytes], bad_at: int, cuts: list[int]
) -> None:
    """However reads split headers and payloads, the first unmasked frame is found at its first byte."""
    frames = [frame(p, masked=i != bad_at) for i, p in enumerate(payloads)]
    stream = b"".join(frames)
    bad_offset = sum(len(f) for f in frames[:bad_at]) if bad_at < len(frames) else None
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    scanner = MaskScanner()
    found: int | None = None
    for start, end in itertools.pairwise(bounds):
        cut = scanner.feed(stream[start:end])
        if cut >= 0:
            found = start + cut
            break
    if bad_offset is None:
        assert found is None
    else:
        # Found once its second byte (the MASK bit) is read; if its first byte came in an earlier
        # read, that byte was handed on and the cut is at the start of this read.
        assert found is not None
        assert bad_offset <= found <= bad_offset + 1


# --- the service, from a raw client ----------------------------------------------------------------


class RawSocket:
    """A TCP client that speaks WebSocket by hand (RFC 6455 §4.1 handshake, §5.2 frames)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, service: RunningService, token: str, *, pipelined: bytes = b""
    ) -> AsyncIterator[RawSocket]:
        host, port = service.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {service.settings.hub_path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        writer.write(request + pipelined)
        raw = cls(reader, writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101"), head
            yield raw
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; server frames are never masked (§5.1)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 10)
        assert not second & 0x80, "a server frame must not be masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def handshake(self) -> None:
        self.send(frame(HANDSHAKE))
        assert await self.next_frame() == (0x1, b"{}\x1e")

    async def expect_close_1002(self) -> None:
        """The next frame closes with 1002, then the server ends the TCP connection."""
        opcode, payload = await self.next_frame()
        assert opcode == 0x8, (opcode, payload)
        assert struct.unpack("!H", payload[:2])[0] == 1002
        assert payload[2:] == b"client frames must be masked"
        assert await asyncio.wait_for(self.reader.read(), 10) == b""  # EOF: no waiting for our Close


def _unmasked_count() -> float:
    return REGISTRY.get_sample_value("realtime_hub_protocol_errors_total", {"kind": "unmasked_frame"}) or 0.0


def _closed_for_protocol_error() -> float:
    sample = REGISTRY.get_sample_value("realtime_hub_connections_closed_total", {"reason": "protocol_error"})
    return sample or 0.0


async def test_unmasked_frame_closes_with_1002_and_masked_frames_still_work(
    service: RunningService, token_factory: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    before = _unmasked_count()
    closed_before = _closed_for_protocol_error()
    async with aiohttp.ClientSession() as session:
        bystander, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
        async with RawSocket.open(service, token_factory.dispatcher()) as raw:
            await raw.handshake()  # masked frames: the raw client is served like any other
            raw.send(frame(b'{"type":6}\x1e'))  # a masked Ping, then the violation
            raw.send(frame(b'{"type":6}\x1e', masked=False))
            await raw.expect_close_1002()
        await service.next_closed()
        assert _unmasked_count() == before + 1
        assert _closed_for_protocol_error() == closed_before + 1  # ended, not kept for a resume
        events = [r for r in caplog.records if "websocket.unmasked_frame" in r.getMessage()]
        assert len(events) == 1
        # The other client did not notice.
        await bystander.send(
            {"type": 1, "invocationId": "1", "target": "JoinDispatchGroup", "arguments": ["north-america"]}
        )
        assert (await bystander.next_of_type(3))["invocationId"] == "1"
        await bystander.ws.close()


async def test_unmasked_frame_in_the_middle_of_a_read_is_refused(
    service: RunningService, token_factory: TokenFactory
) -> None:
    """Masked frames ahead of it in the same read are served; the unmasked one and all after it are not."""
    async with RawSocket.open(service, token_factory.dispatcher()) as raw:
        await raw.handshake()
        raw.send(frame(b'{"type":6}\x1e') + frame(b'{"type":6}\x1e', masked=False) + frame(b"x" * 1000))
        await raw.expect_close_1002()


async def test_unmasked_frame_sent_with_the_upgrade_request_is_refused(
    service: RunningService, token_factory: TokenFactory
) -> None:
    """RFC 6455 §4.1 has clients wait for the 101; a raw client need not. Its frames are checked too."""
    before = _unmasked_count()
    async with RawSocket.open(
        service, token_factory.dispatcher(), pipelined=frame(HANDSHAKE, masked=False)
    ) as raw:
        await raw.expect_close_1002()
    assert _unmasked_count() == before + 1


async def test_masked_frames_sent_with_the_upgrade_request_are_served(
    service: RunningService, token_factory: TokenFactory
) -> None:
    async with RawSocket.open(service, token_factory.dispatcher(), pipelined=frame(HANDSHAKE)) as raw:
        assert await raw.next_frame() == (0x1, b"{}\x1e")


async def test_a_library_client_is_unaffected(service: RunningService, token_factory: TokenFactory) -> None:
    """aiohttp's client masks every frame: big, fragmented by size, control — all pass."""
    before = _unmasked_count()
    async with aiohttp.ClientSession() as session:
        client, _ = await RawHubClient.connect(session, service.hub_url, token_factory.dispatcher())
        await client.ws.ping(b"p")
        big = {"type": 1, "invocationId": "7", "target": "JoinDispatchGroup", "arguments": ["x" * 20_000]}
        await client.send(big)
        completion = await client.next_of_type(3)
        assert completion["invocationId"] == "7"
        await client.ws.close()
        with pytest.raises(WSServerHandshakeError):  # and the refusals of the endpoint are unchanged
            await session.ws_connect(service.ws_hub_url, params={"id": "unknown"})
    assert _unmasked_count() == before


def test_under_uvloop_as_in_production(tmp_path: Path) -> None:
    """The service runs on uvloop (``service.cli``), whose transports implement ``set_protocol`` anew."""
    import uvloop

    async def scenario() -> None:
        tokens = TokenFactory(tmp_path / "token-factory")
        async with running_service(hub_settings(tokens)) as service:
            assert "uvloop" in type(asyncio.get_running_loop()).__module__
            async with RawSocket.open(service, tokens.dispatcher()) as raw:
                await raw.handshake()
                raw.send(frame(b'{"type":6}\x1e', masked=False))
                await raw.expect_close_1002()
            async with RawSocket.open(
                service, tokens.dispatcher(), pipelined=frame(HANDSHAKE, masked=False)
            ) as raw:
                await raw.expect_close_1002()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
