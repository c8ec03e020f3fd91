"""Positions, checkpoints and ``Resume`` through the hub core (no sockets, no broker).

The journal is fed log records directly, as the consumer would; clients are recording sinks.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgpack

from schemas.log import LogRecord
from service.connections import HttpConnection

from .harness import MSGPACK_HANDSHAKE, HubHarness, RecordingSink, make_principal

NA, EU = "dispatch/north-america", "dispatch/europe"


def _record(offset: int, *groups: str, target: str | None = "RecommendationReady") -> LogRecord:
    return LogRecord(
        offset=offset,
        check=f"{offset:08x}",
        target=target,
        groups=groups if target else (),
        payload={"n": offset} if target else None,
    )


def _feed(hub: HubHarness, *records: LogRecord) -> None:
    for record in records:
        hub.journal.record(record)
        hub.journal.deliver(record)


def _pos(offset: int) -> str:
    return f"{offset}:{offset:08x}"


def _invocations(sink: RecordingSink) -> list[tuple[str, list[Any]]]:
    return [(r["target"], r["arguments"]) for r in sink.json_records() if r.get("type") == 1]


async def _resume(
    hub: HubHarness, connection: HttpConnection, sink: RecordingSink, groups: list[str], position: str | None
) -> dict[str, Any]:
    await hub.invoke(connection, "Resume", groups, position, invocation_id="resume")
    (completion,) = [r for r in sink.json_records() if r.get("invocationId") == "resume"]
    assert "error" not in completion, completion
    result: dict[str, Any] = completion["result"]
    return result


async def _tracking(hub: HubHarness, **principal: Any) -> tuple[HttpConnection, RecordingSink]:
    return await hub.connect(positions=True, principal=make_principal(**principal) if principal else None)


# --- positions on events --------------------------------------------------------------------------


async def test_events_carry_their_position_only_for_connections_that_asked() -> None:
    hub = HubHarness()
    plain, plain_sink = await hub.connect()
    tracking, tracking_sink = await _tracking(hub)
    for connection in (plain, tracking):
        await hub.invoke(connection, "JoinDispatchGroup", "north-america")
    _feed(hub, _record(5, NA))
    assert _invocations(plain_sink) == [("RecommendationReady", [{"n": 5}])]
    assert _invocations(tracking_sink) == [("RecommendationReady", [{"n": 5}, _pos(5)])]


async def test_checkpoints_go_to_tracking_connections_when_the_log_moved() -> None:
    hub = HubHarness()
    plain, plain_sink = await hub.connect()
    tracking, tracking_sink = await _tracking(hub)
    _, not_resumed_sink = await _tracking(hub)  # connected, Resume not called yet: no checkpoint
    for connection in (plain, tracking):
        await hub.invoke(connection, "JoinDispatchGroup", "europe")
    assert hub.journal.checkpoint() == 0  # nothing read yet
    _feed(hub, _record(1, EU), _record(2, target=None))
    assert hub.journal.checkpoint() == 1
    assert hub.journal.checkpoint() == 0  # the log has not moved since
    assert hub.journal.checkpoint(force=True) == 1  # at shutdown: say it again anyway
    assert _invocations(tracking_sink) == [
        ("RecommendationReady", [{"n": 1}, _pos(1)]),
        ("Checkpoint", [_pos(2)]),
        ("Checkpoint", [_pos(2)]),
    ]
    assert _invocations(plain_sink) == [("RecommendationReady", [{"n": 1}])]
    assert _invocations(not_resumed_sink) == []


# --- resume -----------------------------------------------------------------------------------------


async def test_resume_replays_the_groups_events_in_log_order_then_continues_live() -> None:
    hub = HubHarness()
    contractor = str(uuid.uuid4())
    cg = f"contractor/{contractor}"
    _feed(hub, _record(1, NA), _record(2, EU), _record(4, cg), _record(6, NA, cg), _record(7, target=None))
    connection, sink = await _tracking(hub)  # an admin: may join any group
    result = await _resume(
        hub, connection, sink, [NA, cg.upper().replace("CONTRACTOR", "contractor")], _pos(1)
    )
    assert result == {"recovered": True, "position": _pos(7), "replayed": 2, "reason": None}
    _feed(hub, _record(8, cg), _record(9, EU))
    assert _invocations(sink) == [
        ("RecommendationReady", [{"n": 4}, _pos(4)]),
        ("RecommendationReady", [{"n": 6}, _pos(6)]),  # in both groups: once
        ("RecommendationReady", [{"n": 8}, _pos(8)]),
    ]
    assert hub.lifetime.groups_of(connection.connection_id) == {NA, cg}


async def test_resume_without_a_position_joins_and_says_so() -> None:
    hub = HubHarness()
    _feed(hub, _record(3, NA))
    connection, sink = await _tracking(hub)
    assert await _resume(hub, connection, sink, [NA], None) == {
        "recovered": False,
        "position": _pos(3),
        "replayed": 0,
        "reason": "fresh",
    }
    assert hub.lifetime.groups_of(connection.connection_id) == {NA}


async def test_beyond_the_window_the_cap_or_the_epoch_nothing_is_replayed() -> None:
    hub = HubHarness(replay_cap=2)
    _feed(hub, *(_record(offset, NA) for offset in range(10, 20)))
    cases = {
        "window": _pos(3),  # older than what is kept
        "cap": _pos(10),  # nine events to replay, the cap is two
        "epoch": "15:deadbeef",  # offset 15 holds another entry: a recreated stream
    }
    for reason, position in cases.items():
        connection, sink = await _tracking(hub)
        result = await _resume(hub, connection, sink, [NA], position)
        assert result == {"recovered": False, "position": _pos(19), "replayed": 0, "reason": reason}
        assert _invocations(sink) == []
        assert hub.lifetime.groups_of(connection.connection_id) == {NA}  # joined all the same


async def test_resume_waits_for_this_instance_to_reach_the_callers_position() -> None:
    hub = HubHarness(resume_wait_seconds=5)
    _feed(hub, _record(1, NA))
    connection, sink = await _tracking(hub)
    pending = asyncio.create_task(_resume(hub, connection, sink, [NA], _pos(3)))
    await asyncio.sleep(0)
    assert not pending.done()
    _feed(hub, _record(2, NA), _record(3, NA))  # this instance reads on; the caller saw up to 3
    assert await asyncio.wait_for(pending, 1) == {
        "recovered": True,
        "position": _pos(3),
        "replayed": 0,
        "reason": None,
    }


async def test_the_client_timeout_does_not_run_while_its_resume_waits() -> None:
    """The connection reads nothing while a method runs, so its Pings wait too: ASP.NET stops the
    client timeout around each dispatch (HubConnectionHandler), so must we, or a Resume waiting
    longer than the timeout closes the very connection it is resuming."""
    hub = HubHarness(resume_wait_seconds=5, client_timeout=10.0, keep_alive=100.0)
    _feed(hub, _record(1, NA))
    connection, sink = await _tracking(hub)
    await hub.send_json(connection, {"type": 6})  # arms the client timeout
    pending = asyncio.create_task(_resume(hub, connection, sink, [NA], _pos(3)))
    await asyncio.sleep(0)
    hub.tick(11)
    assert connection.close_reason is None
    _feed(hub, _record(2, NA), _record(3, NA))
    assert (await asyncio.wait_for(pending, 1))["recovered"]
    hub.tick(9)  # counted again from the end of the call
    assert connection.close_reason is None
    hub.tick(2)
    assert connection.close_reason == "client_timeout"


async def test_the_client_timeout_stays_stopped_while_any_of_its_calls_runs() -> None:
    """Two calls of one connection can run at once (early input and a POST; an old socket's last
    call and the new socket's): the first to end restarted the timeout under the other."""
    hub = HubHarness(resume_wait_seconds=5, client_timeout=10.0, keep_alive=100.0)
    _feed(hub, _record(1, NA))
    connection, _ = await _tracking(hub)
    await hub.send_json(connection, {"type": 6})
    first = asyncio.create_task(hub.invoke(connection, "Resume", [NA], _pos(2), invocation_id="first"))
    second = asyncio.create_task(hub.invoke(connection, "Resume", [NA], _pos(3), invocation_id="second"))
    await asyncio.sleep(0)
    _feed(hub, _record(2, NA))  # the first call returns, the second still waits
    await asyncio.wait_for(first, 1)
    hub.tick(11)
    assert connection.close_reason is None
    _feed(hub, _record(3, NA))
    await asyncio.wait_for(second, 1)


class _SlowLoader:
    """A history load that finishes after ``seconds``, short of the position a client will ask for."""

    def __init__(self, seconds: float) -> None:
        self.done = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, self.done.set)

    @property
    def is_caught_up(self) -> bool:
        return self.done.is_set()

    async def wait_caught_up(self) -> None:
        await self.done.wait()


