"""The flood benchmark's clients, each in a process of its own: a bystander and a flooder.

``python -m bench.flood_clients bystander|flooder`` prints ``{"ready": true}``, then answers one JSON
line per command line on stdin (``bench.procs.LoadGenProcess`` drives it), like ``bench.loadgen``.

- **bystander**: one ordinary SignalR client (negotiate, WebSocket, JSON, ``JoinDispatchGroup``) that
  records the latency of every event it receives (the publish time is in the ``jobId``,
  ``bench.wire.job_id``), and polls ``/healthz`` back to back (``interval`` apart), recording each
  answer's latency. ``report`` returns every sample with its time; the orchestrator cuts windows.
- **flooder**: a raw client that sends ``count`` invocations of ``method`` as fast as the service
  answers them (``per_frame`` records to a WebSocket frame, at most ``window`` unanswered). With
  ``reconnect`` it is an abuser that comes back: when closed (or refused) it connects again at once
  and goes on until ``count`` are sent or ``duration`` has passed.

Both use aiohttp's client: one or two connections each, so its cost does not matter here.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson

from bench.wire import decode_job_id, now_us

_RS = b"\x1e"
_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'


class Refused(Exception):
    """The service answered a connect with an HTTP error (e.g. 429)."""

    def __init__(self, status: int, text: str, retry_after: str | None) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text
        self.retry_after = retry_after


async def _connect(
    session: aiohttp.ClientSession, base: str, path: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    """Negotiate, open the WebSocket, complete the JSON handshake."""
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(f"{base}{path}/negotiate?negotiateVersion=1", headers=headers) as response:
        if response.status != 200:
            raise Refused(response.status, await response.text(), response.headers.get("Retry-After"))
        connection_token = (await response.json())["connectionToken"]
    ws_base = base.replace("http://", "ws://", 1)
    try:
        ws = await session.ws_connect(f"{ws_base}{path}?id={connection_token}", headers=headers)
    except aiohttp.WSServerHandshakeError as error:
        raise Refused(error.status, error.message, None) from None
    await ws.send_bytes(_HANDSHAKE)
    reply = await ws.receive()
    if reply.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY) or not _as_bytes(
        reply.data
    ).startswith(b"{}"):
        raise RuntimeError(f"handshake failed: {reply!r}")
    return ws


def _as_bytes(data: Any) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class Bystander:
    def __init__(self) -> None:
        self.events: list[tuple[int, int]] = []  # (published µs, latency µs)
        self.healthz: list[tuple[int, int]] = []  # (sent µs, latency µs)
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def start(self, base: str, path: str, token: str, region: str, interval: float) -> dict[str, Any]:
        self._session = session = aiohttp.ClientSession()
        self._ws = ws = await _connect(session, base, path, token)
        invocation = {"type": 1, "invocationId": "join", "target": "JoinDispatchGroup", "arguments": [region]}
        await ws.send_bytes(orjson.dumps(invocation) + _RS)
        while True:
            message = await ws.receive()
            if b'"invocationId":"join"' in _as_bytes(message.data):
                break
        self._tasks = [
            asyncio.create_task(self._read(ws)),
            asyncio.create_task(self._poll(session, base, interval)),
        ]
        return {"joined": region}

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            data = _as_bytes(message.data)
            received = now_us()
            start = data.find(b'"jobId":"')
            while start >= 0:
                published = decode_job_id(data[start + 9 : start + 45])[0]
                self.events.append((published, received - published))
                start = data.find(b'"jobId":"', start + 45)
        self.errors.append("the bystander's connection closed")

    async def _poll(self, session: aiohttp.ClientSession, base: str, interval: float) -> None:
        while True:
            sent = now_us()
            try:
                async with session.get(f"{base}/healthz") as response:
                    await response.read()
                self.healthz.append((sent, now_us() - sent))
            except aiohttp.ClientError as error:
                self.errors.append(f"healthz: {error}")
            await asyncio.sleep(interval)

    def report(self) -> dict[str, Any]:
        return {"events": self.events, "healthz": self.healthz, "errors": self.errors[-5:]}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()


def _invocations(method: str, first: int, count: int) -> bytes:
    records = []
    for n in range(first, first + count):
        arguments = [f"f{n % 100}"] if method == "JoinDispatchGroup" else []
        records.append(
            orjson.dumps({"type": 1, "invocationId": str(n), "target": method, "arguments": arguments})
        )
    return _RS.join(records) + _RS


async def flood(
    base: str,
    path: str,
    token: str,
    *,
    method: str,
    count: int,
    per_frame: int,
    window: int,
    reconnect: bool,
    duration: float,
) -> dict[str, Any]:
    """Send ``count`` invocations; returns what happened (sent, completions, closes, refusals)."""
    started = time.monotonic()
    deadline = started + duration
    result: dict[str, Any] = {
        "sent": 0,
        "completions": 0,
        "connections": 0,
        "closes": 0,
        "close_error": None,
        "refused": {},
        "refusal_text": None,
        "retry_after": None,
    }
    async with aiohttp.ClientSession() as session:
        while result["sent"] < count and (not result["connections"] or reconnect):
            if time.monotonic() > deadline:
                break
            try:
                ws = await _connect(session, base, path, token)
            except Refused as refusal:
                key = str(refusal.status)
                result["refused"][key] = result["refused"].get(key, 0) + 1
                result["refusal_text"] = refusal.text
                result["retry_after"] = refusal.retry_after
                if not reconnect:
                    break
                continue  # an abuser does not wait
            result["connections"] += 1
            await _flood_one(ws, method, count, per_frame, window, result)
    result["seconds"] = time.monotonic() - started
    return result


async def _flood_one(
    ws: aiohttp.ClientWebSocketResponse,
    method: str,
    count: int,
    per_frame: int,
    window: int,
    result: dict[str, Any],
) -> None:
    """Flood one connection, at most ``window`` invocations unanswered (an abuser wants answers too)."""
    closed = asyncio.Event()
    progress = asyncio.Event()
    here = {"sent": 0, "completions": 0}

    async def read() -> None:
        async for message in ws:
            data = _as_bytes(message.data)
            completions = data.count(b'"type":3')
            here["completions"] += completions
            result["completions"] += completions
            progress.set()
            at = data.find(b'"type":7')
            if at >= 0:
                result["closes"] += 1
                close = orjson.loads(data[data.rfind(_RS, 0, at) + 1 : data.find(_RS, at)])
                result["close_error"] = close.get("error")
                break
        closed.set()
        progress.set()

    reader = asyncio.create_task(read())
    try:
        while result["sent"] < count and not closed.is_set():
            if here["sent"] - here["completions"] >= window:
                progress.clear()
                await asyncio.wait_for(progress.wait(), 120.0)
                continue
            n = min(per_frame, count - result["sent"])
            try:
                await ws.send_bytes(_invocations(method, result["sent"], n))
            except (ConnectionError, RuntimeError):
                break
            result["sent"] += n
            here["sent"] += n
        while here["completions"] < here["sent"] and not closed.is_set():
            progress.clear()
            await asyncio.wait_for(progress.wait(), 120.0)
    finally:
        reader.cancel()
        await ws.close()


async def serve(role: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    bystander = Bystander()

    def reply(obj: dict[str, Any]) -> None:
        out.write(orjson.dumps(obj) + b"\n")
        out.flush()

    reply({"ready": True, "role": role})
    while True:
        line = await reader.readline()
        if not line:
            break
        command = orjson.loads(line)
        op = command.pop("op")
        try:
            if op == "start" and role == "bystander":
                reply(await bystander.start(**command))
            elif op == "report" and role == "bystander":
                reply(bystander.report())
            elif op == "flood" and role == "flooder":
                reply(await flood(**command))
            elif op == "quit":
                await bystander.close()
                reply({})
                break
            else:
                reply({"error": f"unknown op {op!r} for the {role}"})
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which fails the run
            reply({"error": f"{type(error).__name__}: {error}"})


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role not in ("bystander", "flooder"):
        sys.exit("usage: python -m bench.flood_clients bystander|flooder")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(role))
    else:
        uvloop.run(serve(role))


if __name__ == "__main__":
    main()
