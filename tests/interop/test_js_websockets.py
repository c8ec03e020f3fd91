"""The official @microsoft/signalr client (Node) over WebSockets + JSON against the running service.

"Received nothing" is proven without sleeping: after the send that must not arrive, a marker is sent
to a group the client *is* in; per-connection order means the marker arrives after anything earlier.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.jsclient import JsClientError, NodeDriver
from tests.support.server import RunningService
from tests.support.tokens import TokenFactory

pytestmark = pytest.mark.node

EVENT = {
    "type": "RecommendationReady",
    "jobId": "6f1d7a64-4a8c-4d52-9a51-0f3c2a1b9e77",
    "requestId": "0b0c9d3e-57a1-4c65-8f0e-5d8f6f2b7c11",
    "region": "north-america",
    "configVersion": 3,
    "generatedAt": "2026-11-26T10:00:00.123+01:00",
    "note": "ünïcødé ✓",
}
LISTEN = ("RecommendationReady", "JobAssigned", "Marker")


async def test_dispatcher_joins_receives_leaves_and_stops(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory
) -> None:
    lifetime = service.runtime.lifetime
    client = await js.connect(service.hub_url, token_factory.dispatcher(["north-america"]), listen=LISTEN)
    assert client.connection_id

    assert await client.invoke("JoinDispatchGroup", "north-america") is None
    assert lifetime.group_size("dispatch/north-america") == 1

    assert lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", EVENT) == 1
    message = await client.next_message("RecommendationReady")
    assert message["args"] == [EVENT]

    assert await client.invoke("LeaveDispatchGroup", "north-america") is None
    assert lifetime.group_size("dispatch/north-america") == 0
    assert lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", EVENT) == 0
    lifetime.send_connection(client.connection_id, "Marker", 1)
    assert (await client.next_message())["target"] == "Marker"

    await client.stop()
    closed = await client.next_event("close")
    assert closed["error"] is None
    assert len(service.runtime.handler) == 0


async def test_group_send_reaches_only_members_and_each_once(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory
) -> None:
    contractor_id = str(uuid.uuid4())
    lifetime = service.runtime.lifetime
    north = await js.connect(service.hub_url, token_factory.dispatcher(["north-america"]), listen=LISTEN)
    south = await js.connect(service.hub_url, token_factory.dispatcher(["south-america"]), listen=LISTEN)
    admin = await js.connect(service.hub_url, token_factory.admin(), listen=LISTEN)
    await north.invoke("JoinDispatchGroup", "north-america")
    await south.invoke("JoinDispatchGroup", "south-america")
    await admin.invoke("JoinDispatchGroup", "north-america")
    await admin.invoke("JoinContractorGroup", contractor_id.upper())  # canonicalised to lower case

    groups = ["dispatch/north-america", f"contractor/{contractor_id}"]
    assert lifetime.send_groups(groups, "JobAssigned", {"n": 1}) == 2  # admin is in both: once
    assert (await north.next_message())["args"] == [{"n": 1}]
    assert (await admin.next_message())["args"] == [{"n": 1}]

    for client in (north, south, admin):
        assert client.connection_id is not None
        lifetime.send_connection(client.connection_id, "Marker", 2)
    assert (await admin.next_message())["target"] == "Marker"  # not a second JobAssigned
    assert (await south.next_message())["target"] == "Marker"  # south got nothing
    assert (await north.next_message())["target"] == "Marker"


async def test_refused_joins_change_nothing_and_keep_the_connection(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory
) -> None:
    lifetime = service.runtime.lifetime
    own_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    dispatcher = await js.connect(service.hub_url, token_factory.dispatcher(["north-america"]), listen=LISTEN)
    contractor = await js.connect(service.hub_url, token_factory.contractor(own_id), listen=LISTEN)

    refusals = [
        (dispatcher, "JoinDispatchGroup", "south-america", "region is not in your"),
        (dispatcher, "JoinContractorGroup", own_id, "Not authorized"),
        (contractor, "JoinContractorGroup", other_id, "Not authorized"),
        (contractor, "JoinDispatchGroup", "north-america", "Not authorized"),
        (dispatcher, "JoinDispatchGroup", "North America!", "region"),
        (contractor, "JoinContractorGroup", "not-a-uuid", "UUID"),
    ]
    for client, method, argument, expected in refusals:
        with pytest.raises(JsClientError) as refused:
            await client.invoke(method, argument)
        text = str(refused.value)
        assert text.startswith(
            f"An unexpected error occurred invoking '{method}' on the server. HubException: "
        )
        assert expected in text, text
    assert lifetime.group_count == 0

    # Still connected and still allowed what the token does grant.
    await dispatcher.invoke("JoinDispatchGroup", "north-america")
    await contractor.invoke("JoinContractorGroup", own_id)
    assert lifetime.group_size("dispatch/north-america") == 1
    assert lifetime.group_size(f"contractor/{own_id}") == 1
    assert (await dispatcher.state())["state"] == "Connected"


async def test_bad_invocations_complete_with_errors_and_connection_lives(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory
) -> None:
    client = await js.connect(service.hub_url, token_factory.dispatcher(["north-america"]), listen=LISTEN)
    with pytest.raises(JsClientError, match=r"^Failed to invoke 'NoSuchMethod' .*Method does not exist\.$"):
        await client.invoke("NoSuchMethod")
    with pytest.raises(JsClientError, match=r"Invocation provides 2 argument\(s\) but target expects 1\."):
        await client.invoke("JoinDispatchGroup", "north-america", "extra")
    with pytest.raises(JsClientError, match=r"Invocation provides 0 argument\(s\) but target expects 1\."):
        await client.invoke("JoinDispatchGroup")
    with pytest.raises(JsClientError, match=r"Error binding arguments"):
        await client.invoke("JoinDispatchGroup", {"region": "north-america"})
    # Non-blocking invocations get no reply, not even an error (HubProtocol.md).
    await client.send("NoSuchMethod", 1)
    # Method names match case-insensitively, as on ASP.NET.
    assert await client.invoke("joindispatchgroup", "north-america") is None
    assert service.runtime.lifetime.group_size("dispatch/north-america") == 1
    assert not [e for e in client.received() if e["event"] != "message"]


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda f: None, id="missing"),
        pytest.param(lambda f: f.expired(), id="expired"),
        pytest.param(lambda f: f.signed_by_unknown_key(), id="wrongly-signed"),
        pytest.param(lambda f: f.wrong_issuer(), id="wrong-issuer"),
        pytest.param(lambda f: f.hs256_with_public_key(), id="hs256"),
        pytest.param(lambda f: f.alg_none(), id="alg-none"),
        pytest.param(lambda f: f.wrong_audience(), id="other-app-client"),
        pytest.param(lambda f: "not.a.jwt", id="garbage"),
    ],
)
async def test_bad_tokens_are_refused_with_401(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory, make_token: object
) -> None:
    token = make_token(token_factory)  # type: ignore[operator]
    with pytest.raises(JsClientError) as refused:
        await js.connect(service.hub_url, token)
    # The exact text .NET's functional tests expect: the 401 has an empty body.
    assert (
        str(refused.value)
        == "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'"
    )
    assert len(service.runtime.manager) == 0


async def test_skip_negotiation_websocket(
    service: RunningService, js: NodeDriver, token_factory: TokenFactory
) -> None:
    client = await js.connect(
        service.hub_url, token_factory.dispatcher(["north-america"]), skipNegotiation=True, listen=LISTEN
    )
    assert client.connection_id is None  # the JS client cannot know it without negotiate
    await client.invoke("JoinDispatchGroup", "north-america")
    service.runtime.lifetime.send_groups(["dispatch/north-america"], "RecommendationReady", EVENT)
    assert (await client.next_message("RecommendationReady"))["args"] == [EVENT]