async def test_a_resume_waits_at_most_resume_wait_seconds_in_all() -> None:
    """The wait for the history to load and the wait for the position were each bounded by
    RESUME_WAIT_SECONDS, one after the other: up to twice the documented bound."""
    hub = HubHarness(resume_wait_seconds=1.0)
    hub.journal.loader = _SlowLoader(0.9)
    _feed(hub, _record(1, NA))
    connection, sink = await _tracking(hub)
    loop = asyncio.get_running_loop()
    began = loop.time()
    result = await _resume(hub, connection, sink, [NA], _pos(50))  # never reached
    assert result["reason"] == "ahead"
    assert loop.time() - began < 1.5  # 1.9 s when each wait had the whole bound


async def test_a_position_this_instance_never_reaches_is_answered_when_the_wait_ends() -> None:
    hub = HubHarness(resume_wait_seconds=0.05)
    _feed(hub, _record(1, NA))
    connection, sink = await _tracking(hub)
    result = await _resume(hub, connection, sink, [NA], _pos(50))
    assert (result["recovered"], result["reason"], result["position"]) == (False, "ahead", _pos(1))


async def test_resume_is_authorized_like_the_joins_and_joins_nothing_when_refused() -> None:
    own, other = str(uuid.uuid4()), str(uuid.uuid4())
    hub = HubHarness()
    connection, sink = await _tracking(hub, roles=("Contractor",), contractor_id=own)
    for groups in ([f"contractor/{other}"], [f"contractor/{own}", NA], ["admins/all"]):
        await hub.invoke(connection, "Resume", groups, None, invocation_id="x")
        error = str(sink.json_records()[-1]["error"])
        assert "Not authorized" in error or "Invalid group" in error
        assert hub.lifetime.groups_of(connection.connection_id) == frozenset()
    assert (await _resume(hub, connection, sink, [f"contractor/{own.upper()}"], None))["reason"] == "fresh"
    assert hub.lifetime.groups_of(connection.connection_id) == {f"contractor/{own}"}


