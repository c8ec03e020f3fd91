"""The recommendations hub's methods: every join is decided by the group policy from the token."""

from __future__ import annotations

import uuid

from .harness import HubHarness, make_principal


async def test_dispatch_joins_go_through_the_policy() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect(
        principal=make_principal(roles=("Dispatcher",), regions=("north-america",))
    )
    await hub.invoke(connection, "JoinDispatchGroup", "North-America", invocation_id="ok")
    await hub.invoke(connection, "JoinDispatchGroup", "europe", invocation_id="no")
    records = sink.json_records()
    assert records[1] == {"type": 3, "invocationId": "ok"}
    assert records[2]["invocationId"] == "no"
    assert str(records[2]["error"]).startswith(
        "An unexpected error occurred invoking 'JoinDispatchGroup' on the server. "
        "HubException: Not authorized"
    )
    assert hub.lifetime.groups_of(connection.connection_id) == {"dispatch/north-america"}
    await hub.invoke(connection, "LeaveDispatchGroup", "NORTH-AMERICA", invocation_id="leave")
    assert hub.lifetime.groups_of(connection.connection_id) == frozenset()


async def test_a_contractor_joins_only_its_own_group() -> None:
    own, other = str(uuid.uuid4()), str(uuid.uuid4())
    hub = HubHarness()
    connection, sink = await hub.connect(principal=make_principal(roles=("Contractor",), contractor_id=own))
    await hub.invoke(connection, "JoinContractorGroup", own.upper(), invocation_id="own")
    await hub.invoke(connection, "JoinContractorGroup", other, invocation_id="other")
    records = sink.json_records()
    assert records[1] == {"type": 3, "invocationId": "own"}
    assert "Not authorized" in str(records[2]["error"])
    assert hub.lifetime.groups_of(connection.connection_id) == {f"contractor/{own}"}


async def test_a_malformed_group_key_fails_the_invocation_and_keeps_the_connection() -> None:
    hub = HubHarness()
    connection, sink = await hub.connect()
    await hub.invoke(connection, "JoinDispatchGroup", "no/slashes", invocation_id="bad")
    assert "Invalid region" in str(sink.json_records()[1]["error"])
    assert connection.close_reason is None
