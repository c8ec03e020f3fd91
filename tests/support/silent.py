"""Clients that stop reading: raw sockets that join a group, then never read another byte.

A real client that stops reading (a frozen tab, a phone that lost radio, a stuck proxy) keeps its TCP
connection open and its receive window shut. These do the same on loopback: the socket stays open,
its receive buffer is small (``SO_RCVBUF``, set before connecting, as a busy peer's would be), and
after the join's completion nothing is read any more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from urllib.parse import urlsplit

import aiohttp

from tests.support.wire import RS, RawLongPollingClient, negotiate

__all__ = ["SilentClient", "silent_long_polling", "silent_server_sent_events", "silent_websocket"]

_JOIN = {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"], "invocationId": "0"}
_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
_COMPLETION = b'"invocationId":"0"'
RECEIVE_BUFFER = 4096


class SilentClient:
    """The open socket of a client that no longer reads (``close`` ends it)."""

    def __init__(self, connection_id: str, writer: asyncio.StreamWriter | None) -> None:
        self.connection_id = connection_id
        self._writer = writer
        if writer is not None:
            # From now on nothing leaves the kernel's receive buffer (asyncio would otherwise keep
            # reading into the StreamReader's own buffer, up to 128 KB).
            writer.transport.pause_reading()  # type: ignore[attr-defined]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):  # the server aborted it first, as it should
                await self._writer.wait_closed()


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return await asyncio.open_connection(sock=sock)


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, f"the server closed before {marker!r}: {data!r}"
        data += chunk
    return data


def _request(method: str, url: str, token: str, connection_token: str, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    lines = [
        f"{method} {parts.path}?id={connection_token} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Authorization: Bearer {token}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _masked(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 §5.3), payload under 126 bytes or 16-bit length."""
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE]) + length.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def silent_websocket(session: aiohttp.ClientSession, hub_url: str, token: str) -> SilentClient:
    negotiated = await negotiate(session, hub_url, token)
    reader, writer = await _open(hub_url)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    writer.write(_request("GET", hub_url, token, negotiated["connectionToken"], upgrade))
    head = await _read_until(reader, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(_masked(_HANDSHAKE + json.dumps(_JOIN).encode() + RS))
    await _read_until(reader, _COMPLETION)
    return SilentClient(negotiated["connectionId"], writer)


async def silent_server_sent_events(session: aiohttp.ClientSession, hub_url: str, token: str) -> SilentClient:
    negotiated = await negotiate(session, hub_url, token)
    reader, writer = await _open(hub_url)
    stream = {"Accept": "text/event-stream"}
    writer.write(_request("GET", hub_url, token, negotiated["connectionToken"], stream))
    await _read_until(reader, b":\r\n")  # the stream is open
    params = {"id": negotiated["connectionToken"]}
    headers = {"Authorization": f"Bearer {token}"}
    body = _HANDSHAKE + json.dumps(_JOIN).encode() + RS
    async with session.post(hub_url, params=params, headers=headers, data=body) as response:
        assert response.status == 200
    await _read_until(reader, _COMPLETION)
    return SilentClient(negotiated["connectionId"], writer)


async def silent_long_polling(session: aiohttp.ClientSession, hub_url: str, token: str) -> SilentClient:
    """Joins, then never polls again (its messages pile up in the server's buffer)."""
    client = await RawLongPollingClient.connect(session, hub_url, token)
    return SilentClient(client.negotiated["connectionId"], None)
