"""The load generator: thousands of raw WebSocket clients in one uvloop process.

``python -m bench.loadgen`` reads one JSON command per line on stdin and answers one JSON line on
stdout (``connect``, ``wait``, ``close``, ``quit``); the orchestrator (``bench.cli``) drives it. A run
may start several (``--loadgen-procs``, ``bench.procs.LoadGenPool``): each owns the clients
``first`` … ``first + n - 1`` and answers with its raw samples, which ``merge_storms`` and
``merge_waits`` combine into one result as if a single process had measured them all.

Each client is an ``asyncio.Protocol`` on one TCP connection that speaks its server's protocol only as
far as it must: SignalR — ``POST negotiate`` on a connection of its own (as a browser's fetch does),
the WebSocket upgrade, handshake, two ``JoinDispatchGroup`` invocations awaited by their completions;
Socket.IO — Engine.IO v4 open, namespace connect, two acknowledged ``join`` emits, ``3`` for every
ping ``2``;
raw — the upgrade with the groups in the query. Once joined, a frame is only searched for ``jobId``;
the id itself carries the publish time and phase (``bench.wire.job_id``), so a delivery costs a
``find`` and three ``int(…, 16)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

import msgpack
import orjson

from bench.wire import BROADCAST_GROUP, group_name, masked_frame, now_us, raise_fd_limit, varint

_WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
_RS = b"\x1e"
_HEX = frozenset(b"0123456789abcdef")


def _read_varint_records(data: bytes) -> list[bytes]:
    records = []
    pos = 0
    while pos < len(data):
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        records.append(data[pos : pos + length])
        pos += length
    return records


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

    def __init__(self, gen: LoadGenerator, spec: dict[str, Any], index: int) -> None:
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
            messages = [msgpack.unpackb(record) for record in _read_varint_records(payload)]
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
            return varint(len(record)) + record
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


def _factory(client: Client) -> Callable[[], Client]:
    """``create_connection``'s protocol factory for an already built client."""
    return lambda: client


async def negotiate(spec: dict[str, Any], token: str) -> str:
    """``POST {hub}/negotiate?negotiateVersion=1`` on its own connection, as browsers do; the token."""
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
    return str(connection_token)


