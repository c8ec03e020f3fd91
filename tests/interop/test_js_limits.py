"""The abuse limits as the official @microsoft/signalr client (Node) meets them (issue 11, D28).

What a developer sees in the client: the error text the server sent, and whether the client comes
back on its own.
"""

from __future__ import annotations

import pytest

from tests.support.jsclient import NodeDriver
from tests.support.server import hub_settings, running_service
from tests.support.tokens import TokenFactory

pytestmark = pytest.mark.node


async def test_a_client_calling_too_often_is_closed_with_the_reason_and_does_not_reconnect(
    js: NodeDriver, token_factory: TokenFactory
) -> None:
    settings = hub_settings(token_factory, hub_max_invocations_per_second=1, hub_invocation_burst=3)
    async with running_service(settings) as service:
        client = await js.connect(service.hub_url, token_factory.dispatcher(), automaticReconnect=[0, 0, 0])
        for _ in range(4):
            await client.send("LeaveDispatchGroup", "north-america")
        closed = await client.next_event()  # the first event: no "reconnecting" before it
        assert closed == {
            "event": "close",
            "name": client.name,
            "error": "Server returned an error on close: Connection closed with an error. The client sent "
            "more than 1 invocations per second (bursts of up to 3); closed.",
        }
        assert (await client.state())["state"] == "Disconnected"
        assert await service.next_closed() == client.connection_id
