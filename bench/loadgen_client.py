"""One load-generator client: a WebSocket client on one TCP connection, as an ``asyncio.Protocol``.

It speaks its server's protocol only as far as it must (``bench.loadgen``'s docstring lists what,
per kind of server) and records what it receives in its owner's ``Stats``: the latency of every
delivery, from the publish time carried in the event's ``jobId``. A module of its own so that the
process's command loop (``bench.loadgen``) reads apart from the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from array import array
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
import orjson

from bench.wire import BROADCAST_GROUP, group_name, masked_frame, now_us
from service.protocol import BinaryRecordReader, write_binary_record

__all__ = ["Client", "Owner", "Stats", "client_factory", "negotiate"]


class Owner(Protocol):
    """What a client reports to: the process's counts."""

    stats: Stats
    lost: int


_WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
_RS = b"\x1e"
_HEX = frozenset(b"0123456789abcdef")


class Stats:
    """Deliveries by phase: latencies (µs) and first/last receive times."""

    def __init__(self) -> None:
        self.latencies: dict[int, array[int]] = {}
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def series(self, phase: int) -> array[int]:
        found = self.latencies.get(phase)
        if found is None:
            found = self.latencies[phase] = array("q")
        return found


class Client(asyncio.Protocol):
    """One WebSocket client; ``joined`` resolves once it is in its groups."""

    def __init__(self, gen: Owner, spec: dict[str, Any], index: int) -> None:
        # ``index`` is the run-wide client number (the pool's processes own disjoint ranges of it).
        self.gen = gen
        self.spec = spec
        self.kind: str = spec["kind"]
        self.binary = spec.get("protocol") == "messagepack"
        self.groups = [group_name(index % spec["groups"]), BROADCAST_GROUP]
        self.token: str = spec["tokens"][index % len(spec["tokens"])] if spec.get("tokens") else ""
        self.transport: asyncio.Transport | None = None
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.is_joined = False
        self.ws = False
        self.buf = b""
        self.step = ""
        self.pending_acks = 0
        self.connection_token = ""

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        if self.kind == "signalr":
            self.step = "upgrade"
            self._http("GET", f"{self.spec['path']}?id={self.connection_token}", upgrade=True)
        elif self.kind == "socketio":
            self.step = "upgrade"
            self._http("GET", "/socket.io/?EIO=4&transport=websocket", upgrade=True)
        else:
            self.step = "upgrade"
            self._http("GET", f"/ws?groups={','.join(self.groups)}", upgrade=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.is_joined:
            self.gen.lost += 1
        elif not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed during {self.step}: {exc}"))

    def _http(self, method: str, target: str, *, upgrade: bool) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.spec['host']}:{self.spec['port']}"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if upgrade:
            lines += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {_WS_KEY}",
                "Sec-WebSocket-Version: 13",
            ]
        else:
            lines += ["Content-Length: 0", "Connection: close"]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def _send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(masked_frame(payload, binary=self.binary))

    def _set_joined(self) -> None:
        self.is_joined = True
        self.step = "joined"
        if not self.joined.done():
            self.joined.set_result(None)

    # --- bytes in -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.ws:
            data = self._http_response(data)
            if not self.ws or not data:
                return
        # The hot path: parse frame headers, search the payload for the jobId marker.
        n = len(data)
        pos = 0
        stats = self.gen.stats
        now = 0
        while n - pos >= 2:
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = data[pos] & 0x0F
            pos = end
            if opcode == 8:
                continue  # close: connection_lost follows
            if not self.is_joined:
                self._setup_frame(data[start:end])
                continue
            i = data.find(b"jobId", start, end)
            if i < 0:
                self._control_frame(data[start:end])
                continue
            if not now:
                now = now_us()
            while i >= 0:
                j = (
                    i + 8 if data[i + 5] == 0x22 else i + 7
                )  # '"jobId":"' (JSON) or 'jobId' str8 (MessagePack)
                published = int(data[j : j + 8] + data[j + 9 : j + 13] + data[j + 14 : j + 18], 16)
                phase = int(data[j + 19 : j + 23], 16)
                series = stats.latencies.get(phase)
                if series is None:
                    series = stats.series(phase)
                    stats.first[phase] = now
                series.append(now - published)
                stats.last[phase] = now
                i = data.find(b"jobId", j + 36, end)
        if pos < n:
            self.buf = data[pos:]

    def _http_response(self, data: bytes) -> bytes:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            self.buf = data
            return b""
        head = data[:head_end].decode("latin-1")
        status = int(head.split(" ", 2)[1])
        rest = data[head_end + 4 :]
        if status != 101:
            self._fail(f"upgrade: HTTP {status}")
            return b""
        self.ws = True
        if self.kind == "signalr":
            self.step = "handshake"
            protocol = "messagepack" if self.binary else "json"
            payload = orjson.dumps({"protocol": protocol, "version": 1}) + _RS
            assert self.transport is not None
            self.transport.write(masked_frame(payload, binary=self.binary))
        elif self.kind == "socketio":
            self.step = "open"
        else:
            self._set_joined()
        return rest

    # --- setup frames (cold path) -------------------------------------------------------------

    def _setup_frame(self, payload: bytes) -> None:
        if self.kind == "signalr":
            self._signalr_setup(payload)
        else:
            self._socketio_setup(payload)

    def _signalr_setup(self, payload: bytes) -> None:
        if self.step == "handshake":
            end = payload.find(_RS)
            if end < 0:
                self._fail("handshake: no record separator")
                return
            if payload[:end] != b"{}":
                self._fail(f"handshake refused: {payload[:end]!r}")
                return
            self.step = "join"
            self.pending_acks = len(self.groups)
            records = b"".join(self._invocation(str(n + 1), group) for n, group in enumerate(self.groups))
            self._send(records)
            payload = payload[end + 1 :]
            if not payload:
                return
        if self.step != "join":
            return
        if self.binary:
            reader = BinaryRecordReader(None)
            reader.feed(payload)
            messages = [msgpack.unpackb(record) for record in iter(reader.next_record, None)]
            completions = [m for m in messages if m[0] == 3]
            errors = [m for m in completions if m[3] == 1]
        else:
            decoded = [orjson.loads(r) for r in payload.split(_RS) if r]
            completions = [m for m in decoded if m.get("type") == 3]
            errors = [m for m in completions if "error" in m]
        if errors:
            self._fail(f"join refused: {errors[0]}")
            return
        self.pending_acks -= len(completions)
        if self.pending_acks <= 0:
            self._set_joined()

    def _invocation(self, invocation_id: str, region: str) -> bytes:
        if self.binary:
            record: bytes = msgpack.packb([1, {}, invocation_id, "JoinDispatchGroup", [region], []])
            return write_binary_record(record)
        return (
            orjson.dumps(
                {
                    "type": 1,
                    "invocationId": invocation_id,
                    "target": "JoinDispatchGroup",
                    "arguments": [region],
                }
            )
            + _RS
        )

    def _socketio_setup(self, payload: bytes) -> None:
        if payload == b"2":
            self._send(b"3")
        elif self.step == "open" and payload.startswith(b"0"):
            self.step = "namespace"
            self._send(b"40")
        elif self.step == "namespace" and payload.startswith(b"40"):
            self.step = "join"
            self.pending_acks = len(self.groups)
            for n, group in enumerate(self.groups):
                self._send(b"42" + str(n + 1).encode() + json.dumps(["join", group]).encode())
        elif self.step == "join" and payload.startswith(b"43"):
            self.pending_acks -= 1
            if self.pending_acks == 0:
                self._set_joined()
        elif payload.startswith(b"44"):
            self._fail(f"socket.io connect error: {payload!r}")

    def _control_frame(self, payload: bytes) -> None:
        if self.kind == "socketio" and payload == b"2":
            self._send(b"3")  # Engine.IO v4: the server pings, the client pongs

    def abort(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # RST instead of FIN: no TIME_WAIT piles up across servers and runs.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def client_factory(client: Client) -> Callable[[], Client]:
    """``create_connection``'s protocol factory for an already built client."""
    return lambda: client


async def negotiate(spec: dict[str, Any], token: str) -> tuple[str, str | None]:
    """``POST {hub}/negotiate?negotiateVersion=1`` on its own connection, as browsers do: the connection
    token, and the ``accessToken`` the answer carries, if any. The official JS and .NET clients send
    that access token on the connection's later requests instead of their own (a connection ticket,
    ``service/auth/tickets.py``), so the load generator does too."""
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    try:
        request = (
            f"POST {spec['path']}/negotiate?negotiateVersion=1 HTTP/1.1\r\n"
            f"Host: {spec['host']}:{spec['port']}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        response = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise ConnectionError(f"negotiate: HTTP {status}")
    answer = orjson.loads(body)
    connection_token = answer.get("connectionToken") or answer.get("connectionId")
    if not connection_token:
        raise ConnectionError(f"negotiate: {answer}")
    access_token = answer.get("accessToken")
    return str(connection_token), str(access_token) if access_token else None