class LoadGenerator:
    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.stats = Stats()
        self.lost = 0

    async def connect(self, spec: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        count: int = spec["n"]
        first: int = spec.get("first", 0)  # this process's clients are first … first + count - 1
        timeout: float = spec.get("timeout", 60.0)
        concurrency: int = spec.get("concurrency", 100)
        durations = array("q")
        errors: dict[str, int] = {}
        retries = 0
        next_index = 0
        started = time.monotonic()
        deadline = started + timeout

        async def one(index: int) -> bool:
            nonlocal retries
            for attempt in range(3):
                begin = now_us()
                client = Client(self, spec, index)
                try:
                    if client.kind == "signalr":
                        client.connection_token = await asyncio.wait_for(
                            negotiate(spec, client.token), max(0.1, deadline - time.monotonic())
                        )
                    await asyncio.wait_for(
                        loop.create_connection(_factory(client), spec["host"], spec["port"]),
                        max(0.1, deadline - time.monotonic()),
                    )
                    await asyncio.wait_for(client.joined, max(0.1, deadline - time.monotonic()))
                except (OSError, TimeoutError, ValueError, IndexError) as error:
                    client.abort()
                    key = f"{type(error).__name__}: {error}"[:120]
                    errors[key] = errors.get(key, 0) + 1
                    if time.monotonic() >= deadline or attempt == 2:
                        return False
                    retries += 1
                    await asyncio.sleep(0.2)
                    continue
                durations.append(now_us() - begin)
                self.clients.append(client)
                return True
            return False

        async def worker() -> None:
            nonlocal next_index
            while next_index < count and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                await one(first + index)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
        seconds = time.monotonic() - started
        sizes: dict[str, int] = {}
        for client in self.clients:
            for group in client.groups:
                sizes[group] = sizes.get(group, 0) + 1
        return {
            "connected": len(self.clients),
            "failed": count - len(durations),
            "retries": retries,
            "errors": errors,
            "seconds": seconds,
            "connect_ms": percentiles(durations),
            "connect_us": durations.tolist(),  # raw, for merging across processes
            "group_sizes": sizes,
        }

    async def wait(
        self, phase: int, expected: int, timeout: float, idle: float, samples: bool = False
    ) -> dict[str, Any]:
        """Wait for ``expected`` deliveries of ``phase``; give up after ``timeout`` s, or ``idle`` s idle.

        ``samples``: also answer with every latency (µs), for ``merge_waits``.
        """
        started = time.monotonic()
        last_count, last_change = -1, started
        while True:
            series = self.stats.latencies.get(phase)
            count = len(series) if series is not None else 0
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            if count >= expected or now - started > timeout or now - last_change > idle:
                break
            await asyncio.sleep(0.02)
        series = self.stats.latencies.get(phase, array("q"))
        answer: dict[str, Any] = {
            "received": len(series),
            "latency_ms": percentiles(series),
            "first_us": self.stats.first.get(phase),
            "last_us": self.stats.last.get(phase),
            "lost_connections": self.lost,
        }
        if samples:
            answer["latency_us"] = series.tolist()
        return answer

    def forget(self, phase: int) -> None:
        self.stats.latencies.pop(phase, None)

    def close(self) -> dict[str, Any]:
        clients, self.clients = self.clients, []
        for client in clients:
            client.abort()
        return {"closed": len(clients)}


def percentiles(values: array[int] | list[int]) -> dict[str, float] | None:
    """p50 / p90 / p99 / max in ms of µs samples (nearest rank), or None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1000, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1] / 1000, 2)}


def merge_storms(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One storm result from the shares of processes that connected at the same time.

    Counts and group sizes add up, connect times are pooled before their percentiles are taken, and
    the storm lasted as long as its slowest share.
    """
    errors: dict[str, int] = {}
    sizes: dict[str, int] = {}
    durations: list[int] = []
    for part in parts:
        for key, count in part["errors"].items():
            errors[key] = errors.get(key, 0) + count
        for group, count in part["group_sizes"].items():
            sizes[group] = sizes.get(group, 0) + count
        durations += part["connect_us"]
    return {
        "connected": sum(part["connected"] for part in parts),
        "failed": sum(part["failed"] for part in parts),
        "retries": sum(part["retries"] for part in parts),
        "errors": errors,
        "seconds": max(part["seconds"] for part in parts),
        "connect_ms": percentiles(durations),
        "group_sizes": sizes,
        "processes": [{"connected": part["connected"], "seconds": part["seconds"]} for part in parts],
    }


def merge_waits(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's deliveries from every process's ``wait`` (asked with ``samples``): counts add up,
    latencies are pooled before their percentiles are taken, first/last are the earliest/latest."""
    latencies: list[int] = []
    for part in parts:
        latencies += part["latency_us"]
    firsts = [part["first_us"] for part in parts if part["first_us"] is not None]
    lasts = [part["last_us"] for part in parts if part["last_us"] is not None]
    return {
        "received": sum(part["received"] for part in parts),
        "latency_ms": percentiles(latencies),
        "first_us": min(firsts) if firsts else None,
        "last_us": max(lasts) if lasts else None,
        "lost_connections": sum(part["lost_connections"] for part in parts),
        "received_by_process": [part["received"] for part in parts],
    }


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gen = LoadGenerator()
    out = sys.stdout.buffer

    def reply(obj: dict[str, Any]) -> None:
        out.write(orjson.dumps(obj) + b"\n")
        out.flush()

    reply({"ready": True})
    while True:
        line = await reader.readline()
        if not line:
            break
        command = orjson.loads(line)
        op = command.pop("op")
        try:
            if op == "connect":
                reply(await gen.connect(command))
            elif op == "wait":
                reply(await gen.wait(**command))
            elif op == "forget":
                gen.forget(command["phase"])
                reply({})
            elif op == "close":
                reply(gen.close())
            elif op == "quit":
                gen.close()
                reply({})
                break
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which fails the run
            reply({"error": f"{type(error).__name__}: {error}"})


def main() -> None:
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
