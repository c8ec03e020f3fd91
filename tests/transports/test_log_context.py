"""Logs emitted while a transport request handles a connection name that connection (bound once)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import WSMsgType, hdrs, web
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory

RS = "\x1e"


@pytest.fixture
async def hub(token_factory: TokenFactory) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = TestClient(TestServer(create_app(hub_settings(token_factory), consumer_factory=False)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == name
    ]


async def _negotiate(hub: TestClient[web.Request, web.Application], token: str) -> dict[str, Any]:
    headers = {hdrs.AUTHORIZATION: f"Bearer {token}"}
    async with hub.post("/hub/recommendations/negotiate?negotiateVersion=1", headers=headers) as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_websocket_and_post_requests_bind_their_connection_id(
    hub: TestClient[web.Request, web.Application],
    token_factory: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    token = token_factory.dispatcher(regions=("north-america",))
    auth = {hdrs.AUTHORIZATION: f"Bearer {token}"}

    # WebSockets: the handshake and a refused invocation are logged inside the socket's request.
    first = await _negotiate(hub, token)
    ws = await hub.ws_connect("/hub/recommendations", params={"id": first["connectionToken"]}, headers=auth)
    await ws.send_str(json.dumps({"protocol": "json", "version": 1}) + RS)
    assert (await ws.receive()).data == "{}" + RS
    join = {"type": 1, "target": "JoinDispatchGroup", "arguments": ["europe"], "invocationId": "1"}
    await ws.send_str(json.dumps(join) + RS)
    reply = await ws.receive()
    assert reply.type is WSMsgType.TEXT
    assert "Not authorized" in json.loads(reply.data.rstrip(RS))["error"]

    # Long polling: what arrives by POST is handled inside the POST request.
    second = await _negotiate(hub, token)
    params = {"id": second["connectionToken"]}
    async with hub.get("/hub/recommendations", params=params, headers=auth) as poll:
        assert poll.status == 200
    handshake = json.dumps({"protocol": "json", "version": 1}) + RS
    async with hub.post("/hub/recommendations", params=params, headers=auth, data=handshake) as sent:
        assert sent.status == 200
    async with hub.delete("/hub/recommendations", params=params, headers=auth) as deleted:
        assert deleted.status == 202
    await ws.close()

    connected = _events(caplog, "connection.connected")
    assert [event["connectionId"] for event in connected] == [first["connectionId"], second["connectionId"]]
    (refused,) = _events(caplog, "hub.invocation_refused")
    assert refused["connectionId"] == first["connectionId"]
    (deleted_event,) = _events(caplog, "connection.delete")
    assert deleted_event["connectionId"] == second["connectionId"]
    # Bound for the request only: nothing leaks into this (the test's) context.
    assert structlog.contextvars.get_contextvars() == {}
