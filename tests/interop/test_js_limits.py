"""The abuse limits as the official @microsoft/signalr client (Node) meets them (issue 11, D28).

What a developer sees in the client: the error text the server sent, and whether the client comes
back on its own.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.support.jsclient import JsClientError, NodeDriver
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


async def test_a_user_at_the_connection_cap_gets_the_429_text_from_start(
    js: NodeDriver, token_factory: TokenFactory
) -> None:
    settings = hub_settings(token_factory, hub_max_connections_per_user=1)
    token = token_factory.dispatcher()
    async with running_service(settings) as service:
        await js.connect(service.hub_url, token)
        with pytest.raises(JsClientError) as refused:
            await js.connect(service.hub_url, token)
        # What the app's catch around start() gets (the JS client does not read Retry-After).
        assert str(refused.value) == (
            "Failed to complete negotiation with the server: Error: This user already has the most "
            "connections allowed (1); close one before opening another.: Status code '429'"
        )


async def test_a_reconnect_storm_is_refused_and_the_clients_own_retry_policy_spaces_the_attempts(
    js: NodeDriver, token_factory: TokenFactory
) -> None:
    # Two new connections a minute: the start, then one reconnect; the second reconnect attempt is
    # refused (429) and the client goes on with its next delay until its policy gives up.
    settings = hub_settings(token_factory, hub_max_negotiates_per_user_per_minute=2)
    token = token_factory.dispatcher()
    before = REGISTRY.get_sample_value("realtime_hub_rate_limited_total", {"limit": "negotiates_per_user"})
    async with running_service(settings) as service:
        client = await js.connect(service.hub_url, token, automaticReconnect=[0, 0])
        for connection in list(service.runtime.manager):  # the server drops it: the client reconnects
            connection.abort("test")
        assert (await client.next_event())["event"] == "reconnecting"
        assert (await client.next_event())["event"] == "reconnected"
        for connection in list(service.runtime.manager):
            connection.abort("test")
        assert (await client.next_event())["event"] == "reconnecting"
        closed = await client.next_event()
        assert closed == {"event": "close", "name": client.name, "error": None}  # retries exhausted
        after = REGISTRY.get_sample_value("realtime_hub_rate_limited_total", {"limit": "negotiates_per_user"})
        assert after == (before or 0.0) + 2  # both attempts of the policy's second round were refused
