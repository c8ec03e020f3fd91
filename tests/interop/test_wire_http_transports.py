"""Server-Sent Events and Long Polling at the HTTP level: statuses, headers and bodies, byte for byte."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory
from tests.support.waiting import eventually
from tests.support.wire import RS, negotiate

HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
JOIN = json.dumps(
    {"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"], "invocationId": "0"}
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def _records(body: bytes) -> list[dict[str, object]]:
    assert body.endswith(RS), body
    return [json.loads(part) for part in body.split(RS)[:-1]]


class _Poller:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str, connection_token: str) -> None:
        self.session = session
        self.url = url
        self.params = {"id": connection_token}
        self.headers = {"Authorization": f"Bearer {token}"}

    async def poll(self) -> tuple[int, bytes, aiohttp.ClientResponse]:
        async with self.session.get(self.url, params=self.params, headers=self.headers) as response:
            return response.status, await response.read(), response

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(
            self.url, params=self.params, headers=self.headers, data=body
        ) as response:
            return response.status, await response.read()

    async def delete(self) -> int:
        async with self.session.delete(self.url, params=self.params, headers=self.headers) as response:
            return response.status


async def test_long_polling_lifecycle(token_factory: TokenFactory, session: aiohttp.ClientSession) -> None:
    settings = hub_settings(token_factory, hub_long_polling_timeout=1.0)
    async with running_service(settings) as service:
        token = token_factory.dispatcher()
        negotiated = await negotiate(session, service.hub_url, token)
        poller = _Poller(session, service.hub_url, token, negotiated["connectionToken"])

        status, body, response = await poller.poll()  # the first poll starts the connection at once
        assert (status, body) == (200, b"")
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Cache-Control"] == "no-cache, no-store"
        assert response.headers["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"

        assert await poller.post(HANDSHAKE + JOIN.encode() + RS) == (200, b"")  # empty body (signalrcore)
        status, body, _ = await poller.poll()
        assert status == 200
        assert _records(body) == [{}, {"type": 3, "invocationId": "0"}]  # several records, one poll

        status, body, _ = await poller.poll()  # nothing to say: 200 empty after the poll timeout
        assert (status, body) == (200, b"")

        # A newer poll takes over: the older one completes with 204.
        older = asyncio.create_task(poller.poll())
        sink = service.runtime.manager.get(negotiated["connectionToken"]).sink  # type: ignore[union-attr]
        await eventually(lambda: sink.polling, what="the first poll to arrive")  # type: ignore[union-attr]
        newer = asyncio.create_task(poller.poll())
        assert (await older)[0] == 204
        service.runtime.lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", {"a": 1})
        status, body, _ = await newer
        assert _records(body) == [{"type": 1, "target": "RecommendationReady", "arguments": [{"a": 1}]}]

        # No pings on long polling: it has inherent keep-alive.
        assert await poller.delete() == 202
        assert (await poller.poll())[0] in (204, 404)
        assert len(service.runtime.handler) == 0
        assert service.runtime.lifetime.group_size("dispatch/north-america") == 0


async def test_long_polling_client_that_stops_polling_is_cleaned_up(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    settings = hub_settings(token_factory, hub_disconnect_timeout=1.0)
    async with running_service(settings) as service:
        token = token_factory.dispatcher()
        negotiated = await negotiate(session, service.hub_url, token)
        poller = _Poller(session, service.hub_url, token, negotiated["connectionToken"])
        await poller.poll()
        await poller.post(HANDSHAKE + JOIN.encode() + RS)
        _, body, _ = await poller.poll()
        assert len(_records(body)) == 2
        assert service.runtime.lifetime.group_size("dispatch/north-america") == 1
        assert await service.next_closed() == negotiated["connectionId"]  # the heartbeat: nobody polls
        assert service.runtime.lifetime.group_size("dispatch/north-america") == 0
        assert (await poller.poll())[0] == 404


async def _closed_between_polls(
    service: RunningService, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> _Poller:
    """A long-polling connection, past its handshake, that the server ends while no poll waits."""
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    poller = _Poller(session, service.hub_url, token, negotiated["connectionToken"])
    await poller.poll()
    await poller.post(HANDSHAKE)
    assert _records((await poller.poll())[1]) == [{}]
    service.runtime.handler.close_all(allow_reconnect=True, reason="test")
    return poller


async def test_long_polling_delivers_close_then_204(
    service: RunningService, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    # The server ends the connection while no poll is waiting: the next poll still gets the Close.
    poller = await _closed_between_polls(service, token_factory, session)
    status, body, _ = await poller.poll()
    assert (status, _records(body)) == (200, [{"type": 7, "allowReconnect": True}])
    assert (await poller.poll())[0] == 204


async def test_a_closed_connections_last_words_are_only_for_its_own_user(
    service: RunningService, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    poller = await _closed_between_polls(service, token_factory, session)
    # Between the close and the owner's next poll, the connection token alone opens nothing.
    intruder_token = token_factory.mint(subject="someone-else", roles=["Dispatcher"])
    intruder = _Poller(session, service.hub_url, intruder_token, poller.params["id"])
    assert (await intruder.poll())[0] == 403
    async with session.delete(service.hub_url, params=intruder.params, headers=intruder.headers) as response:
        assert response.status == 403
    status, body, _ = await poller.poll()
    assert (status, _records(body)) == (200, [{"type": 7, "allowReconnect": True}])
    assert (await poller.poll())[0] == 204


async def test_server_sent_events(
    service: RunningService, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    connection_token = negotiated["connectionToken"]
    params = {"id": connection_token, "access_token": token}
    async with session.get(service.hub_url, params=params, headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-cache, no-store"
        assert stream.headers["X-Accel-Buffering"] == "no"
        assert await stream.content.readline() == b":\r\n"  # flushed at once so browsers fire 'open'
        poster = _Poller(session, service.hub_url, token, connection_token)
        assert await poster.post(HANDSHAKE + JOIN.encode() + RS) == (200, b"")
        event = b""
        while not event.endswith(b"\r\n\r\n"):
            event += await stream.content.readline()
        assert event.startswith(b"data: ")
        assert _records(event.removeprefix(b"data: ").removesuffix(b"\r\n\r\n")) == [
            {},
            {"type": 3, "invocationId": "0"},
        ]

        # A second stream, a WebSocket, a MessagePack handshake or a DELETE are all refused.
        async with session.get(
            service.hub_url, params=params, headers={"Accept": "text/event-stream"}
        ) as second:
            assert second.status == 409
        with pytest.raises(aiohttp.WSServerHandshakeError) as switch:
            await session.ws_connect(service.hub_url.replace("http", "ws", 1), params=params)
        assert switch.value.status == 400
        assert await poster.delete() == 400
    # Dropping the stream ends the connection and its memberships.
    assert await service.next_closed() == negotiated["connectionId"]
    assert len(service.runtime.handler) == 0
    assert service.runtime.lifetime.group_size("dispatch/north-america") == 0


async def test_messagepack_is_refused_on_server_sent_events(
    service: RunningService, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    params = {"id": negotiated["connectionToken"], "access_token": token}
    async with session.get(service.hub_url, params=params, headers={"Accept": "text/event-stream"}) as stream:
        await stream.content.readline()
        poster = _Poller(session, service.hub_url, token, negotiated["connectionToken"])
        await poster.post(b'{"protocol":"messagepack","version":1}\x1e')
        event = b""
        while not event.endswith(b"\r\n\r\n"):
            event += await stream.content.readline()
        assert _records(event.removeprefix(b"data: ").removesuffix(b"\r\n\r\n")) == [
            {
                "error": "Cannot use the 'messagepack' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            }
        ]


async def test_handshake_posted_before_the_first_poll_is_kept(
    service: RunningService, token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    """signalrcore posts its handshake before polling; ASP.NET keeps it in the connection's pipe."""
    token = token_factory.dispatcher()
    negotiated = await negotiate(session, service.hub_url, token)
    poller = _Poller(session, service.hub_url, token, negotiated["connectionToken"])
    assert await poller.post(HANDSHAKE + JOIN.encode() + RS) == (200, b"")
    status, body, _ = await poller.poll()  # the first poll starts the connection …
    assert (status, body) == (200, b"")
    status, body, _ = await poller.poll()  # … which then answers what was posted earlier
    assert _records(body) == [{}, {"type": 3, "invocationId": "0"}]
