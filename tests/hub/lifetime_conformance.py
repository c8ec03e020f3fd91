"""The suite every ``HubLifetimeManager`` implementation must pass (ASP.NET's
``HubLifetimeManagerTestBase``): subclass ``LifetimeManagerConformance`` and implement ``make``.

Connections here are the smallest ``Recipient``s: a real hub protocol (wrapped to count
serializations) and a list of what they were handed.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from service.connections import Outgoing
from service.hub import HubLifetimeManager
from service.protocol import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubMessage, HubProtocol


class CountingProtocol:
    """A hub protocol that counts how often it serialized."""

    def __init__(self, inner: HubProtocol) -> None:
        self.inner = inner
        self.name = inner.name
        self.writes = 0

    def write(self, message: HubMessage) -> bytes:
        self.writes += 1
        return self.inner.write(message)


class FakeConnection:
    def __init__(
        self, connection_id: str, protocol: Any, *, accept: bool = True, positions: bool = False
    ) -> None:
        self.connection_id = connection_id
        self.protocol = protocol
        self.positions = positions
        self.accept = accept
        self.received: list[Outgoing] = []
        self.bursts: list[int] = []
        self.aborted: str | None = None
        self.slow_cause: str | None = None

    def send_outgoing(self, out: Outgoing) -> bool:
        if not self.accept:
            return False
        self.received.append(out)
        return True

    def send_burst(self, outs: list[Outgoing]) -> bool:
        self.bursts.append(len(outs))
        return all(self.send_outgoing(out) for out in outs)

    def abort(self, reason: str) -> None:
        self.aborted = reason

    def drop_slow(self, cause: str) -> None:
        self.aborted = "slow_client"
        self.slow_cause = cause

    def invocations(self) -> list[tuple[str, list[Any]]]:
        result = []
        for out in self.received:
            if self.protocol.name == "json":
                record = json.loads(out.payload[:-1])
                result.append((record["target"], record["arguments"]))
            else:
                record = msgpack.unpackb(out.payload[1:])
                result.append((record[3], record[4]))
        return result


class LifetimeManagerConformance:
    """Behaviour every lifetime manager keeps; see ``service.hub.lifetime`` for the rules."""

    def make(self) -> HubLifetimeManager:
        raise NotImplementedError

    def setup_method(self) -> None:
        self.json = CountingProtocol(JSON_PROTOCOL)
        self.msgpack = CountingProtocol(MESSAGEPACK_PROTOCOL)
        self.manager = self.make()
        self._count = 0

    def connect(
        self,
        *,
        protocol: Any = None,
        accept: bool = True,
        groups: tuple[str, ...] = (),
        positions: bool = False,
    ) -> FakeConnection:
        self._count += 1
        connection = FakeConnection(
            f"c{self._count}", protocol or self.json, accept=accept, positions=positions
        )
        self.manager.on_connected(connection)
        for group in groups:
            self.manager.add_to_group(connection.connection_id, group)
        return connection

    # --- audiences ----------------------------------------------------------------------------

    def test_send_all_reaches_every_connection(self) -> None:
        a, b = self.connect(), self.connect(protocol=self.msgpack)
        assert self.manager.send_all("Hello", "world", 1) == 2
        assert a.invocations() == [("Hello", ["world", 1])]
        assert b.invocations() == [("Hello", ["world", 1])]

    def test_send_connection_reaches_that_connection_only(self) -> None:
        a, b = self.connect(), self.connect()
        assert self.manager.send_connection(a.connection_id, "Only", 1) == 1
        assert self.manager.send_connection("nobody", "Only", 2) == 0
        assert a.invocations() == [("Only", [1])]
        assert b.received == []

    def test_send_connection_many_is_one_burst_in_order(self) -> None:
        a, b = self.connect(), self.connect(protocol=self.msgpack)
        invocations = [("E", (1, "1:00000001")), ("F", (2, "2:00000002"))]
        assert self.manager.send_connection_many(b.connection_id, invocations) == 2
        assert b.invocations() == [("E", [1, "1:00000001"]), ("F", [2, "2:00000002"])]
        assert b.bursts == [2]
        assert a.received == []
        assert self.manager.send_connection_many("nobody", invocations) == 0

    def test_a_burst_the_connection_cannot_take_aborts_it(self) -> None:
        slow = self.connect(accept=False)
        assert self.manager.send_connection_many(slow.connection_id, [("E", (1,))]) == 0
        assert slow.aborted == "slow_client"

    def test_send_group_reaches_members_only(self) -> None:
        member, outsider = self.connect(groups=("dispatch/a",)), self.connect(groups=("dispatch/b",))
        assert self.manager.send_group("dispatch/a", "E", {"n": 1}) == 1
        assert member.invocations() == [("E", [{"n": 1}])]
        assert outsider.received == []
        assert self.manager.send_group("dispatch/empty", "E", 1) == 0

    def test_send_groups_reaches_each_connection_once(self) -> None:
        both = self.connect(groups=("dispatch/a", "contractor/x"))
        one = self.connect(groups=("dispatch/a",))
        other = self.connect(groups=("contractor/x",))
        outsider = self.connect(groups=("dispatch/z",))
        assert self.manager.send_groups(["dispatch/a", "contractor/x"], "JobAssigned", {}) == 3
        assert [len(c.received) for c in (both, one, other, outsider)] == [1, 1, 1, 0]

    def test_a_send_serializes_once_per_protocol_and_shares_the_bytes(self) -> None:
        members = [self.connect(groups=("g",)) for _ in range(3)]
        members += [self.connect(protocol=self.msgpack, groups=("g",)) for _ in range(2)]
        assert self.manager.send_group("g", "E", {"x": 1}) == 5
        assert (self.json.writes, self.msgpack.writes) == (1, 1)
        assert len({id(m.received[0]) for m in members[:3]}) == 1
        assert len({id(m.received[0]) for m in members[3:]}) == 1
        assert members[0].received[0] is not members[3].received[0]

    def test_broadcast_invocations_carry_no_invocation_id(self) -> None:
        connection = self.connect(groups=("g",))
        self.manager.send_group("g", "E", 1)
        assert json.loads(connection.received[0].payload[:-1]) == {"type": 1, "target": "E", "arguments": [1]}

    def test_a_connection_still_in_its_handshake_receives_nothing(self) -> None:
        waiting = FakeConnection("w", None)
        self.manager.on_connected(waiting)
        self.manager.add_to_group("w", "g")
        assert self.manager.send_all("E") == 0
        assert self.manager.send_group("g", "E") == 0

    # --- positions ----------------------------------------------------------------------------

    def test_a_position_goes_only_to_connections_that_asked_for_positions(self) -> None:
        plain = self.connect(groups=("g",))
        plain_msgpack = self.connect(protocol=self.msgpack, groups=("g",))
        tracking = self.connect(groups=("g",), positions=True)
        tracking_msgpack = self.connect(protocol=self.msgpack, groups=("g",), positions=True)
        assert self.manager.send_groups(["g"], "E", {"n": 1}, position="7:0000abcd") == 4
        assert plain.invocations() == plain_msgpack.invocations() == [("E", [{"n": 1}])]
        assert tracking.invocations() == tracking_msgpack.invocations() == [("E", [{"n": 1}, "7:0000abcd"])]
        # Byte-identical to a send without a position, for those that did not ask.
        self.manager.send_groups(["g"], "E", {"n": 1})
        assert plain.received[0].payload == plain.received[1].payload
        assert plain_msgpack.received[0].payload == plain_msgpack.received[1].payload
        assert (self.json.writes, self.msgpack.writes) == (3, 3)  # once per protocol and variant

    def test_send_positioned_reaches_only_joined_connections_that_asked_for_positions(self) -> None:
        plain = self.connect(groups=("g",))
        tracking = self.connect(positions=True, groups=("g",))
        not_joined_yet = self.connect(positions=True)  # between connecting and its Resume
        assert self.manager.send_positioned("Checkpoint", "9:00000001") == 1
        assert plain.received == []
        assert not_joined_yet.received == []
        assert tracking.invocations() == [("Checkpoint", ["9:00000001"])]

    def test_send_positioned_forgets_a_connection_that_left(self) -> None:
        gone = self.connect(positions=True, groups=("g",))
        staying = self.connect(positions=True, groups=("g",))
        self.manager.on_disconnected(gone)
        assert self.manager.send_positioned("Checkpoint", "9:00000002") == 1
        assert gone.received == []
        assert staying.invocations() == [("Checkpoint", ["9:00000002"])]

    # --- membership ---------------------------------------------------------------------------

    def test_adding_twice_is_a_no_op(self) -> None:
        connection = self.connect(groups=("g", "g"))
        assert self.manager.groups_of(connection.connection_id) == {"g"}
        assert self.manager.send_group("g", "E") == 1
        assert len(connection.received) == 1

    def test_removing_a_non_member_or_unknown_connection_is_a_no_op(self) -> None:
        connection = self.connect(groups=("g",))
        self.manager.remove_from_group(connection.connection_id, "other")
        self.manager.remove_from_group("nobody", "g")
        assert self.manager.groups_of(connection.connection_id) == {"g"}

    def test_adding_an_unknown_connection_is_a_no_op(self) -> None:
        self.manager.add_to_group("nobody", "g")
        assert self.manager.groups_of("nobody") == frozenset()
        assert self.manager.send_group("g", "E") == 0

    def test_leaving_stops_delivery(self) -> None:
        connection = self.connect(groups=("g", "h"))
        self.manager.remove_from_group(connection.connection_id, "g")
        assert self.manager.groups_of(connection.connection_id) == {"h"}
        assert self.manager.send_group("g", "E") == 0
        assert self.manager.send_group("h", "E") == 1

    def test_disconnect_leaves_every_group(self) -> None:
        gone = self.connect(groups=("g", "h"))
        stays = self.connect(groups=("g",))
        self.manager.on_disconnected(gone)
        assert self.manager.groups_of(gone.connection_id) == frozenset()
        assert self.manager.send_groups(["g", "h"], "E") == 1
        assert gone.received == []
        assert len(stays.received) == 1
        self.manager.add_to_group(gone.connection_id, "g")  # a closed connection cannot rejoin
        assert self.manager.send_group("g", "E") == 1

    def test_group_names_are_case_sensitive(self) -> None:
        self.connect(groups=("dispatch/A",))
        assert self.manager.send_group("dispatch/a", "E") == 0
        assert self.manager.send_group("dispatch/A", "E") == 1

    def test_an_empty_group_name_is_refused(self) -> None:
        connection = self.connect()
        with pytest.raises(ValueError, match="empty"):
            self.manager.add_to_group(connection.connection_id, "")
        with pytest.raises(ValueError, match="empty"):
            self.manager.send_group("", "E")
        with pytest.raises(ValueError, match="empty"):
            self.manager.send_groups(["g", ""], "E")

    # --- slow members -------------------------------------------------------------------------

    def test_a_member_that_cannot_keep_up_is_aborted_and_the_others_are_served(self) -> None:
        slow = self.connect(accept=False, groups=("g",))
        fast = [self.connect(groups=("g",)) for _ in range(3)]
        assert self.manager.send_group("g", "E", 1) == 3
        assert slow.aborted == "slow_client"
        assert all(len(member.received) == 1 for member in fast)
