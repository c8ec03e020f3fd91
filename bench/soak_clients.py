"""The soak's clients: raw SignalR clients on every transport, with positions and ``Resume``.

One ``SoakClient`` is one user on one transport and hub protocol — WebSockets with JSON or
MessagePack, Server-Sent Events or Long Polling (JSON) — connected with ``?positions=true``. It
follows the continuity pattern of the README's TypeScript client: ``Resume(groups, position)`` on
every (re)connect, positions skipped when already seen, and on any loss (``Close``, a dropped
socket, a refused request) it connects again, to an instance picked at random (a load balancer).
It counts what it was handed (``received``, before skipping seen positions) and what it kept
(``accepted``), by ``jobId``, so that the soak can check every event of its groups arrived once.

Written against the wire (HubProtocol.md, TransportProtocols.md of ASP.NET Core SignalR) with
aiohttp's client and ``msgpack``; nothing of the service is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
import orjson

from service.protocol import BinaryRecordReader, TextRecordReader, write_binary_record

__all__ = ["KINDS", "ClientStats", "SoakClient"]

HUB_PATH = "/hub/recommendations"
KINDS = ("ws-json", "ws-msgpack", "sse", "longpolling")
_RS = b"\x1e"
_PING_INTERVAL = 15.0  # HubOptions.KeepAliveInterval: what the official clients send too
_EVENT_TARGETS = frozenset({"RecommendationReady", "JobAssigned"})


class ConnectionLost(Exception):
    """The connection ended (closed by the server, dropped, or refused); the client reconnects."""


def _offset(position: str) -> int:
    return int(position.split(":", 1)[0])


@dataclass
class ClientStats:
    connects: int = 0
    losses: int = 0
    closes: int = 0  # Close messages received (reconnect allowed or not)
    resumes: Counter[str] = field(default_factory=Counter)  # "recovered" or the reason
    errors: Counter[str] = field(default_factory=Counter)


class SoakClient:
    def __init__(
        self,
        name: str,
        kind: str,
        token: str,
        groups: list[str],
        bases: list[str],
    ) -> None:
        self.name = name
        self.kind = kind
        self.token = token
        self.groups = groups
        self.bases = bases
        self.binary = kind == "ws-msgpack"
        self.position: str | None = None
        self.received: Counter[str] = Counter()  # jobId -> times handed to us
        self.accepted: Counter[str] = Counter()  # jobId -> times kept (position not seen before)
        self.stats = ClientStats()
        self.connected = False
        self.kept_at: dict[str, int] = {}  # jobId -> offset of the position it was kept with
        self.history: list[tuple[float, str]] = []  # (monotonic time, what happened), for diagnosis
        self.joined = asyncio.Event()  # set after the first Resume completed
        self._resuming = False
        self._last_during_resume: str | None = None

    # --- the life of the client -----------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Connect, resume, read; on any loss connect again (to a random instance). Until cancelled."""
        while True:
            base = random.choice(self.bases)
            self._note(f"connecting to {base}")
            try:
                await self._session(session, base)
            except (ConnectionLost, aiohttp.ClientError, OSError, TimeoutError) as error:
                self.stats.errors[type(error).__name__] += 1
                self._note(f"lost: {type(error).__name__}: {error}")
            finally:
                if self.connected:
                    self.stats.losses += 1
                self.connected = False
            await asyncio.sleep(random.uniform(0.1, 0.6))

    async def _session(self, session: aiohttp.ClientSession, base: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{base}{HUB_PATH}"
        async with session.post(
            f"{url}/negotiate?negotiateVersion=1&positions=true", headers=headers, timeout=_timeout(10)
        ) as response:
            if response.status != 200:
                raise ConnectionLost(f"negotiate {response.status}")
            answer = await response.json()
        token = answer["connectionToken"]
        if answer.get("accessToken"):  # the connection ticket: the official clients send it from here on
            headers = {"Authorization": f"Bearer {answer['accessToken']}"}
        target = f"{url}?positions=true&id={token}"
        transport = {"ws-json": self._websocket, "ws-msgpack": self._websocket, "sse": self._sse}.get(
            self.kind, self._long_polling
        )
        await transport(session, target, headers)

    # --- transports -------------------------------------------------------------------------------

    async def _websocket(self, session: aiohttp.ClientSession, target: str, headers: dict[str, str]) -> None:
        ws_url = target.replace("http://", "ws://", 1)
        async with session.ws_connect(ws_url, headers=headers, heartbeat=None) as ws:

            async def send(payload: bytes) -> None:
                if self.binary:
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload.decode())

            async def frames() -> AsyncIterator[bytes]:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        yield message.data.encode()
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        yield bytes(message.data)
                    else:
                        break

            await self._converse(frames(), send)

    async def _sse(self, session: aiohttp.ClientSession, target: str, headers: dict[str, str]) -> None:
        async def send(payload: bytes) -> None:
            await _post(session, target, headers, payload)

        async with session.get(
            target,
            headers={**headers, "Accept": "text/event-stream"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        ) as response:
            if response.status != 200:
                raise ConnectionLost(f"sse {response.status}")

            async def frames() -> AsyncIterator[bytes]:
                data: list[bytes] = []
                async for raw in response.content:
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"data:"):
                        data.append(line[5:].removeprefix(b" "))
                    elif not line and data:
                        yield b"\n".join(data)
                        data = []

            await self._converse(frames(), send)

    async def _long_polling(
        self, session: aiohttp.ClientSession, target: str, headers: dict[str, str]
    ) -> None:
        async def send(payload: bytes) -> None:
            await _post(session, target, headers, payload)

        async def frames() -> AsyncIterator[bytes]:
            while True:
                async with session.get(target, headers=headers, timeout=_timeout(120)) as response:
                    if response.status == 204:
                        return  # the server ended the connection
                    if response.status != 200:
                        raise ConnectionLost(f"poll {response.status}")
                    body = await response.read()
                if body:
                    yield body

        await self._converse(frames(), send)

    # --- the conversation, whatever the transport --------------------------------------------

    async def _converse(self, frames: AsyncIterator[bytes], send: Any) -> None:
        protocol = "messagepack" if self.binary else "json"
        handshake = orjson.dumps({"protocol": protocol, "version": 1}) + _RS
        post: asyncio.Task[None] | None = None
        if self.kind == "longpolling":
            # The first poll answers at once; the handshake is posted meanwhile.
            post = asyncio.create_task(send(handshake))
        else:
            await send(handshake)
        buffer = bytearray()  # until the handshake reply is complete
        handshaken = False
        reader = BinaryRecordReader(None) if self.binary else TextRecordReader(None)
        pinger: asyncio.Task[None] | None = None
        try:
            async for frame in frames:
                if not handshaken:
                    buffer += frame
                    end = buffer.find(_RS)
                    if end < 0:
                        continue
                    reply = orjson.loads(bytes(buffer[:end]))
                    del buffer[: end + 1]
                    if reply.get("error"):
                        raise ConnectionLost(f"handshake: {reply['error']}")
                    handshaken = True
                    self.connected = True
                    self.stats.connects += 1
                    pinger = asyncio.create_task(self._ping(send))
                    await self._start_resume(send)
                    frame = bytes(buffer)  # what came after the handshake reply
                reader.feed(frame)
                while (record := reader.next_record()) is not None:
                    message = msgpack.unpackb(record, raw=False) if self.binary else orjson.loads(record)
                    await self._handle(message)
            raise ConnectionLost("transport ended")
        finally:
            if pinger is not None:
                pinger.cancel()
            if post is not None and not post.done():
                post.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionLost):
                    await post

    async def _ping(self, send: Any) -> None:
        ping = msgpack.packb([6]) if self.binary else orjson.dumps({"type": 6}) + _RS
        frame = write_binary_record(ping) if self.binary else ping
        while True:
            await asyncio.sleep(_PING_INTERVAL)
            with contextlib.suppress(aiohttp.ClientError, OSError, ConnectionError):
                await send(frame)

    async def _start_resume(self, send: Any) -> None:
        self._resuming = True
        self._last_during_resume = None
        if self.binary:
            payload = msgpack.packb([1, {}, "resume", "Resume", [self.groups, self.position], []])
            await send(write_binary_record(payload))
        else:
            invocation = {
                "type": 1,
                "invocationId": "resume",
                "target": "Resume",
                "arguments": [self.groups, self.position],
            }
            await send(orjson.dumps(invocation) + _RS)

    async def _handle(self, message: Any) -> None:
        if self.binary:
            kind = message[0]
            if kind == 1:
                self._invoked(message[3], message[4])
            elif kind == 3:
                self._completed(message[2], message[3], message[4] if len(message) > 4 else None)
            elif kind == 7:
                self.stats.closes += 1
                raise ConnectionLost(f"Close: {message[1]}")
            return
        kind = message.get("type")
        if kind == 1:
            self._invoked(message["target"], message.get("arguments", []))
        elif kind == 3:
            result_kind = 1 if "error" in message else (3 if "result" in message else 2)
            self._completed(
                message.get("invocationId"), result_kind, message.get("error", message.get("result"))
            )
        elif kind == 7:
            self.stats.closes += 1
            raise ConnectionLost(f"Close: {message.get('error')}")

    def _invoked(self, target: str, arguments: list[Any]) -> None:
        if target == "Checkpoint":
            self._accept(arguments[0])
            return
        if target not in _EVENT_TARGETS or len(arguments) < 2:
            return
        event, position = arguments[0], arguments[1]
        job_id = str(event["jobId"])
        self.received[job_id] += 1
        if self._accept(position):
            self.accepted[job_id] += 1
            self.kept_at[job_id] = _offset(position)

    def _completed(self, invocation_id: str | None, result_kind: int, result: Any) -> None:
        if invocation_id != "resume":
            return
        self._resuming = False
        if result_kind != 3:
            self.stats.errors[f"resume failed: {result}"] += 1
            raise ConnectionLost(f"Resume failed: {result}")
        outcome = "recovered" if result.get("recovered") else str(result.get("reason"))
        self.stats.resumes[outcome] += 1
        self._note(
            f"resumed from {self.position}: {outcome}, replayed {result.get('replayed')}, "
            f"position {result.get('position')}, last during resume {self._last_during_resume}"
        )
        candidates = [p for p in (self._last_during_resume, result.get("position")) if p is not None]
        if candidates:
            best = max(candidates, key=_offset)
            if self.position is None or _offset(best) >= _offset(self.position):
                self.position = best
        self.joined.set()

    def _note(self, what: str) -> None:
        self.history.append((time.monotonic(), what))

    def _accept(self, position: str) -> bool:
        """The README's ``accept``: during a Resume everything (replay, then live, each once);
        afterwards a position not beyond the last one is a repeat and skipped."""
        if self._resuming:
            self._last_during_resume = position
            return True
        if self.position is not None and _offset(position) <= _offset(self.position):
            return False
        self.position = position
        return True


async def _post(session: aiohttp.ClientSession, target: str, headers: dict[str, str], payload: bytes) -> None:
    async with session.post(target, headers=headers, data=payload, timeout=_timeout(10)) as response:
        if response.status != 200:
            raise ConnectionLost(f"send {response.status}")
        await response.read()


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)
