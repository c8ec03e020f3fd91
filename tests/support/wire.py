"""A deliberately minimal SignalR client for wire-level tests (raw frames, exact bytes).

It parses what the server sends with plain ``json`` and ``split(b"\\x1e")`` — independent of the
protocol code under test — so that a shared bug cannot hide itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

__all__ = ["RawHubClient", "RawLongPollingClient", "negotiate", "parse_records"]

RS = b"\x1e"


async def negotiate(
    session: aiohttp.ClientSession, hub_url: str, token: str | None, *, version: int | None = 1, **query: str
) -> dict[str, Any]:
    params = dict(query)
    if version is not None:
        params["negotiateVersion"] = str(version)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(f"{hub_url}/negotiate", params=params, headers=headers) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


class RawHubClient:
    """One WebSocket speaking JSON records by hand."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._buffer = b""
        self._records: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls,
        session: aiohttp.ClientSession,
        hub_url: str,
        token: str,
        *,
        handshake: bytes | None = b'{"protocol":"json","version":1}\x1e',
        **negotiate_query: str,
    ) -> tuple[RawHubClient, dict[str, Any]]:
        negotiated = await negotiate(session, hub_url, token, version=1, **negotiate_query)
        ws = await session.ws_connect(
            hub_url.replace("http://", "ws://", 1),
            params={"id": negotiated["connectionToken"]},
            headers={"Authorization": f"Bearer {token}"},
            autoping=True,
        )
        client = cls(ws)
        if handshake is not None:
            await ws.send_bytes(handshake)
            assert await client.next_record() == {}
        return client, negotiated

    async def send(self, *records: dict[str, Any] | bytes) -> None:
        """Send records in one frame (dicts are JSON-encoded and terminated)."""
        data = b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() + RS for r in records)
        await self.ws.send_bytes(data)

    async def next_record(self, *, timeout: float = 10.0) -> dict[str, Any]:
        while not self._records:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
            if message.type is aiohttp.WSMsgType.TEXT:
                data = message.data.encode()
            elif message.type is aiohttp.WSMsgType.BINARY:
                data = message.data
            else:
                raise ConnectionError(f"socket ended: {message.type.name} {self.ws.close_code}")
            # Every server frame holds only complete records (the JS client requires it).
            assert data.endswith(RS), data
            self._records.extend(json.loads(part) for part in data.split(RS)[:-1])
        return self._records.pop(0)

    async def next_of_type(self, message_type: int, *, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            record = await self.next_record(timeout=timeout)
            if record.get("type") == message_type:
                return record

    async def wait_closed(self, *, timeout: float = 10.0) -> int | None:
        """Read until the socket ends; returns the close code."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code
            if message.type is aiohttp.WSMsgType.ERROR:
                return self.ws.close_code


class RawLongPollingClient:
    """One Long-Polling connection driven by hand: every poll and post is the test's own request."""

    def __init__(self, session: aiohttp.ClientSession, hub_url: str, token: str, negotiated: dict[str, Any]):
        self.session = session
        self.url = hub_url
        self.negotiated = negotiated
        self.params = {"id": negotiated["connectionToken"]}
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, hub_url: str, token: str, *, join: str | None = "north-america"
    ) -> RawLongPollingClient:
        """Negotiate, start (the first poll), hand-shake, and join ``join``'s dispatch group."""
        client = cls(session, hub_url, token, await negotiate(session, hub_url, token))
        assert await client.poll() == (200, b"")
        records = b'{"protocol":"json","version":1}\x1e'
        if join is not None:
            invocation = {"type": 1, "target": "JoinDispatchGroup", "arguments": [join], "invocationId": "0"}
            records += json.dumps(invocation).encode() + RS
        assert await client.post(records) == 200
        expected = [{}] if join is None else [{}, {"type": 3, "invocationId": "0"}]
        received: list[dict[str, Any]] = []
        while len(received) < len(expected):
            status, body = await client.poll()
            assert status == 200, status
            received += parse_records(body)
        assert received[: len(expected)] == expected  # events of the group may follow at once
        return client

    async def poll(self) -> tuple[int, bytes]:
        async with self.session.get(self.url, params=self.params, headers=self.headers) as response:
            return response.status, await response.read()

    async def post(self, body: bytes) -> int:
        async with self.session.post(
            self.url, params=self.params, headers=self.headers, data=body
        ) as response:
            return response.status


def parse_records(body: bytes) -> list[dict[str, Any]]:
    """The JSON records of one body (every body holds only complete records)."""
    assert not body or body.endswith(RS), body
    return [json.loads(part) for part in body.split(RS)[:-1]]