async def test_resume_needs_positions_and_must_come_first() -> None:
    hub = HubHarness()
    plain, plain_sink = await hub.connect()
    await hub.invoke(plain, "Resume", [NA], None, invocation_id="x")
    assert "?positions=true" in str(plain_sink.json_records()[-1]["error"])
    tracking, sink = await _tracking(hub)
    await hub.invoke(tracking, "JoinDispatchGroup", "europe")
    await hub.invoke(tracking, "Resume", [NA], None, invocation_id="x")
    assert "first join" in str(sink.json_records()[-1]["error"])
    fresh, fresh_sink = await _tracking(hub)
    await hub.invoke(fresh, "Resume", [], None, invocation_id="y")
    assert "1 to 64 groups" in str(fresh_sink.json_records()[-1]["error"])


async def test_a_malformed_position_fails_the_call() -> None:
    hub = HubHarness()
    connection, sink = await _tracking(hub)
    await hub.invoke(connection, "Resume", [NA], "yesterday", invocation_id="x")
    assert "Invalid position 'yesterday'" in str(sink.json_records()[-1]["error"])


async def test_resume_works_over_messagepack_too() -> None:
    hub = HubHarness()
    _feed(hub, _record(1, NA), _record(2, NA))
    connection, sink = await hub.connect(MSGPACK_HANDSHAKE, positions=True)
    invocation = msgpack.packb([1, {}, "r", "Resume", [[NA], _pos(1)], []])
    await hub.manager.receive(connection, bytes([len(invocation)]) + invocation)
    replayed, completion = sink.msgpack_records()
    assert replayed == [1, {}, None, "RecommendationReady", [{"n": 2}, _pos(2)], []]
    assert completion == [
        3,
        {},
        "r",
        3,
        {"recovered": True, "position": _pos(2), "replayed": 1, "reason": None},
    ]


# --- the log is interrupted -------------------------------------------------------------------------


async def test_a_reset_forgets_the_history_and_sends_tracking_clients_to_resume() -> None:
    hub = HubHarness()
    _feed(hub, _record(1, NA))
    plain, plain_sink = await hub.connect()
    tracking, tracking_sink = await _tracking(hub)
    hub.journal.reset("gap")
    assert hub.history.head is None
    assert tracking_sink.json_records()[-1] == {"type": 7, "allowReconnect": True}
    assert tracking.close_reason == "log_gap"
    assert plain.close_reason is None
    assert plain_sink.json_records() == [{}]


async def test_a_replay_larger_than_the_buffer_bound_gets_through_in_one_burst() -> None:
    """A client that comes back after a long gap: its replay is bigger than HUB_MAX_BUFFERED_BYTES.
    It must not be dropped as "too slow" for that (it would come back and be dropped again, forever)."""
    hub = HubHarness()
    _feed(hub, *(_record(offset, NA) for offset in range(1, 101)))
    connection, sink = await hub.connect(positions=True, sink=RecordingSink(limit=2_000))
    result = await _resume(hub, connection, sink, [NA], _pos(1))
    assert (result["recovered"], result["replayed"]) == (True, 99)
    assert len(sink.data()) > 2_000
    assert connection.close_reason is None
    assert [args[0]["n"] for _, args in _invocations(sink)] == list(range(2, 101))
